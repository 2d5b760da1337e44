"""The podman-compose deployment brought up for real: one build through its containers.

Builds a Debian base image locally (deploy/podman/build-base-image: mmdebstrap, cached by its
inputs; no registry is needed), the four images on it (pip installs from a local wheelhouse),
then `podman-compose up` of deploy/podman/compose.yaml (two dispatchers, the farm's builder
and a volunteer) with fresh secrets from setup.py. Waits until every container's own health
check passes, creates a packager through the registry's admin API, runs `skyline submit` of
examples/skyline-hello in a container on the project's network, and reads the RPM back from
the Koji storage volume. Tears everything down.

Slow (minutes; see deploy/podman/README.md for times): deselect with `-m "not slow"`.
Podman state lives in $SKYLINE_PODMAN_DIR (default ~/.cache/skyline-podman), not in the
machine's image store, so the base image and the layers are reused by the next run.
"""

from __future__ import annotations

import hashlib
import json
import os
import re
import shutil
import subprocess
import sys
import time
import urllib.request
import uuid
from collections.abc import Iterator
from pathlib import Path

import koji
import pytest
import rpm

from services.common.localstack import free_port

ROOT = Path(__file__).resolve().parents[2]
DEPLOY = ROOT / "deploy" / "podman"
TOOLS = ("podman", "podman-compose", "mmdebstrap")
MISSING = [tool for tool in TOOLS if shutil.which(tool) is None]

pytestmark = [
    pytest.mark.slow,
    pytest.mark.skipif(bool(MISSING), reason=f"needs {', '.join(MISSING)} (not installed)"),
    pytest.mark.skipif(
        os.geteuid() != 0, reason="needs root: rootful podman and mmdebstrap's root mode"
    ),
]

IMAGES = ("service", "builder", "rabbitmq", "postgres")
CONTAINERFILES = {
    "service": "Containerfile",
    "builder": "Containerfile.builder",
    "rabbitmq": "Containerfile.rabbitmq",
    "postgres": "Containerfile.postgres",
}
PROJECTS = ("./schemas", ".", "setuptools>=77", "wheel")  # what the images' pip installs
HEALTH_TIMEOUT = 300.0
BUILD_TIMEOUT = 600


def podman_env(workdir: Path) -> dict[str, str]:
    """Podman with its own storage under `workdir`; runc and lowered ulimits when runc is
    installed (hosts whose crun cannot set the default rlimits: ../shared/stack-recipes.md)."""
    workdir.mkdir(parents=True, exist_ok=True)
    conf = workdir / "containers.conf"
    lines = ["[containers]", 'default_ulimits = ["nofile=4096:4096", "nproc=4096:4096"]']
    if shutil.which("runc"):
        lines += ["[engine]", 'runtime = "runc"']
    conf.write_text("\n".join(lines) + "\n")
    storage = workdir / "storage.conf"
    storage.write_text(
        f'[storage]\ndriver = "overlay"\ngraphroot = "{workdir / "storage"}"\n'
        f'runroot = "{workdir / "run"}"\n'
    )
    return {
        **os.environ,
        "CONTAINERS_CONF": str(conf),
        "CONTAINERS_STORAGE_CONF": str(storage),
    }


def run(argv: list[str], env: dict[str, str], timeout: float = 1800, **kw) -> str:
    started = time.monotonic()
    res = subprocess.run(argv, env=env, capture_output=True, text=True, timeout=timeout, **kw)
    took = time.monotonic() - started
    print(f"[{took:6.1f} s] {' '.join(argv)[:160]}")
    if res.returncode != 0:
        raise AssertionError(
            f"{' '.join(argv)} exited {res.returncode}:\n{res.stdout[-3000:]}\n{res.stderr[-3000:]}"
        )
    return res.stdout


def wheelhouse(workdir: Path, env: dict[str, str]) -> Path:
    """Wheels of every dependency, built with this machine's pip configuration, so that the
    image builds need no package index. Cached by the projects' declared dependencies."""
    key = hashlib.sha256(
        (ROOT / "pyproject.toml").read_bytes() + (ROOT / "schemas" / "pyproject.toml").read_bytes()
    ).hexdigest()[:12]
    wheels = workdir / f"wheels-{key}"
    if not (wheels / ".complete").exists():
        # From a copy: building the projects' own wheels leaves build/ folders in the sources.
        src = workdir / "wheel-src"
        shutil.rmtree(src, ignore_errors=True)
        ignore = shutil.ignore_patterns("__pycache__", "build", "*.egg-info")
        for part in ("schemas", "services"):
            shutil.copytree(ROOT / part, src / part, ignore=ignore)
        shutil.copy(ROOT / "pyproject.toml", src)
        run(
            [sys.executable, "-m", "pip", "wheel", "-q", "-w", str(wheels), *PROJECTS], env, cwd=src
        )
        shutil.rmtree(src)
        (wheels / ".complete").touch()
    return wheels


