"""User-data for a volunteer's VM, and the one-line container variant. Pure: no I/O.

The VM installs Skyline in /opt/skyline, enrols itself with `skyline host enroll` as the
unprivileged user `skyline-builder` (its key never leaves the VM), lets the farm admins in
over SSH (user `skyline-admin`), updates itself (dnf-automatic or unattended-upgrades, and a
weekly upgrade of Skyline), and runs the builder as a systemd service.
"""

from __future__ import annotations

import dataclasses
import json
import shlex
from typing import Any

PREFIX = "/opt/skyline"
CONF = "/etc/skyline/builder.toml"
WORKDIR = "/var/lib/skyline-builder"
TOKEN_FILE = "/etc/skyline/owner-token"
USER = "skyline-builder"
ADMIN_USER = "skyline-admin"
DISTROS = ("fedora", "debian")
DEFAULT_IMAGE = "localhost/skyline-builder:latest"  # what deploy/podman builds

PACKAGES = {
    # rpm-build and bubblewrap: builds run in a sandbox; mock is used when present.
    # python3-rpm and python3-gssapi come from the distribution (the venv sees them).
    "fedora": [
        "python3",
        "python3-pip",
        "python3-rpm",
        "python3-gssapi",
        "rpm-build",
        "bubblewrap",
        "mock",
        "dnf-automatic",
    ],
    "debian": [
        "python3",
        "python3-venv",
        "python3-rpm",
        "python3-gssapi",
        "rpm",
        "bubblewrap",
        "unattended-upgrades",
    ],
}

UNIT = f"""[Unit]
Description=Skyline builder (volunteer build agent)
Wants=network-online.target
After=network-online.target

[Service]
User={USER}
ExecStart={PREFIX}/bin/skyline-builder --conf {CONF}
Restart=always
RestartSec=30
# A stop lets running builds finish for up to 15 minutes.
TimeoutStopSec=960
KillSignal=SIGTERM

[Install]
WantedBy=multi-user.target
"""

UPDATE_UNIT = f"""[Unit]
Description=Upgrade Skyline and restart the builder

[Service]
Type=oneshot
ExecStart={PREFIX}/bin/pip install --quiet --upgrade --upgrade-strategy eager {{package}}
ExecStartPost=/bin/systemctl try-restart skyline-builder.service
"""

UPDATE_TIMER = """[Unit]
Description=Weekly upgrade of Skyline

[Timer]
OnCalendar=weekly
RandomizedDelaySec=6h
Persistent=true

[Install]
WantedBy=timers.target
"""

DNF_AUTOMATIC = """[commands]
upgrade_type = default
download_updates = yes
apply_updates = yes
"""

APT_PERIODIC = """APT::Periodic::Update-Package-Lists "1";
APT::Periodic::Unattended-Upgrade "1";
"""


@dataclasses.dataclass(frozen=True)
class VolunteerVM:
    registry_url: str
    owner_token: str
    admin_ssh_keys: list[str]
    distro: str = "fedora"
    package: str = "skyline"  # what pip installs: a name, a wheel URL or a git+https URL
    slots: int | None = None
    enrol_token: str = ""


def enroll_argv(
    registry_url: str, *, conf: str, workdir: str, slots: int | None, enrol_token_file: str = ""
) -> list[str]:
    """The `skyline host enroll` command a VM or a container runs (the token from a file or
    $SKYLINE_OWNER_TOKEN, never on a command line that `ps` shows)."""
    argv = ["host", "enroll", "--registry", registry_url, "--out", conf, "--workdir", workdir]
    if slots:
        argv += ["--slots", str(slots)]
    if enrol_token_file:
        argv += ["--enrol-token-file", enrol_token_file]
    return argv


