"""Private RabbitMQ and PostgreSQL servers as detached loopback processes, for `skyline local`
and pytest. Ports, pids and config live under the state dir, so a later process can stop them."""

import contextlib
import glob
import json
import os
import pwd
import random
import secrets
import shlex
import signal
import socket
import subprocess
import time
from pathlib import Path
from typing import Any
from urllib.parse import quote

from .bus import MAX_MESSAGE_BYTES  # the broker refuses what the bus would refuse to send

LOOPBACK = "127.0.0.1"
# The real scripts: the /usr/sbin wrappers `su rabbitmq`, which drops our env and cookie.
RMQ_BIN_DIRS = ("/usr/lib/rabbitmq/bin", "/usr/lib64/rabbitmq/bin")
# AMQP port, +1 dist, +2 private epmd, +3..+9 rabbitmqctl's own dist ports, +10 management API
RMQ_SPAN = 11
Proc = tuple[int | None, str]  # (pid from a pid file, marker expected in its command line)


class LocalStackError(RuntimeError):
    """A local server could not be found, started or stopped."""


def free_port(span: int = 1, low: int = 20000, high: int = 32000) -> int:
    """Random p with p..p+span-1 bindable on loopback (below the kernel's ephemeral range)."""
    for _ in range(200):
        base = random.randint(low, high - span)
        with contextlib.ExitStack() as stack, contextlib.suppress(OSError):
            for port in range(base, base + span):
                stack.enter_context(socket.socket()).bind((LOOPBACK, port))
            return base
    raise LocalStackError(f"no {span} consecutive free ports in {low}..{high}")


def _tail(*paths: Path, lines: int = 25) -> str:
    out = [
        f"--- {p} ---\n" + "\n".join(p.read_text(errors="replace").splitlines()[-lines:])
        for p in paths
        if p.is_file()
    ]
    return "\n".join(out) or "(no server log written)"


def _run(argv: list[str], logs: tuple[Path, ...] = (), timeout: float = 120, **kw: Any) -> str:
    """Run a command; on failure raise with its stderr and the tail of the server logs."""
    res = subprocess.run(argv, capture_output=True, text=True, timeout=timeout, **kw)
    if res.returncode:
        msg = f"{' '.join(argv)} failed ({res.returncode}): {(res.stderr or res.stdout).strip()}"
        raise LocalStackError(msg + (f"\n{_tail(*logs)}" if logs else ""))
    return str(res.stdout)


def _read_json(path: Path) -> dict[str, Any]:
    with contextlib.suppress(OSError, ValueError):
        return dict(json.loads(path.read_text()))
    return {}


def _read_pid(path: Path) -> int | None:
    with contextlib.suppress(OSError, ValueError, IndexError):
        return int(path.read_text().split()[0])
    return None


def _alive(pid: int | None, marker: str) -> bool:
    """pid runs and its command line has marker (so a recycled pid is not taken for ours)."""
    if not pid:
        return False
    with contextlib.suppress(ChildProcessError):
        os.waitpid(pid, os.WNOHANG)  # reap it if it is our own exited child
    try:
        state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
        cmdline = Path(f"/proc/{pid}/cmdline").read_bytes().replace(b"\0", b" ").decode()
    except (OSError, IndexError, UnicodeDecodeError):
        return False
    # Zombies count as dead: PID 1 in containers often never reaps orphaned servers.
    return state not in ("Z", "X") and marker in cmdline


def _terminate(procs: list[Proc], sig: signal.Signals, timeout: float) -> bool:
    """Send sig to those still alive; True once all are gone within timeout."""
    for pid, marker in procs:
        if pid and _alive(pid, marker):
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, sig)
    deadline = time.monotonic() + timeout
    while any(_alive(*p) for p in procs) and time.monotonic() < deadline:
        time.sleep(0.1)
    return not any(_alive(*p) for p in procs)


def _clean_env(*prefixes: str) -> dict[str, str]:
    # Inherited RABBITMQ_*/ERL_*/PG* settings would silently redirect our servers or clients.
    return {k: v for k, v in os.environ.items() if not k.startswith(prefixes)}