def wait_for(what: str, ready, timeout: float, diagnose) -> None:
    deadline = time.monotonic() + timeout
    while not ready():
        if time.monotonic() > deadline:
            raise AssertionError(f"{what} not ready after {timeout:.0f} s\n{diagnose()}")
        time.sleep(2)


class Deployment:
    def __init__(self, env: dict[str, str], project: str, secrets: Path, ports: dict) -> None:
        self.env, self.project, self.secrets, self.ports = env, project, secrets, ports
        self.compose = ["podman-compose", "-p", project, "-f", str(DEPLOY / "compose.yaml")]
        self.label = f"label=io.podman.compose.project={project}"

    def containers(self) -> list[str]:
        out = run(
            ["podman", "ps", "-a", "--format", "{{.Names}}", "--filter", self.label],
            self.env,
        )
        return sorted(out.split())

    def state(self, name: str) -> str:
        """`status exit-code`, e.g. "running 0" or "exited 1"."""
        res = subprocess.run(
            ["podman", "inspect", "--format", "{{.State.Status}} {{.State.ExitCode}}", name],
            env=self.env,
            capture_output=True,
            text=True,
            timeout=60,
        )
        return res.stdout.strip()

    def healthy(self, name: str) -> bool:
        res = subprocess.run(
            ["podman", "healthcheck", "run", name], env=self.env, capture_output=True, timeout=60
        )
        return res.returncode == 0

    def logs(self, lines: int = 40) -> str:
        out = []
        for name in self.containers():
            res = subprocess.run(
                ["podman", "logs", "--tail", str(lines), name],
                env=self.env,
                capture_output=True,
                text=True,
            )
            state = subprocess.run(
                ["podman", "inspect", "--format", "{{.State.Status}}", name],
                env=self.env,
                capture_output=True,
                text=True,
            ).stdout.strip()
            out.append(f"--- {name} ({state}) ---\n{res.stdout}{res.stderr}")
        return "\n".join(out)

    def registry(self, path: str, body: dict | None = None) -> dict:
        token = (self.secrets / "registry-admin-token").read_text().strip()
        request = urllib.request.Request(
            f"http://127.0.0.1:{self.ports['SKYLINE_REGISTRY_PORT']}{path}",
            data=json.dumps(body).encode() if body is not None else None,
            headers={"Authorization": f"Bearer {token}", "Content-Type": "application/json"},
        )
        with urllib.request.urlopen(request, timeout=30) as reply:
            return json.load(reply)

    def volume_path(self, volume: str) -> Path:
        out = run(
            ["podman", "volume", "inspect", f"{self.project}_{volume}", "--format", "json"],
            self.env,
        )
        return Path(json.loads(out)[0]["Mountpoint"])


