"""A real Koji hub for tests: the source in ../shared/koji-hub/, served by waitress.

`koji_hub` (session-scoped) unpacks the tarball into a temp dir, creates a database in the
tests' PostgreSQL (tests/conftest.py), loads Koji's schema.sql, adds an admin and a
content-generator user (password login, the hub's documented bootstrap), starts
tests/kojihub_wsgi.py on a free loopback port and stops it by its PID. Tests skip with the
reason when the tarball, or what the hub needs to run (waitress, psycopg2, rpm), is absent.
See ../shared/koji-hub/README.md for what the hub needs and why.
"""

from __future__ import annotations

import dataclasses
import os
import shutil
import signal
import subprocess
import sys
import tarfile
import tempfile
import time
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest

from services.common.localstack import free_port

ROOT = Path(__file__).resolve().parent.parent
TARBALL = ROOT.parent / "shared" / "koji-hub" / "koji-src.tar.gz"
WRAPPER = Path(__file__).resolve().parent / "kojihub_wsgi.py"
CG_NAME = "skyline"
HUB_MODULES = ("waitress", "psycopg2", "defusedxml", "dateutil", "six", "requests", "rpm")
START_TIMEOUT = 60.0


@dataclasses.dataclass
class KojiHub:
    url: str  # the XML-RPC endpoint
    topurl: str  # GET /kojifiles/... (koji.PathInfo's topdir over HTTP)
    topdir: Path  # KojiDir on disk
    admin: tuple[str, str]
    cg_user: tuple[str, str]
    cg_name: str

    def session(self, user: tuple[str, str] | None = None):
        """A logged-in stock koji client session (the admin's unless `user` is given)."""
        import koji

        name, password = user or self.admin
        session = koji.ClientSession(self.url, {"user": name, "password": password})
        session.login()
        return session

    def cli(
        self, tmp: Path, *args: str, cwd: Path | None = None
    ) -> subprocess.CompletedProcess[str]:
        """Run the stock `koji` command against the hub as the admin (the CLI ignores
        user/password in a profile, so they go as options)."""
        conf = tmp / "koji-cli.conf"
        conf.write_text(
            f"[skyline-test]\nserver = {self.url}\ntopurl = {self.topurl}\nauthtype = password\n"
        )
        koji_cli = Path(sys.executable).parent / "koji"
        argv = [str(koji_cli), "-c", str(conf), "-p", "skyline-test"]
        argv += ["--authtype", "password", "--user", self.admin[0], "--password", self.admin[1]]
        return subprocess.run(
            [*argv, *args], capture_output=True, text=True, timeout=120, check=False, cwd=cwd
        )


def _missing_modules() -> list[str]:
    import importlib.util

    return [m for m in HUB_MODULES if importlib.util.find_spec(m) is None]


def _hub_members(tar: tarfile.TarFile) -> list[tarfile.TarInfo]:
    """Only what the hub runs from: its packages and the schema (a third of the tarball)."""
    keep = ("koji/koji/", "koji/kojihub/", "koji/schemas/schema.sql")
    return [m for m in tar.getmembers() if m.name.startswith(keep)]


def _wait_until_up(url: str, proc: subprocess.Popen[bytes], log: Path) -> None:
    import koji

    deadline = time.monotonic() + START_TIMEOUT
    while True:
        if proc.poll() is not None:
            raise RuntimeError(f"the Koji hub exited at start:\n{log.read_text()[-3000:]}")
        try:
            version = koji.ClientSession(url).getAPIVersion()
        except Exception as exc:
            if time.monotonic() > deadline:
                tail = log.read_text()[-3000:]
                raise RuntimeError(f"the Koji hub did not answer: {exc}\n{tail}") from exc
            time.sleep(0.1)  # polling for a condition (the hub answers), not a fixed wait
            continue
        if not isinstance(version, int):
            raise RuntimeError(f"the Koji hub answered {version!r}\n{log.read_text()[-3000:]}")
        return