def user_data(vm: VolunteerVM) -> dict[str, Any]:
    """The cloud-config as data (`render` writes it as YAML)."""
    if vm.distro not in DISTROS:
        raise ValueError(f"distro must be one of {', '.join(DISTROS)}, not {vm.distro!r}")
    q = shlex.quote
    files = [
        {"path": TOKEN_FILE, "permissions": "0600", "content": vm.owner_token + "\n"},
        {"path": "/etc/systemd/system/skyline-builder.service", "content": UNIT},
        {
            "path": "/etc/systemd/system/skyline-update.service",
            "content": UPDATE_UNIT.format(package=q(vm.package)),
        },
        {"path": "/etc/systemd/system/skyline-update.timer", "content": UPDATE_TIMER},
    ]
    enrol_token_file = ""
    if vm.enrol_token:
        enrol_token_file = "/etc/skyline/enrol-token"
        files.append({"path": enrol_token_file, "permissions": "0600", "content": vm.enrol_token})
    if vm.distro == "fedora":
        files.append({"path": "/etc/dnf/automatic.conf", "content": DNF_AUTOMATIC})
        auto_updates = (
            "systemctl enable --now dnf-automatic.timer"
            " || systemctl enable --now dnf5-automatic.timer"
        )
    else:
        files.append({"path": "/etc/apt/apt.conf.d/20auto-upgrades", "content": APT_PERIODIC})
        auto_updates = "systemctl enable --now unattended-upgrades.service"
    enroll = enroll_argv(
        vm.registry_url,
        conf=CONF,
        workdir=WORKDIR,
        slots=vm.slots,
        enrol_token_file=enrol_token_file,
    )
    # The enrolment runs as the builder's user, so its key is that user's alone; the token
    # files are handed over for it and removed once it is enrolled.
    handover = f"chown {USER} {TOKEN_FILE}" + (f" {enrol_token_file}" if enrol_token_file else "")
    enroll_cmd = f"runuser -u {USER} -- env SKYLINE_OWNER_TOKEN_FILE={TOKEN_FILE} " + " ".join(
        q(a) for a in [f"{PREFIX}/bin/skyline", *enroll]
    )
    return {
        "package_update": True,
        "package_upgrade": True,
        "packages": PACKAGES[vm.distro],
        "users": [
            "default",
            {
                "name": ADMIN_USER,
                "gecos": "Skyline farm administrators",
                "groups": "wheel" if vm.distro == "fedora" else "sudo",
                "sudo": "ALL=(ALL) NOPASSWD:ALL",
                "shell": "/bin/bash",
                "lock_passwd": True,
                "ssh_authorized_keys": list(vm.admin_ssh_keys),
            },
            {
                "name": USER,
                "system": True,
                "homedir": WORKDIR,
                "shell": "/usr/sbin/nologin",
                "lock_passwd": True,
            },
        ],
        "write_files": files,
        "runcmd": [
            f"mkdir -p {WORKDIR} /etc/skyline",
            f"chown {USER} {WORKDIR} /etc/skyline",
            f"python3 -m venv --system-site-packages {PREFIX}",
            f"{PREFIX}/bin/pip install --quiet {q(vm.package)}",
            handover,
            enroll_cmd,
            f"shred -u {TOKEN_FILE}" + (f" {enrol_token_file}" if enrol_token_file else ""),
            auto_updates,
            "systemctl daemon-reload",
            "systemctl enable --now skyline-update.timer",
            "systemctl enable --now skyline-builder.service",
        ],
    }


def render(data: dict[str, Any]) -> str:
    """cloud-config YAML: block style, strings as JSON (a valid YAML double-quoted scalar),
    multi-line strings as literal blocks."""
    return "#cloud-config\n" + "".join(_yaml(data, 0))


def _scalar(value: Any) -> str:
    return json.dumps(value)  # true/false, numbers and "strings" mean the same in YAML


def _yaml(value: Any, indent: int) -> list[str]:
    pad = " " * indent
    lines: list[str] = []
    if isinstance(value, dict):
        for key, item in value.items():
            lines += _entry(f"{pad}{key}:", item, indent)
    elif isinstance(value, list):
        for item in value:
            if isinstance(item, dict) and item:
                first, *rest = _yaml(item, indent + 2)
                lines.append(f"{pad}- {first[indent + 2 :]}")
                lines += rest
            else:
                lines += _entry(f"{pad}-", item, indent)
    return lines


def _entry(head: str, item: Any, indent: int) -> list[str]:
    if isinstance(item, str) and "\n" in item:
        body = item if item.endswith("\n") else item + "\n"
        chomp = "" if item.endswith("\n") else "-"
        inner = " " * (indent + 2)
        return [f"{head} |{chomp}\n"] + [
            f"{inner}{line}\n" if line else "\n" for line in body[:-1].split("\n")
        ]
    if isinstance(item, (dict, list)) and item:
        return [f"{head}\n", *_yaml(item, indent + 2)]
    if isinstance(item, (dict, list)):
        return [f"{head} {'{}' if isinstance(item, dict) else '[]'}\n"]
    return [f"{head} {_scalar(item)}\n"]


def podman_line(
    registry_url: str,
    *,
    image: str = DEFAULT_IMAGE,
    name: str = "skyline-builder",
    slots: int | None = None,
) -> str:
    """One `podman run` that enrols on first start (config and key kept in a volume) and then
    runs the builder; the owner token comes from the caller's $SKYLINE_OWNER_TOKEN."""
    conf = f"{WORKDIR}/builder.toml"
    enroll = " ".join(
        shlex.quote(a)
        for a in ["skyline", *enroll_argv(registry_url, conf=conf, workdir=WORKDIR, slots=slots)]
    )
    # A failed enrolment stops the container (podman restarts it and it tries again).
    script = f"test -f {conf} || {enroll} || exit 1; exec skyline-builder --conf {conf}"
    return (
        f"podman run -d --name {shlex.quote(name)} --restart=always"
        f" -v {shlex.quote(name)}:{WORKDIR} -e SKYLINE_OWNER_TOKEN"
        f" {shlex.quote(image)} sh -c {shlex.quote(script)}"
    )