class RabbitMQ:
    def __init__(
        self,
        state_dir: Path,
        port: int | None = None,
        user: str = "skyline",
        password: str = "skyline",
    ) -> None:
        self.dir = Path(state_dir).resolve() / "rabbitmq"
        self.user, self.password = user, password
        saved = _read_json(self.dir / "ports.json")
        self.port: int = port or saved.get("port") or free_port(RMQ_SPAN)
        # The node name names the mnesia dir, so keep it even if the port changes later.
        self.node: str = saved.get("node") or f"skyline-{self.port}@localhost"
        self.pidfile = self.dir / "rabbit.pid"  # beam pid, written by the server itself
        self._children: list[subprocess.Popen[bytes]] = []  # kept so they are reaped, not warned

    @property
    def url(self) -> str:
        """The administrator's AMQP URL: for setting the broker up, never for a service."""
        return self.url_for(self.user, self.password)

    def url_for(self, user: str, password: str) -> str:
        auth = f"{quote(user, safe='')}:{quote(password, safe='')}"
        return f"amqp://{auth}@{LOOPBACK}:{self.port}/%2F"

    @property
    def management_url(self) -> str:
        """The management HTTP API (loopback only), through which users are created."""
        return f"http://{LOOPBACK}:{self.port + 10}"

    def _bin(self, name: str) -> str:
        for d in RMQ_BIN_DIRS:
            if os.access(Path(d, name), os.X_OK):
                return str(Path(d, name))
        raise LocalStackError(f"{name} not in {RMQ_BIN_DIRS}; install the rabbitmq-server package")

    def _env(self) -> dict[str, str]:
        d, p = self.dir, self.port
        return _clean_env("RABBITMQ_", "ERL_") | {
            "RABBITMQ_NODENAME": self.node,
            "RABBITMQ_NODE_IP_ADDRESS": LOOPBACK,
            "RABBITMQ_DIST_PORT": str(p + 1),  # default NODE_PORT+20000 may be taken
            "ERL_EPMD_PORT": str(p + 2),  # private epmd, never the shared 4369 ...
            "ERL_EPMD_ADDRESS": LOOPBACK,  # ... and not on 0.0.0.0
            "ERL_CRASH_DUMP": str(d / "log" / "erl_crash.dump"),  # not into the caller's cwd
            "RABBITMQ_CTL_DIST_PORT_MIN": str(p + 3),
            "RABBITMQ_CTL_DIST_PORT_MAX": str(p + 9),
            "RABBITMQ_MNESIA_BASE": str(d / "mnesia"),
            "RABBITMQ_LOG_BASE": str(d / "log"),
            "RABBITMQ_PID_FILE": str(self.pidfile),
            "HOME": str(d / "home"),  # has the cookie
            "RABBITMQ_NODE_PORT": str(p),
            "RABBITMQ_CONFIG_FILE": str(d / "rabbitmq.conf"),
            "RABBITMQ_ADVANCED_CONFIG_FILE": str(d / "advanced.config"),
            "RABBITMQ_ENABLED_PLUGINS_FILE": str(d / "enabled_plugins"),
            "RABBITMQ_CONF_ENV_FILE": str(d / "rabbitmq-env.conf"),  # else /etc/rabbitmq's is read
            "RABBITMQ_SERVER_ADDITIONAL_ERL_ARGS": "-kernel inet_dist_use_interface {127,0,0,1}",
        }

    def _procs(self) -> tuple[Proc, Proc]:  # (beam, wrapper script) as their pid files say
        return (
            (_read_pid(self.pidfile), str(self.dir)),
            (_read_pid(self.dir / "wrapper.pid"), "rabbitmq-server"),
        )

    def is_running(self) -> bool:
        return _alive(*self._procs()[0])

    def ctl(self, *args: str) -> str:
        return _run([self._bin("rabbitmqctl"), *args], env=self._env())

    def _write_config(self) -> None:
        for sub in ("home", "mnesia", "log"):
            (self.dir / sub).mkdir(parents=True, exist_ok=True)
        files = {
            "ports.json": json.dumps({"port": self.port, "node": self.node}),
            "rabbitmq-env.conf": "",
            "advanced.config": "[].",
            # The management API is how the registry creates hosts' broker users.
            "enabled_plugins": "[rabbitmq_management].",
            "rabbitmq.conf": f"listeners.tcp.default = {LOOPBACK}:{self.port}\n"
            f"management.tcp.ip = {LOOPBACK}\nmanagement.tcp.port = {self.port + 10}\n"
            f"default_user = {self.user}\ndefault_pass = {self.password}\n"
            "default_user_tags.administrator = true\n"
            f"max_message_size = {MAX_MESSAGE_BYTES}\n"
            "loopback_users = none\nlog.console = false",
        }
        for name, text in files.items():
            (self.dir / name).write_text(text + "\n")
        cookie = self.dir / "home" / ".erlang.cookie"
        if not cookie.exists():  # made up front: server and CLI racing to create it would differ
            cookie.write_text(secrets.token_hex(16).upper())
            cookie.chmod(0o400)

    def start(self, timeout: float = 90) -> None:
        if self.is_running():
            return
        server, ctl = self._bin("rabbitmq-server"), self._bin("rabbitmqctl")
        self._write_config()
        self.pidfile.unlink(missing_ok=True)  # stale after a crash; `rabbitmqctl wait` reads it
        with open(self.dir / "wrapper.out", "ab") as out:
            proc = subprocess.Popen(
                [server],
                env=self._env(),
                cwd=self.dir,
                stdout=out,
                stderr=subprocess.STDOUT,
                stdin=subprocess.DEVNULL,
                start_new_session=True,
            )  # outlive `skyline local up`
        self._children.append(proc)
        (self.dir / "wrapper.pid").write_text(f"{proc.pid}\n")
        # `rabbitmqctl wait` returns once the pid file exists and the rabbit app runs; we also
        # watch the server so that a failed boot is reported at once, not after the timeout.
        waiter = subprocess.Popen(
            [ctl, "wait", "--timeout", str(int(timeout)), str(self.pidfile)],
            env=self._env(),
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
        )
        deadline = time.monotonic() + timeout
        while waiter.poll() is None and proc.poll() is None and time.monotonic() < deadline:
            time.sleep(0.1)
        waiter.kill()  # a no-op if it has finished
        said = waiter.communicate()[0].decode(errors="replace").strip() or "timed out"
        if waiter.returncode != 0:
            why = f"server exited ({proc.returncode})" if proc.poll() is not None else said
            self.stop()
            logs = self.dir / "wrapper.out", self.dir / "log" / f"{self.node}.log"
            raise LocalStackError(f"RabbitMQ ({self.port}) did not start: {why}\n{_tail(*logs)}")

    def stop(self) -> None:
        beam, wrapper = self._procs()
        # The VM traps SIGTERM and stops rabbit cleanly like `rabbitmqctl stop`, but needs no
        # working epmd or cookie. The wrapper script exits with it (or on SIGTERM).
        clean = _terminate([beam], signal.SIGTERM, 60) and _terminate([wrapper], signal.SIGTERM, 5)
        if not clean and not _terminate([beam, wrapper], signal.SIGKILL, 10):
            raise LocalStackError(f"RabbitMQ processes in {self.dir} did not exit")
        # epmd daemonizes (Erlang, or rabbitmqctl if none is up, starts it): no pid is ours. Ask
        # the one on our private port to exit; retry while it still lists a SIGKILLed node.
        for _ in range(50):
            with contextlib.suppress(OSError, subprocess.SubprocessError):
                res = subprocess.run(
                    ["epmd", "-kill"], env=self._env(), capture_output=True, text=True, timeout=10
                )
                if "not allowed" in res.stdout:
                    time.sleep(0.2)
                    continue
            break
        for name in ("rabbit.pid", "wrapper.pid"):
            (self.dir / name).unlink(missing_ok=True)

    def kill(self) -> None:
        """Crash the node (SIGKILL, no clean shutdown) to test recovery; then drop epmd."""
        _terminate([self._procs()[0]], signal.SIGKILL, 10)
        self.stop()  # waits for the beam to vanish, then reaps the wrapper and stops epmd