@pytest.fixture(scope="module")
def deployment(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Deployment]:
    started = time.monotonic()
    workdir = Path(os.environ.get("SKYLINE_PODMAN_DIR", Path.home() / ".cache/skyline-podman"))
    env = podman_env(workdir)
    mirror = [os.environ["SKYLINE_DEBIAN_MIRROR"]] if "SKYLINE_DEBIAN_MIRROR" in os.environ else []
    base = run([str(DEPLOY / "build-base-image"), *mirror], env).strip().splitlines()[-1]
    wheels = wheelhouse(workdir, env)
    tag = "test"
    for image in IMAGES:
        pip = ("--build-arg", "PIP_ARGS=--no-index --find-links /wheels")
        run(
            [
                *("podman", "build", "-q", "-f", str(DEPLOY / CONTAINERFILES[image])),
                *("-t", f"localhost/skyline-{image}:{tag}", "--build-arg", f"BASE_IMAGE={base}"),
                *(pip if image in ("service", "builder") else ()),
                *("-v", f"{wheels}:/wheels:ro", str(ROOT)),
            ],
            env,
        )
    print(f"images ready after {time.monotonic() - started:.0f} s")

    secrets = tmp_path_factory.mktemp("secrets")
    run([sys.executable, str(DEPLOY / "setup.py"), str(secrets)], env)
    project = f"skyline-test-{uuid.uuid4().hex[:8]}"
    base_port = free_port(3)
    ports = {
        "SKYLINE_REGISTRY_PORT": str(base_port),
        "SKYLINE_COLLECTOR_PORT": str(base_port + 1),
        "SKYLINE_AMQP_PORT": str(base_port + 2),
    }
    env = {
        **env,
        **ports,
        "SKYLINE_SECRETS": str(secrets),
        "SKYLINE_BASE_IMAGE": base,
        "SKYLINE_VOLUNTEERS": "1",
        "SKYLINE_DISPATCHERS": "2",  # replicas share the work through the database and queue
        **{f"SKYLINE_{i.upper()}_IMAGE": f"localhost/skyline-{i}:{tag}" for i in IMAGES},
    }
    system = Deployment(env, project, secrets, ports)
    try:
        up = time.monotonic()
        run([*system.compose, "up", "-d"], env, timeout=600)
        names = system.containers()
        # broker, database, registry, 2 dispatchers, verifier, collector, owners (one-shot),
        # builder, volunteer
        assert len(names) == 10, names
        owners = next(n for n in names if "_owners_" in n)
        wait_for(
            "the owners service (exit 0)",
            lambda: system.state(owners) == "exited 0",
            HEALTH_TIMEOUT,
            system.logs,
        )
        for name in (n for n in names if n != owners):
            wait_for(
                f"{name} (its health check)",
                lambda name=name: system.healthy(name),
                HEALTH_TIMEOUT,
                system.logs,
            )
        print(f"all {len(names)} containers healthy after {time.monotonic() - up:.0f} s")
        yield system
    finally:
        # `rm -v` first: podman-compose 1.0.3's `down -v` leaves the builders' anonymous volumes.
        names = system.containers()
        if names:
            subprocess.run(["podman", "rm", "-f", "-v", *names], env=env, capture_output=True)
        subprocess.run([*system.compose, "down", "-v"], env=env, capture_output=True, timeout=300)
        subprocess.run(
            ["podman", "network", "rm", "-f", f"{project}_default"], env=env, capture_output=True
        )
        print(f"deployment test took {time.monotonic() - started:.0f} s in all")


def sandbox_of(deployment: Deployment, container: str) -> str:
    """What the builder agent in `container` said at start-up about its builds' sandbox."""
    res = subprocess.run(
        ["podman", "logs", container], env=deployment.env, capture_output=True, text=True
    )
    log = res.stdout + res.stderr
    said = re.findall(r"builds run in a (\w+) sandbox|builds run (WITHOUT) a sandbox", log)
    # A set: a restarted agent says it again.
    return ",".join(sorted({kind or without for kind, without in said})) or log[-2000:]


def builders(deployment: Deployment) -> list[str]:
    return [n for n in deployment.containers() if "_builder_" in n or "_volunteer_" in n]


def test_builders_enrol_with_their_trust(deployment: Deployment) -> None:
    """The farm's builder enrolled as core (its key is a core key), the volunteer as untrusted,
    each with its own broker user made by the registry."""
    farm = deployment.registry("/api/v1/hosts/farm-builder-1")
    assert (farm["state"], farm["trust"], farm["owner"]) == ("online", "core", "farm")
    volunteer = next(n for n in deployment.containers() if "_volunteer_" in n)
    host = run(["podman", "exec", volunteer, "cat", "/etc/hostname"], deployment.env).strip()
    view = deployment.registry(f"/api/v1/hosts/{host}")
    assert (view["state"], view["trust"], view["owner"]) == ("online", "untrusted", "volunteer")


def test_builders_build_in_the_bwrap_sandbox(deployment: Deployment) -> None:
    """No builder may build unsandboxed here: each probed bubblewrap in its container at
    start-up (it refuses to start without a sandbox unless allow_unsandboxed) and found it
    works with the compose file's security options."""
    names = builders(deployment)
    assert len(names) == 2, names
    assert {name: sandbox_of(deployment, name) for name in names} == dict.fromkeys(names, "bwrap")


