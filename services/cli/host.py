"""`skyline host enroll|cloud-init|container`: join the farm as a volunteer.

`enroll` makes this machine a builder in one command: it asks the registry who the owner
token belongs to and where the farm's broker and collector are (GET /api/v1/farm), makes the
host key, enrols the host with the registry's signed enrolment (the builder's own code,
services/builder/client.py), writes the builder's configuration and says how to start it.
`cloud-init` and `container` print the same for a new VM or a container.
"""

from __future__ import annotations

import argparse
import dataclasses
import os
import stat
from pathlib import Path
from typing import Any

import aiohttp
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from services.builder import client
from services.builder.host import HOST_RE, default_host_name, machine_resources
from services.common.config import BuilderConfig
from services.common.signing import load_or_create_key, public_key_b64

from . import cloudinit, common
from .common import CliError

TOKEN_ENV = "SKYLINE_OWNER_TOKEN"
TOKEN_FILE_ENV = "SKYLINE_OWNER_TOKEN_FILE"
MAX_TOKEN = 512


def _is_root() -> bool:
    return os.geteuid() == 0


def default_out() -> Path:
    return (
        Path("/etc/skyline/builder.toml")
        if _is_root()
        else Path("~/.config/skyline/builder.toml").expanduser()
    )


def default_workdir() -> Path:
    return (
        Path("/var/lib/skyline-builder")
        if _is_root()
        else Path("~/.local/share/skyline-builder").expanduser()
    )


def _read_secret(path: str, what: str) -> str:
    """A token from a file (its first line), refusing anything that cannot be a token."""
    try:
        with open(path, "rb") as f:
            data = f.read(MAX_TOKEN + 2)
    except OSError as exc:
        raise CliError(f"cannot read the {what} file {path}: {exc.strerror}") from None
    if len(data) > MAX_TOKEN + 1:
        raise CliError(f"the {what} file {path} is too long to hold a token")
    return data.decode(errors="replace").strip()


def owner_token(args: argparse.Namespace) -> str:
    """The owner token: --token-file, --token (it shows in `ps`: prefer the others),
    $SKYLINE_OWNER_TOKEN_FILE, $SKYLINE_OWNER_TOKEN."""
    if args.token_file:
        token = _read_secret(args.token_file, "owner token")
    elif args.token:
        token = args.token
    elif os.environ.get(TOKEN_FILE_ENV):
        token = _read_secret(os.environ[TOKEN_FILE_ENV], "owner token")
    else:
        token = os.environ.get(TOKEN_ENV, "")
    if not token:
        raise CliError(
            f"no owner token: pass --token-file FILE (or set ${TOKEN_ENV}); an admin of the"
            " farm gives owners their token"
        )
    if len(token) > MAX_TOKEN or not token.isprintable() or " " in token:
        raise CliError("the owner token is not a token (one word of printable characters)")
    return token


def _registry(args: argparse.Namespace) -> str:
    url = (args.registry or "").rstrip("/")
    if not url:
        try:
            url = common.registry_url(common.load(args))
        except CliError:
            raise CliError("name the registry: --registry https://registry.example.org") from None
    if not url.startswith(("http://", "https://")) or len(url) > 2048:
        raise CliError(f"--registry must be an http(s) URL, not {url!r}")
    return url


async def whoami(http: aiohttp.ClientSession, registry: str, token: str) -> str:
    reply = await common.call(
        http,
        "GET",
        f"{registry}/api/v1/owners/whoami",
        token=token,
        what="checking the owner token with the registry",
    )
    return str(reply["owner"])


async def farm(http: aiohttp.ClientSession, registry: str) -> dict[str, Any]:
    reply = await common.call(
        http, "GET", f"{registry}/api/v1/farm", what="asking the registry about the farm"
    )
    return reply if isinstance(reply, dict) else {}


def builder_toml(values: dict[str, Any]) -> str:
    """The builder's configuration file (TOML; strings and lists of strings, ints)."""

    def value(v: Any) -> str:
        if isinstance(v, list):
            return "[" + ", ".join(value(i) for i in v) + "]"
        if isinstance(v, int) and not isinstance(v, bool):
            return str(v)
        return '"' + str(v).replace("\\", "\\\\").replace('"', '\\"') + '"'

    top = {k: v for k, v in values.items() if k != "builder"}
    lines = ["# Written by `skyline host enroll`. Start with: skyline-builder --conf THIS_FILE"]
    lines += [f"{k} = {value(v)}" for k, v in top.items()]
    lines += ["", "[builder]"]
    lines += [f"{k} = {value(v)}" for k, v in values["builder"].items() if v not in ("", None)]
    return "\n".join(lines) + "\n"