@pytest.fixture(scope="session")
def koji_hub(servers) -> Iterator[KojiHub]:
    if not TARBALL.is_file():
        pytest.skip(f"no Koji hub source at {TARBALL} (../shared/koji-hub/ from the repo root)")
    if missing := _missing_modules():
        pytest.skip(f"the Koji hub needs the Python modules {', '.join(missing)} (dev extras)")
    if servers.postgres is None:
        pytest.skip("the Koji hub needs the tests' own PostgreSQL (SKYLINE_TEST_DATABASE_URL set)")
    postgres = servers.postgres
    work = Path(tempfile.mkdtemp(prefix="skyline-kojihub-"))
    dbname = f"koji_{uuid.uuid4().hex[:10]}"
    proc: subprocess.Popen[bytes] | None = None
    try:
        with tarfile.open(TARBALL) as tar:
            tar.extractall(work / "src", members=_hub_members(tar), filter="data")
        source = work / "src" / "koji"
        topdir = work / "kojidir"
        for sub in ("packages", "repos", "repos-dist", "work", "scratch", "vol"):
            (topdir / sub).mkdir(parents=True)
        postgres.create_database(dbname)
        _psql(postgres, dbname, "-f", str(source / "schemas" / "schema.sql"))
        admin, cg_user = ("kojiadmin", uuid.uuid4().hex), ("skyline-cg", uuid.uuid4().hex)
        _psql(
            postgres,
            dbname,
            "-c",
            "INSERT INTO users (name, password, status, usertype) VALUES"
            f" ('{admin[0]}', '{admin[1]}', 0, 0), ('{cg_user[0]}', '{cg_user[1]}', 0, 0);"
            " INSERT INTO user_perms (user_id, perm_id, creator_id)"
            " SELECT u.id, p.id, u.id FROM users u, permissions p"
            f" WHERE u.name = '{admin[0]}' AND p.name = 'admin';",
        )
        conf, conf_dir = work / "hub.conf", work / "hub.conf.d"
        conf_dir.mkdir()
        conf.write_text(
            "[hub]\n"
            f"DBName = {dbname}\nDBUser = skyline\nDBHost = 127.0.0.1\nDBPort = {postgres.port}\n"
            f"KojiDir = {topdir}\nCheckClientIP = False\nLoginCreatesUser = Off\n"
            "DisableNotifications = True\nLogLevel = WARNING\n"
        )
        port = free_port()
        log = work / "hub.log"
        env = {**os.environ, "PYTHONPATH": str(source)}
        # -P: not this folder on sys.path, whose kojihub.py (this file) is not the hub's.
        argv = [sys.executable, "-P", str(WRAPPER), str(port), str(conf), str(conf_dir)]
        with open(log, "wb") as out:
            proc = subprocess.Popen(
                [*argv, str(topdir)],
                stdout=out,
                stderr=subprocess.STDOUT,
                env=env,
                cwd=work,
                start_new_session=True,
            )
        url = f"http://127.0.0.1:{port}/kojihub"
        _wait_until_up(url, proc, log)
        hub = KojiHub(url, f"http://127.0.0.1:{port}/kojifiles", topdir, admin, cg_user, CG_NAME)
        hub.session().grantCGAccess(cg_user[0], CG_NAME, create=True)
        yield hub
    finally:
        if proc is not None and proc.poll() is None:
            os.kill(proc.pid, signal.SIGTERM)
            try:
                proc.wait(timeout=20)
            except subprocess.TimeoutExpired:
                os.kill(proc.pid, signal.SIGKILL)
                proc.wait()
        postgres.drop_database(dbname)
        shutil.rmtree(work, ignore_errors=True)


def _psql(postgres, dbname: str, *args: str) -> None:
    from services.common.localstack import _pg_bindir

    argv = [str(_pg_bindir() / "psql"), "-X", "-q", "-v", "ON_ERROR_STOP=1", "-h", "127.0.0.1"]
    argv += ["-p", str(postgres.port), "-U", "skyline", "-d", dbname, *args]
    subprocess.run(argv, check=True, capture_output=True, timeout=120)