def test_owners_service_keeps_the_tokens(deployment: Deployment) -> None:
    """Each builder volume holds its own owner's token only; the one-shot owners service run
    again (as every `up` does) keeps them, since the registry shows a token only once."""
    tokens = {owner: deployment.volume_path(f"{owner}-owner") for owner in ("farm", "volunteer")}
    assert {owner: sorted(p.name for p in path.iterdir()) for owner, path in tokens.items()} == {
        "farm": ["farm"],
        "volunteer": ["volunteer"],
    }
    before = {owner: (path / owner).read_text() for owner, path in tokens.items()}
    owners = next(n for n in deployment.containers() if "_owners_" in n)
    out = run(["podman", "start", "--attach", owners], deployment.env, timeout=300)
    assert "owner farm: token kept" in out and "owner volunteer: token kept" in out, out
    assert deployment.state(owners) == "exited 0"
    assert {owner: (path / owner).read_text() for owner, path in tokens.items()} == before


def test_dispatcher_replicas_share_its_queue(deployment: Deployment) -> None:
    rabbitmq = next(n for n in deployment.containers() if "_rabbitmq_" in n)
    out = run(
        [
            *("podman", "exec", rabbitmq, "setpriv", "--reuid=rabbitmq", "--regid=rabbitmq"),
            *("--init-groups", "rabbitmqctl", "-q", "list_queues", "name", "consumers"),
        ],
        deployment.env,
    )
    consumers = dict(line.split() for line in out.splitlines() if line.strip())
    assert consumers["skyline.dispatcher"] == "2", out
    assert consumers["skyline.verifier"] == consumers["skyline.collector"] == "1", out


def test_one_build_through_the_containers(deployment: Deployment, tmp_path: Path) -> None:
    started = time.monotonic()
    owner = f"alice{uuid.uuid4().hex[:6]}"
    token = deployment.registry("/api/v1/owners", {"name": owner})["token"]
    packager = tmp_path / "packager"
    packager.mkdir()
    (packager / "token").write_text(token + "\n")
    (packager / "token").chmod(0o600)
    (packager / "skyline.toml").write_text(
        f"""amqp_url = "amqp://rabbitmq:5672/%2F"
amqp_user = "{owner}"
amqp_password_file = "token"

[dispatcher]
listen = "dispatcher:8411"

[collector]
public_url = "http://collector:8412"
"""
    )
    out = run(
        [
            *("podman", "run", "--rm", "--network", f"{deployment.project}_default"),
            *("-v", f"{packager}:/home/packager", "--workdir", "/home/packager"),
            *("-v", f"{ROOT / 'examples' / 'skyline-hello'}:/home/packager/src:ro"),
            *(deployment.env["SKYLINE_SERVICE_IMAGE"], "skyline", "--conf", "skyline.toml"),
            *("submit", "src/skyline-hello.spec", "--arch", "noarch"),
            *("--timeout", str(BUILD_TIMEOUT)),
        ],
        deployment.env,
        timeout=BUILD_TIMEOUT + 120,
    )
    print(out)
    print(f"build through the containers took {time.monotonic() - started:.0f} s")

    # Read it back from the Koji storage volume, where koji.PathInfo says it belongs.
    topdir = deployment.volume_path("koji")
    build = {"name": "skyline-hello", "version": "1.0", "release": "1"}
    rpminfo = {**build, "arch": "noarch"}
    path = Path(koji.PathInfo(str(topdir)).build(build)) / koji.PathInfo().rpm(rpminfo)
    assert path.is_file(), f"{path} missing; the volume holds {sorted(topdir.rglob('*'))}"
    # The very file the system recorded as stored: `skyline submit` ends by printing each
    # stored file's path and SHA-256 as the dispatcher reports them.
    assert re.search(r"^build \d+ complete$", out, re.MULTILINE), out
    recorded = [line for line in out.splitlines() if path.name in line and " sha256 " in line]
    assert len(recorded) == 1, out
    assert hashlib.sha256(path.read_bytes()).hexdigest() == recorded[0].split(" sha256 ")[1].strip()
    ts = rpm.TransactionSet()
    ts.setVSFlags(rpm._RPMVSF_NOSIGNATURES)
    with open(path, "rb") as f:
        header = ts.hdrFromFdno(f.fileno())
    assert header[rpm.RPMTAG_NAME] == "skyline-hello"
    assert header[rpm.RPMTAG_SOURCERPM] == "skyline-hello-1.0-1.src.rpm"
    assert "/usr/bin/skyline-hello" in header[rpm.RPMTAG_FILENAMES]
    # Built in the sandbox: every builder that could have taken the lease builds in bubblewrap.
    for name in builders(deployment):
        assert sandbox_of(deployment, name) == "bwrap", name