def _write_private(path: Path, text: str) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(path.name + ".tmp")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, stat.S_IRUSR | stat.S_IWUSR)
    with os.fdopen(fd, "w") as f:
        f.write(text)
    os.replace(tmp, path)


@dataclasses.dataclass(frozen=True)
class Plan:
    """What `host enroll` was asked, checked before anything goes over the network."""

    registry: str
    token: str
    enrol_token: str
    out: Path
    workdir: Path
    profile: client.HostProfile
    key: Ed25519PrivateKey
    slots: int | None


def plan(args: argparse.Namespace) -> Plan:
    registry = _registry(args)
    token = owner_token(args)
    host = args.host or default_host_name()
    if not HOST_RE.fullmatch(host):
        raise CliError(f"host name {host!r}: lower-case letters, digits and dashes (at most 63)")
    if args.slots is not None and not 1 <= args.slots <= 256:
        raise CliError(f"--slots must be from 1 to 256, not {args.slots}")
    out = Path(args.out).expanduser() if args.out else default_out()
    if out.exists() and not args.force:
        raise CliError(f"{out} exists (this machine is enrolled?): --force replaces it")
    # The registry enrols a host (now and at each start of its builder) for the owner whose
    # token it is shown: the builder's enrol_token is the owner token.
    enrol_token = token
    if args.enrol_token_file:
        enrol_token = _read_secret(args.enrol_token_file, "enrol token")
    workdir = Path(args.workdir).expanduser().resolve() if args.workdir else default_workdir()
    try:
        workdir.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise CliError(f"cannot make the work directory {workdir}: {exc.strerror}") from None
    key = load_or_create_key(workdir / "host.key")
    cpus, memory_mb, disk_gb = machine_resources(workdir)
    profile = client.HostProfile(
        host=host,
        owner="",  # the token's owner, once the registry said who that is
        public_key=public_key_b64(key),
        arches=args.arch or list(BuilderConfig().arches),
        releases=args.release or list(BuilderConfig().releases),
        cpus=cpus,
        memory_mb=memory_mb,
        disk_gb=disk_gb,
    )
    return Plan(registry, token, enrol_token, out, workdir, profile, key, args.slots)


async def enroll(p: Plan, args: argparse.Namespace) -> tuple[dict[str, Any], dict[str, Any]]:
    """Ask the registry who owns the token and where the farm is, then enrol; returns the
    registry's reply and the builder's configuration."""
    async with common.session(timeout=60) as http:
        owner = await whoami(http, p.registry, p.token)
        about = await farm(http, p.registry)
        amqp_url = args.amqp_url or about.get("amqp_url") or ""
        collector_url = args.collector_url or about.get("collector_url") or ""
        if not amqp_url or not collector_url:
            raise CliError(
                "the registry does not say where the farm's broker and collector are"
                " ([registry] public_amqp_url, public_collector_url): pass --amqp-url and"
                " --collector-url"
            )
        profile = dataclasses.replace(p.profile, owner=owner)
        try:
            reply = await client.enrol(
                http,
                p.registry,
                profile,
                signing_key=p.key,
                token=p.enrol_token,
                key_file=p.workdir / "host.key",
                deadline=args.timeout,
            )
        except client.EnrolmentError as exc:
            gave_up = str(exc).startswith("cannot enrol")
            raise CliError(str(exc), common.UNREACHABLE if gave_up else common.REFUSED) from None
    config = {
        "amqp_url": amqp_url,
        "builder": {
            "host": profile.host,
            "owner": owner,
            "arches": profile.arches,
            "releases": profile.releases,
            "slots": p.slots,
            "workdir": str(p.workdir),
            "key_file": str(p.workdir / "host.key"),
            "registry_url": p.registry,
            "collector_url": collector_url,
            "enrol_token": p.enrol_token,
        },
    }
    return reply, config


def cmd_enroll(args: argparse.Namespace) -> int:
    p = plan(args)
    reply, config = common.run(enroll(p, args))
    _write_private(p.out, builder_toml(config))
    result = {
        "host": p.profile.host,
        "owner": config["builder"]["owner"],
        "trust": reply.get("trust"),
        "config": str(p.out),
        "key_file": str(p.workdir / "host.key"),
        "start": f"skyline-builder --conf {p.out}",
    }
    common.emit(
        args,
        result,
        lambda r: [
            f"enrolled {r['host']} for {r['owner']} as {r['trust']}",
            f"builder configuration: {r['config']} (key {r['key_file']}: keep it, it is the"
            " host's identity)",
            f"start it with:  {r['start']}",
            "or as a service: a systemd unit with that ExecStart (see `skyline host cloud-init`)",
        ],
    )
    return common.OK


