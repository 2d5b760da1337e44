"""The whole system on one machine: broker, database, every service and local builders.

Everything lives in one state directory (default `./state`): the servers' data, a
`skyline.toml` for the services and the CLI, a `fedora-messaging.toml` for stock
fedora-messaging tools, logs and pid files. `up` and `down` may run in different processes.
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import json
import os
import signal
import subprocess
import sys
import time
import urllib.request
from collections.abc import Callable, Sequence
from pathlib import Path

from services.common import principals
from services.common.broker_admin import BrokerAdmin, Principals, new_password
from services.common.config import with_credentials
from services.common.localstack import LocalStackError, PostgreSQL, RabbitMQ, free_port
from services.common.signing import load_or_create_key, public_key_b64

SERVICES = ("registry", "dispatcher", "verifier", "collector")
Progress = Callable[[str], None]


class LocalSystem:
    def __init__(self, state_dir: Path, *, fast_db: bool = False) -> None:
        self.state = Path(state_dir).resolve()
        self.secrets = self.state / "secrets"
        # The broker's administrator: only `local up` and the registry's management-API client
        # use it; every process talks AMQP as its own principal.
        self.rabbitmq = RabbitMQ(self.state, password=self.secret("broker-admin"))
        self.postgres = PostgreSQL(self.state, fast=fast_db)
        self.config_file = self.state / "skyline.toml"
        self.fm_config_file = self.state / "fedora-messaging.toml"  # the local packager's
        self.fm_monitor_file = self.state / "fedora-messaging-monitor.toml"
        self.logs = self.state / "logs"
        self.pids = self.state / "pids"

    # -- principals -----------------------------------------------------------------------
    @property
    def owner(self) -> str:
        """The local packager: the user running `skyline local up`."""
        name = os.environ.get("USER") or "local"
        try:
            return principals.owner_user(name)
        except ValueError:
            return "local"

    def secret(self, name: str) -> str:
        """The password kept in secrets/<name> (made on first use, readable by us only)."""
        path = self.secrets / name
        if not path.exists():
            self.secrets.mkdir(parents=True, exist_ok=True, mode=0o700)
            fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
            with os.fdopen(fd, "w") as f:
                f.write(new_password() + "\n")
        return path.read_text().strip()

    @property
    def amqp_url(self) -> str:
        """The broker's address without credentials: each process adds its own."""
        return f"amqp://127.0.0.1:{self.rabbitmq.port}/%2F"

    def url_of(self, user: str) -> str:
        """An AMQP URL with `user`'s credentials (users made by `provision`)."""
        return with_credentials(self.amqp_url, user, self.secret(user))

    @property
    def monitor_url(self) -> str:
        """Reads every skyline.* topic, publishes nothing: for watching (and tests' taps)."""
        return self.url_of(principals.MONITOR_USER)

    def provision(self) -> None:
        """One broker user per service and the monitor, each with only its permissions
        (services/common/principals.py). Hosts and owners get theirs from the registry."""
        made = Principals(
            BrokerAdmin(self.rabbitmq.management_url, self.rabbitmq.user, self.rabbitmq.password),
            self.amqp_url,
            password=self.secret,
        )

        async def make_all() -> None:
            for service in SERVICES:
                await made.service(service)
            await made.monitor()

        asyncio.run(make_all())

    # -- ports and configuration --------------------------------------------------------
    def _ports(self) -> dict[str, int]:
        saved = self.state / "ports.json"
        if saved.exists():
            return json.loads(saved.read_text())
        base = free_port(3)
        ports = {"registry": base, "dispatcher": base + 1, "collector": base + 2}
        saved.write_text(json.dumps(ports) + "\n")
        return ports

    def builder_names(self) -> list[str]:
        return sorted(p.name for p in (self.state / "builders").glob("*") if p.is_dir())

    def url(self, service: str) -> str:
        return f"http://127.0.0.1:{self._ports()[service]}"

    @property
    def koji_topdir(self) -> Path:
        return self.state / "koji"

    def write_config(self, builders: int, *, lease_seconds: int | None = None) -> None:
        """Write skyline.toml and fedora-messaging.toml; `lease_seconds` overrides the
        dispatcher's lease length (tests use a short one to see expired leases requeued)."""
        ports = self._ports()
        core_keys = []
        for i in range(1, builders + 1):
            workdir = self.state / "builders" / f"local-builder-{i}"
            key = load_or_create_key(workdir / "host.key")
            # The local builders are this machine's own: the infrastructure's "core" hosts.
            core_keys.append(public_key_b64(key))
        registry, collector = self.url("registry"), self.url("collector")
        lease = f"lease_seconds = {int(lease_seconds)}\n" if lease_seconds else ""
        self.config_file.write_text(
            f"""# Written by `skyline local up`; relative paths are relative to this file.
# Every process talks to the broker as its own user: the services get theirs from the
# environment `local up` starts them with, builders from the registry when they enrol, and
# the `skyline` CLI uses the local packager's below.
amqp_url = "{self.amqp_url}"
amqp_user = "{self.owner}"
amqp_password_file = "secrets/{self.owner}"
database_url = "{self.postgres.url}"
log_level = "INFO"

[registry]
listen = "127.0.0.1:{ports["registry"]}"
heartbeat_timeout = 30
core_keys = {json.dumps(core_keys)}
broker_api_url = "{self.rabbitmq.management_url}"
broker_api_user = "{self.rabbitmq.user}"
broker_api_password_file = "secrets/broker-admin"
admin_token = "{self.secret("registry-admin-token")}"
public_amqp_url = "{self.amqp_url}"
public_collector_url = "{collector}"

[dispatcher]
listen = "127.0.0.1:{ports["dispatcher"]}"
sweep_seconds = 5
collector_url = "{collector}"
registry_url = "{registry}"
{lease}
[verifier]
registry_url = "{registry}"
collector_url = "{collector}"

[collector]
listen = "127.0.0.1:{ports["collector"]}"
public_url = "{collector}"
koji_topdir = "koji"
staging_dir = "staging"
registry_url = "{registry}"
dispatcher_url = "{self.url("dispatcher")}"

[builder]
owner = "{self.owner}"
registry_url = "{registry}"
collector_url = "{collector}"
heartbeat_seconds = 3
"""
        )

    def write_fm_configs(self) -> None:
        """Configs for stock fedora-messaging tools (once the local packager exists)."""
        self._write_fm_config(
            self.fm_config_file, self.owner, ["skyline.build.#"], "the local packager"
        )
        self._write_fm_config(
            self.fm_monitor_file, principals.MONITOR_USER, ["skyline.#"], "the read-only monitor"
        )

    def _write_fm_config(self, path: Path, user: str, keys: list[str], who: str) -> None:
        """A fedora-messaging config for stock tools, with `user`'s credentials (mode 0600)."""
        queue = f"{user}:watch-{os.getpid()}"  # principals.py: a user's queues start "<user>:"
        text = f"""# For stock fedora-messaging tools, as {who} ({user}):
#   fedora-messaging --conf {path} consume
#   fedora-messaging --conf {path} publish FILE
amqp_url = "{self.url_of(user)}"
publish_exchange = "amq.topic"
topic_prefix = ""
passive_declares = false
# `consume` prints each message with its schema class's __str__ (summary and body).
callback = "fedora_messaging.example:printer"

[client_properties]
app = "skyline-local"

[queues."{queue}"]
durable = false
auto_delete = true
exclusive = true
arguments = {{}}

[[bindings]]
queue = "{queue}"
exchange = "amq.topic"
routing_keys = {json.dumps(keys)}

[consumer_config]

[qos]
prefetch_size = 0
prefetch_count = 25
"""
        path.touch(mode=0o600)
        path.write_text(text)

    # -- processes ----------------------------------------------------------------------
    def _spawn(self, name: str, argv: list[str], env: dict[str, str] | None = None) -> None:
        pidfile = self.pids / f"{name}.pid"
        if _alive(pidfile):
            return
        self.logs.mkdir(parents=True, exist_ok=True)
        self.pids.mkdir(parents=True, exist_ok=True)
        with open(self.logs / f"{name}.log", "ab") as log:
            proc = subprocess.Popen(
                argv,
                stdin=subprocess.DEVNULL,
                stdout=log,
                stderr=subprocess.STDOUT,
                env={**os.environ, "SKYLINE_CONF": str(self.config_file), **(env or {})},
                cwd=self.state,
                start_new_session=True,  # survives `skyline local up` returning
            )
        pidfile.write_text(f"{proc.pid}\n")

    def start_service(self, name: str) -> None:
        user = principals.service_user(name)
        self.secret(user)
        env = {"SKYLINE_AMQP_USER": user, "SKYLINE_AMQP_PASSWORD_FILE": str(self.secrets / user)}
        self._spawn(name, [sys.executable, "-m", f"services.{name}"], env)

    def start_builder(
        self, host: str, *, owner: str | None = None, program: Sequence[str] = ()
    ) -> None:
        """Start a builder agent; `owner` enrols it for another owner than the config's (made
        through the registry's admin API if need be), and `program` runs another agent program
        (the tests' cheating builder). It enrols with its owner's token."""
        workdir = self.state / "builders" / host
        argv = [sys.executable, *(program or ["-m", "services.builder"])]
        self._spawn(
            host,
            [*argv, *(["--owner", owner] if owner else [])],
            {
                "SKYLINE_BUILDER_HOST": host,
                "SKYLINE_BUILDER_WORKDIR": str(workdir),
                "SKYLINE_BUILDER_ENROL_TOKEN": self.owner_token(owner or self.owner),
            },
        )

    def stop_process(self, name: str, timeout: float = 20) -> None:
        pidfile = self.pids / f"{name}.pid"
        pid = _alive(pidfile)
        if pid:
            os.kill(pid, signal.SIGTERM)
            deadline = time.monotonic() + timeout
            while _alive(pidfile) and time.monotonic() < deadline:
                time.sleep(0.1)
            if _alive(pidfile):
                os.kill(pid, signal.SIGKILL)
        pidfile.unlink(missing_ok=True)

    def kill_process(self, name: str) -> None:
        """SIGKILL, for crash tests."""
        pid = _alive(self.pids / f"{name}.pid")
        if pid:
            os.kill(pid, signal.SIGKILL)
            while _alive(self.pids / f"{name}.pid"):
                time.sleep(0.05)

    # -- the whole system ---------------------------------------------------------------
    def up(
        self,
        builders: int = 1,
        progress: Progress = print,
        timeout: float = 90,
        *,
        lease_seconds: int | None = None,
    ) -> None:
        self.state.mkdir(parents=True, exist_ok=True)
        progress(f"starting RabbitMQ and PostgreSQL in {self.state}")
        self.rabbitmq.start()
        self.postgres.start()
        self.provision()
        self.write_config(builders, lease_seconds=lease_seconds)
        for name in SERVICES:
            self.start_service(name)
        for name in ("registry", "dispatcher", "collector"):
            self._wait(name, functools.partial(_http_ok, f"{self.url(name)}/healthz"), timeout)
        self._wait("verifier", lambda: b"verifier ready" in self._log("verifier"), timeout)
        progress(f"services up: {', '.join(SERVICES)}")
        self.ensure_owner()
        self.write_fm_configs()
        for i in range(1, builders + 1):
            self.start_builder(f"local-builder-{i}")
        for host in self.builder_names()[:builders]:
            self._wait(host, functools.partial(self.host_online, host), timeout)
        progress(f"{builders} builder(s) online")

    def ensure_owner(self) -> None:
        """The local packager, made through the registry's admin API like any owner: its
        token (kept in secrets/<owner>) is also its broker password."""
        self.owner_token(self.owner)

    def owner_token(self, owner: str) -> str:
        """`owner`'s token (kept in secrets/<owner>), the owner made through the registry's
        admin API the first time: builders enrol with it, packagers publish with it."""
        path = self.secrets / owner
        if path.exists():
            return path.read_text().strip()
        request = urllib.request.Request(
            f"{self.url('registry')}/api/v1/owners",
            data=json.dumps({"name": owner}).encode(),
            headers={
                "Authorization": f"Bearer {self.secret('registry-admin-token')}",
                "Content-Type": "application/json",
            },
        )
        with urllib.request.urlopen(request, timeout=30) as reply:
            token = json.load(reply)["token"]
        self.secrets.mkdir(parents=True, exist_ok=True, mode=0o700)
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        with os.fdopen(fd, "w") as f:
            f.write(token + "\n")
        return token

    def down(self, progress: Progress = print) -> None:
        for name in [*self.builder_names(), *reversed(SERVICES)]:
            self.stop_process(name)
        progress("services stopped")
        self.rabbitmq.stop()
        self.postgres.stop()
        progress("RabbitMQ and PostgreSQL stopped")

    def host_online(self, host: str) -> bool:
        try:
            with urllib.request.urlopen(f"{self.url('registry')}/api/v1/hosts/{host}") as r:
                return json.load(r)["state"] == "online"
        except OSError:
            return False

    def _log(self, name: str) -> bytes:
        path = self.logs / f"{name}.log"
        return path.read_bytes() if path.exists() else b""

    def _wait(self, name: str, ready: Callable[[], bool], timeout: float) -> None:
        deadline = time.monotonic() + timeout
        while not ready():
            if not _alive(self.pids / f"{name}.pid"):
                raise LocalStackError(f"{name} exited; its log ends with:\n{self._tail(name)}")
            if time.monotonic() > deadline:
                raise LocalStackError(
                    f"{name} not ready after {timeout:.0f} s:\n{self._tail(name)}"
                )
            time.sleep(0.2)

    def _tail(self, name: str, lines: int = 30) -> str:
        return "\n".join(self._log(name).decode(errors="replace").splitlines()[-lines:])


def _alive(pidfile: Path) -> int | None:
    """The pid in `pidfile` if that process still runs (and is not a zombie)."""
    try:
        pid = int(pidfile.read_text())
        with open(f"/proc/{pid}/stat") as f:
            state = f.read().rsplit(")", 1)[1].split()[0]
    except (OSError, ValueError, IndexError):
        return None
    if state == "Z":
        with contextlib.suppress(ChildProcessError):
            os.waitpid(pid, os.WNOHANG)  # reap our own child; harmless for others
        return None
    return pid


def _http_ok(url: str) -> bool:
    try:
        with urllib.request.urlopen(url, timeout=2) as response:
            return response.status == 200
    except OSError:
        return False