def _pg_bindir() -> Path:
    # Debian keeps server binaries per major version (newest first); Fedora uses /usr/bin.
    debian = glob.glob("/usr/lib/postgresql/*/bin")
    debian.sort(key=lambda d: [int(x) for x in Path(d).parent.name.split(".") if x.isdigit()])
    dirs = [*reversed(debian), "/usr/bin"]
    with contextlib.suppress(OSError, LocalStackError):  # pg_config may be absent or client-only
        dirs.insert(0, _run(["pg_config", "--bindir"], timeout=10).strip())
    for d in dirs:
        if all(os.access(Path(d, b), os.X_OK) for b in ("initdb", "pg_ctl", "psql")):
            return Path(d)
    raise LocalStackError(
        "PostgreSQL server binaries (initdb, pg_ctl) not found; install "
        "postgresql (Debian) or postgresql-server (Fedora)"
    )


class PostgreSQL:
    def __init__(self, state_dir: Path, port: int | None = None, fast: bool = False) -> None:
        self.dir = Path(state_dir).resolve() / "postgres"
        self.data, self.log = self.dir / "data", self.dir / "server.log"
        self.fast = fast  # fsync off etc.: only for throwaway test clusters
        self.port: int = port or _read_json(self.dir / "ports.json").get("port") or free_port()

    @property
    def url(self) -> str:
        return self.database_url("skyline")

    def database_url(self, name: str) -> str:
        return f"postgresql://skyline@{LOOPBACK}:{self.port}/{quote(name, '')}"

    def is_running(self) -> bool:
        return _alive(_read_pid(self.data / "postmaster.pid"), str(self.data))

    def _server(self, *cmd: str | Path, timeout: float = 120) -> None:
        """Run a server binary as postgres when we are root (initdb refuses root), else as us."""
        argv = [str(c) for c in cmd]
        if os.geteuid() == 0:
            argv = ["runuser", "-u", "postgres", "--", *argv]
            # postgres must traverse every parent (o+x, not r; temp dirs are often 0700 root),
            # redone each call as a starting pytest session resets /tmp/pytest-of-<user> to 0700.
            for parent in self.dir.parents:
                if not (mode := parent.stat().st_mode) & 0o001:
                    parent.chmod(mode | 0o001)
        _run(
            argv, (self.log,), timeout, cwd=self.dir, env=_clean_env("PG"), start_new_session=True
        )  # the postmaster must outlive `skyline local up`

    def start(self, timeout: float = 60) -> None:
        if self.is_running():
            return
        bindir = _pg_bindir()
        self.dir.mkdir(parents=True, exist_ok=True)
        if os.geteuid() == 0:  # the server runs as postgres (the package made that user)
            pg = pwd.getpwnam("postgres")
            os.chown(self.dir, pg.pw_uid, pg.pw_gid)
        (self.dir / "ports.json").write_text(json.dumps({"port": self.port}) + "\n")
        if not (self.data / "PG_VERSION").exists():
            # trust is fine: the server listens on loopback only and its socket dir is private.
            self._server(
                bindir / "initdb",
                "-D",
                self.data,
                "-U",
                "skyline",
                "-A",
                "trust",
                "-E",
                "UTF8",
                "--locale=C.UTF-8",
                *(["--no-sync"] if self.fast else []),
            )
        # pg_ctl hands -o to a shell; -k keeps the socket out of the shared /var/run dir.
        opts = f"-c listen_addresses={LOOPBACK} -p {self.port} -k {shlex.quote(str(self.dir))}"
        if self.fast:
            opts += " -c fsync=off -c synchronous_commit=off -c full_page_writes=off"
        self._server(
            bindir / "pg_ctl",
            "-D",
            self.data,
            "-l",
            self.log,
            "-w",
            "-o",
            opts,
            "-t",
            str(int(timeout)),
            "start",
            timeout=timeout + 10,
        )
        if not self._psql("SELECT 1 FROM pg_database WHERE datname = 'skyline'").strip():
            self._psql("CREATE DATABASE skyline")

    def stop(self) -> None:
        if self.is_running():  # pg_ctl -w returns once the postmaster has removed its pid file
            self._server(
                _pg_bindir() / "pg_ctl",
                "-D",
                self.data,
                "-m",
                "fast",
                "-w",
                "-t",
                "60",
                "stop",
                timeout=70,
            )

    def _psql(self, sql: str) -> str:
        return _run(
            [
                str(_pg_bindir() / "psql"),
                "-X",
                "-q",
                "-tA",
                "-v",
                "ON_ERROR_STOP=1",
                "-h",
                LOOPBACK,
                "-p",
                str(self.port),
                "-U",
                "skyline",
                "-d",
                "postgres",
                "-c",
                sql,
            ],
            (self.log,),
            env=_clean_env("PG"),
        )

    def create_database(self, name: str) -> str:
        self._psql('CREATE DATABASE "{}"'.format(name.replace('"', '""')))
        return self.database_url(name)

    def drop_database(self, name: str) -> None:
        self._psql('DROP DATABASE IF EXISTS "{}" WITH (FORCE)'.format(name.replace('"', '""')))