async def _cloud_init_inputs(args: argparse.Namespace) -> tuple[str, str, list[str]]:
    registry = _registry(args)
    token = owner_token(args)
    async with common.session(timeout=30) as http:
        await whoami(http, registry, token)  # a wrong token fails here, not on a VM's boot
        about = await farm(http, registry)
    keys = [k for k in about.get("admin_ssh_keys") or [] if isinstance(k, str)]
    return registry, token, keys


def cmd_cloud_init(args: argparse.Namespace) -> int:
    if args.slots is not None and not 1 <= args.slots <= 256:
        raise CliError(f"--slots must be from 1 to 256, not {args.slots}")
    registry, token, keys = common.run(_cloud_init_inputs(args))
    enrol_token = (
        _read_secret(args.enrol_token_file, "enrol token") if args.enrol_token_file else ""
    )
    vm = cloudinit.VolunteerVM(
        registry_url=registry,
        owner_token=token,
        admin_ssh_keys=keys,
        distro=args.distro,
        package=args.package,
        slots=args.slots,
        enrol_token=enrol_token,
    )
    data = cloudinit.user_data(vm)
    if args.json:
        common.emit(args, data, lambda _: [])
    else:
        print(cloudinit.render(data), end="")
    return common.OK


def cmd_container(args: argparse.Namespace) -> int:
    registry = _registry(args)
    line = cloudinit.podman_line(registry, image=args.image, name=args.name, slots=args.slots)
    common.emit(
        args,
        {"command": line, "needs_env": [TOKEN_ENV]},
        lambda r: [f"# with {TOKEN_ENV} set to your owner token:", r["command"]],
    )
    return common.OK


def _token_args(p: argparse.ArgumentParser) -> None:
    p.add_argument("--registry", help="the registry's URL (default: from the configuration)")
    p.add_argument("--token-file", help=f"a file holding your owner token (or ${TOKEN_ENV})")
    p.add_argument("--token", help="the owner token itself (shows in `ps`: prefer --token-file)")
    p.add_argument(
        "--enrol-token-file", help="a token to enrol with other than your owner token (default: it)"
    )
    p.add_argument("--slots", type=int, help="builds at once (default 1)")


def register(commands: Any) -> None:
    host = common.group(commands, "host", "this machine as a builder: enrol it, or a VM")

    e = host.add_parser("enroll", help="enrol this machine and write the builder's config")
    _token_args(e)
    e.add_argument("--host", help="this builder's name (default: the machine's short name)")
    e.add_argument("--arch", action="append", help="architectures to build (repeatable)")
    e.add_argument("--release", action="append", help="releases to build for (repeatable)")
    e.add_argument(
        "--out",
        help="the builder's config file (default: ~/.config/skyline/"
        "builder.toml, /etc/skyline/builder.toml as root)",
    )
    e.add_argument(
        "--workdir",
        help="key, journal and builds (default: ~/.local/share/"
        "skyline-builder, /var/lib/skyline-builder as root)",
    )
    e.add_argument("--amqp-url", help="the broker (default: what the registry publishes)")
    e.add_argument("--collector-url", help="the collector (default: what the registry publishes)")
    e.add_argument("--force", action="store_true", help="replace an existing config file")
    e.add_argument("--timeout", type=float, default=30, help="seconds to retry the registry")
    common.add_json(e)
    e.set_defaults(func=cmd_enroll)

    c = host.add_parser("cloud-init", help="print user-data for a VM that joins as a builder")
    _token_args(c)
    c.add_argument("--distro", choices=cloudinit.DISTROS, default="fedora")
    c.add_argument(
        "--package", default="skyline", help="what pip installs (a name, wheel or git URL)"
    )
    common.add_json(c)
    c.set_defaults(func=cmd_cloud_init)

    p = host.add_parser("container", help="print a one-line `podman run` that joins as a builder")
    p.add_argument("--registry", help="the registry's URL (default: from the configuration)")
    p.add_argument("--image", default=cloudinit.DEFAULT_IMAGE, help="the builder image")
    p.add_argument("--name", default="skyline-builder", help="container and volume name")
    p.add_argument("--slots", type=int, help="builds at once (default 1)")
    common.add_json(p)
    p.set_defaults(func=cmd_container)
