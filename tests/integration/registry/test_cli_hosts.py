"""`skyline hosts`, `skyline host ...` and `skyline owner ...` run as commands against a
running registry (real RabbitMQ and PostgreSQL): output, exit status, errors."""

from __future__ import annotations

import asyncio
import contextlib
import io
import json
import os
import sys
from pathlib import Path

import pytest
from test_qos_bus import ADMIN, running_registry

from services.cli import __main__ as cli

pytestmark = pytest.mark.integration
REPO = Path(__file__).resolve().parents[3]


async def skyline(conf: Path, *argv: str) -> tuple[int, str, str]:
    """`skyline --conf conf argv...` run by the CLI's own main() in a thread (a process each
    costs seconds of imports; `command` runs a few as real processes): (exit status, stdout,
    stderr)."""

    def run() -> tuple[int, str, str]:
        out, err = io.StringIO(), io.StringIO()
        with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
            try:
                cli.main(["--conf", str(conf), *argv])
            except SystemExit as exc:
                code = exc.code if isinstance(exc.code, int) else 1
            else:
                code = 0
        return code, out.getvalue(), err.getvalue()

    return await asyncio.to_thread(run)


async def command(conf: Path, *argv: str) -> tuple[int, str, str]:
    """Run `python -m services.cli --conf conf argv...`; (exit status, stdout, stderr)."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("SKYLINE_")}
    proc = await asyncio.create_subprocess_exec(
        sys.executable,
        "-m",
        "services.cli",
        "--conf",
        str(conf),
        *argv,
        cwd=REPO,
        env=env,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
    )
    out, err = await asyncio.wait_for(proc.communicate(), 60)
    assert proc.returncode is not None
    return proc.returncode, out.decode(), err.decode()


def write_conf(path: Path, url: str, admin_token: str | None) -> Path:
    listen = url.removeprefix("http://")
    token = f'admin_token = "{admin_token}"\n' if admin_token is not None else ""
    path.write_text(f'[registry]\nlisten = "{listen}"\n{token}')
    return path


async def test_the_host_and_owner_commands(config, broker, tmp_path: Path) -> None:
    async with running_registry(config, broker) as farm:
        await farm.enrol("fast-1", "alice")
        await farm.enrol("slow-1", "bob")
        admin = write_conf(tmp_path / "admin.toml", farm.url, ADMIN)

        code, out, err = await command(admin, "hosts")
        assert code == 0, err
        lines = out.splitlines()
        assert lines[0].split()[:5] == ["HOST", "OWNER", "STATE", "TRUST", "QOS"]
        assert [line.split()[0] for line in lines[1:]] == ["fast-1", "slow-1"]
        code, out, _ = await skyline(admin, "hosts", "--owner", "bob", "--offline", "--json")
        assert code == 0 and [h["host"] for h in json.loads(out)["hosts"]] == ["slow-1"]
        code, out, _ = await skyline(admin, "hosts", "--online")
        assert code == 0 and len(out.splitlines()) == 1  # the header only

        code, out, err = await skyline(admin, "host", "show", "fast-1")
        assert code == 0, err
        assert "host fast-1 (owner alice, standing good)" in out
        assert "QoS score 0.48" in out and "trust untrusted" in out
        assert "recent builds: none" in out

        # Owners and sponsors.
        code, out, err = await skyline(admin, "owner", "create", "carol", "--max-hosts", "3")
        assert code == 0, err
        carol_token = out.rsplit(" ", 1)[1].strip()
        token_file = tmp_path / "carol.token"
        token_file.write_text(carol_token + "\n")
        code, out, err = await skyline(
            admin, "owner", "invite", "dave", "--token-file", str(token_file)
        )
        assert code == 0, err
        assert out.startswith("owner dave invited by carol (sponsored)")
        code, out, _ = await skyline(admin, "owner", "tree")
        assert code == 0
        assert "carol: good" in out and "  dave: sponsored, sponsor carol" in out
        code, out, _ = await skyline(admin, "owner", "max-hosts", "dave", "5")
        assert (code, out.strip()) == (0, "owner dave may enrol 5 host(s)")
        code, out, _ = await skyline(
            admin, "owner", "fraud", "dave", "--detail", "trojaned build", "--host", "slow-1"
        )
        assert code == 0 and "dave: probation" in out and "sponsor carol: probation" in out
        code, out, _ = await skyline(admin, "owner", "show", "dave")
        assert code == 0 and "fraud" in out and "trojaned build" in out

        # Admin acts on hosts.
        code, out, _ = await skyline(admin, "host", "quarantine", "slow-1")
        assert (code, out.strip()) == (0, "host slow-1 is quarantined")
        code, out, _ = await skyline(admin, "host", "release", "slow-1")
        assert (code, out.strip()) == (0, "host slow-1 is offline")
        code, out, _ = await skyline(admin, "host", "revoke", "slow-1")
        assert (code, out.strip()) == (0, "host slow-1 is quarantined (revoked)")
        code, out, _ = await skyline(admin, "host", "show", "slow-1")
        assert code == 0 and "revoked at" in out and "(quarantined -> offline" not in out

        # Refusals: the registry's JSON error and HTTP status; exit 4 (not found) or 5.
        for argv, message in [
            (["host", "show", "nobody"], "no host named 'nobody' is enrolled (HTTP 404)"),
            (["host", "revoke", "nobody"], "no host named 'nobody' is enrolled (HTTP 404)"),
            (["host", "release", "slow-1"], "host slow-1 is revoked"),
            (["hosts", "--arch", "sparc"], "arch must be one of"),
            (["owner", "create", "carol"], "owner carol exists"),
            (["owner", "create", "al ice"], "HTTP 400"),
            (["owner", "show", "nobody"], "no owner named 'nobody' (HTTP 404)"),
            (["owner", "invite", "erin", "--token-file", str(token_file)], "may not sponsor"),
        ]:
            code, out, err = await skyline(admin, *argv)
            assert code == (4 if "HTTP 404" in message else 5), (argv, out, err)
            assert err.startswith("skyline: registry: ") and message in err, (argv, err)

        wrong = write_conf(tmp_path / "wrong.toml", farm.url, "not-the-admin-token")
        code, _, err = await command(wrong, "host", "quarantine", "fast-1")
        assert code == 5 and "admin token" in err and "(HTTP 401)" in err
        none = write_conf(tmp_path / "none.toml", farm.url, None)
        code, _, err = await skyline(none, "owner", "tree")
        assert code == 2 and "needs the registry's admin token" in err
        code, _, err = await skyline(none, "owner", "invite", "erin")
        assert code == 2 and "--token-file" in err
        code, _, err = await command(none, "hosts", "--registry", "http://127.0.0.1:9")
        assert code == 3 and "cannot reach the registry at http://127.0.0.1:9" in err
        code, _, err = await skyline(admin, "owner", "max-hosts", "dave", "many")
        assert code == 2 and "'default'" in err
        code, _, err = await skyline(admin, "host", "show")  # argparse: a usage error
        assert code == 2 and "usage:" in err
