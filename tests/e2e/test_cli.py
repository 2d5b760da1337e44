"""The `skyline` command against the whole system running (tests/system.py): each command
as a packager, a volunteer or an admin types it, and a bad input for each, with its exit
code and its one-line message (never a traceback)."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import time
import urllib.request
import uuid
from pathlib import Path

import pytest

from services.cli import common
from services.cli.localsystem import LocalSystem
from services.common.config import load_config

pytestmark = pytest.mark.e2e
REPO = Path(__file__).resolve().parents[2]


def skyline(
    *argv: str, conf: Path | None = None, env: dict[str, str] | None = None, cwd: Path = REPO
) -> subprocess.CompletedProcess[str]:
    full = [sys.executable, "-m", "services.cli", *(["--conf", str(conf)] if conf else []), *argv]
    environ = {k: v for k, v in os.environ.items() if k != "SKYLINE_CONF"}
    environ["PYTHONPATH"] = str(REPO)
    return subprocess.run(
        full, capture_output=True, text=True, env={**environ, **(env or {})}, cwd=cwd, timeout=600
    )


def failed(result: subprocess.CompletedProcess[str], code: int, words: str) -> None:
    """The command failed with `code` and one line on stderr that says `words`."""
    assert result.returncode == code, (result.returncode, result.stdout, result.stderr)
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and "Traceback" not in result.stderr, result.stderr
    assert lines[0].startswith("skyline: ") and words in lines[0], lines[0]


@pytest.fixture(scope="module")
def built(system: LocalSystem, example_srpm: Path) -> dict:
    """One build submitted with `skyline submit --json` and followed to its end."""
    result = skyline(
        "submit",
        str(example_srpm),
        "--scratch",
        "--priority",
        "10",
        "--json",
        conf=system.config_file,
    )
    assert result.returncode == 0, result.stderr
    out = json.loads(result.stdout)
    assert out["build"]["state"] == "complete"
    assert out["topic"] == f"skyline.build.request.{system.owner}"
    assert "published skyline.build.request" in result.stderr  # progress beside the JSON
    return out


def test_submit(built: dict) -> None:
    build = built["build"]
    assert build["scratch"] is True
    [task] = build["tasks"]
    assert task["state"] == "stored" and task["files"]


def test_submit_bad_inputs(system: LocalSystem, tmp_path: Path) -> None:
    failed(skyline("submit", "/nonexistent.src.rpm", conf=system.config_file), 2, "no such file")
    text = tmp_path / "notes.txt"
    text.write_text("hello")
    failed(skyline("submit", str(text), conf=system.config_file), 2, "expected a .src.rpm")
    failed(
        skyline("submit", str(text), "--priority", "5000", conf=system.config_file),
        2,
        "--priority must be from 0 to 1000",
    )
    spec = tmp_path / "broken.spec"
    spec.write_text("Name: broken\n")
    failed(skyline("submit", str(spec), conf=system.config_file), 2, "could not make an SRPM")


def test_submit_no_wait_then_watch_by_request_id(system: LocalSystem, example_srpm: Path) -> None:
    result = skyline(
        "submit", str(example_srpm), "--scratch", "--no-wait", "--json", conf=system.config_file
    )
    assert result.returncode == 0, result.stderr
    request_id = json.loads(result.stdout)["request_id"]
    watched = skyline("watch", request_id, "--json", conf=system.config_file)
    assert watched.returncode == 0, watched.stderr
    events = [json.loads(line) for line in watched.stdout.splitlines()]
    kinds = [e["event"] for e in events]
    assert kinds[0] == "build" and kinds[-1] == "end" and events[-1]["state"] == "complete"
    assert "lease" in kinds and "verdict" in kinds


def test_watch_and_status(system: LocalSystem, built: dict) -> None:
    build_id = str(built["build"]["build_id"])
    watched = skyline("watch", build_id, conf=system.config_file)
    assert watched.returncode == 0, watched.stderr
    assert "lease to local-builder-" in watched.stdout
    assert "accepted, agreed by local-builder-" in watched.stdout
    assert watched.stdout.strip().endswith(f"build {build_id} complete")

    status = skyline("status", build_id, conf=system.config_file)
    assert status.returncode == 0, status.stderr
    assert f"build {build_id} complete" in status.stdout
    assert ".noarch.rpm  sha256 " in status.stdout
    as_json = json.loads(skyline("status", build_id, "--json", conf=system.config_file).stdout)
    assert as_json["build_id"] == int(build_id) and as_json["state"] == "complete"


def test_a_failing_spec_fails_with_exit_code_1(system: LocalSystem, tmp_path: Path) -> None:
    """A packager's mistake, submitted as a spec: the CLI builds the SRPM, the build fails."""
    example = REPO / "examples" / "skyline-hello"
    for path in example.iterdir():
        if path.is_file():
            shutil.copy(path, tmp_path)
    spec = (example / "skyline-hello.spec").read_text()
    spec = spec.replace("Name:           skyline-hello", "Name:           skyline-clifail", 1)
    spec = spec.replace("%build\n", "%build\necho 'error: this does not build'\nexit 1\n")
    (tmp_path / "skyline-clifail.spec").write_text(spec)

    result = skyline("submit", str(tmp_path / "skyline-clifail.spec"), "--scratch",
                     conf=system.config_file)  # fmt: skip
    assert result.returncode == 1, result.stderr
    assert "built skyline-clifail-1.0-1" in result.stdout
    last = result.stdout.strip().splitlines()[-1]
    assert last.startswith("build ") and " failed: " in last
    build_id = last.split()[1]
    assert skyline("status", build_id, conf=system.config_file).returncode == 1
    assert skyline("watch", build_id, conf=system.config_file).returncode == 1


def test_watch_and_status_bad_inputs(system: LocalSystem) -> None:
    failed(skyline("status", "987654", conf=system.config_file), 4, "no build 987654")
    failed(skyline("watch", "987654", conf=system.config_file), 4, "no build 987654")
    failed(skyline("status", "seven", conf=system.config_file), 2, "not a build number")
    never_sent = str(uuid.uuid4())
    failed(skyline("watch", never_sent, "--timeout", "1", conf=system.config_file), 6, "gave up")
    failed(skyline("status", never_sent, conf=system.config_file), 4, "no build for request")
    unreachable = {"SKYLINE_CLI_DISPATCHER_URL": "http://127.0.0.1:9"}
    failed(skyline("status", "1", conf=system.config_file, env=unreachable), 3, "cannot reach")


def test_stats(system: LocalSystem, built: dict) -> None:
    summary = skyline("stats", conf=system.config_file)
    assert summary.returncode == 0, summary.stderr
    assert summary.stdout.startswith("builds: ")
    board = json.loads(skyline("stats", "leaderboard", "--json", conf=system.config_file).stdout)
    assert {h["host"] for h in board["hosts"]} & set(system.builder_names())
    builds = skyline("stats", "builds", "--limit", "5", conf=system.config_file)
    assert builds.returncode == 0 and built["build"]["nvr"] in builds.stdout


def test_stats_bad_inputs(system: LocalSystem) -> None:
    failed(skyline("stats", "builds", "--limit", "0", conf=system.config_file), 2, "--limit")
    bad = skyline("stats", "everything", conf=system.config_file)
    assert bad.returncode == 2 and "invalid choice" in bad.stderr  # argparse's own usage error
    unreachable = {"SKYLINE_CLI_COLLECTOR_URL": "http://127.0.0.1:9"}
    failed(skyline("stats", conf=system.config_file, env=unreachable), 3, "cannot reach")


def test_no_configuration_anywhere(tmp_path: Path) -> None:
    result = skyline("status", "1", env={"HOME": str(tmp_path)}, cwd=tmp_path)
    failed(result, 2, "no configuration file: tried")
    assert str(tmp_path / ".config/skyline/skyline.toml") in result.stderr


def make_owner(system: LocalSystem, name: str) -> str:
    config = load_config(system.config_file)
    request = urllib.request.Request(
        f"{system.url('registry')}/api/v1/owners",
        data=json.dumps({"name": name}).encode(),
        headers={
            "Authorization": f"Bearer {config.registry.admin_token}",
            "Content-Type": "application/json",
        },
    )
    with urllib.request.urlopen(request) as reply:
        return json.loads(reply.read())["token"]


def host_state(system: LocalSystem, host: str) -> str:
    with urllib.request.urlopen(f"{system.url('registry')}/api/v1/hosts/{host}") as reply:
        return str(json.loads(reply.read())["state"])


def test_host_enroll(system: LocalSystem, tmp_path: Path) -> None:
    owner = f"vol-{uuid.uuid4().hex[:8]}"
    token_file = tmp_path / "token"
    token_file.write_text(make_owner(system, owner) + "\n")
    out, workdir = tmp_path / "builder.toml", tmp_path / "work"
    argv = [
        "host", "enroll", "--registry", system.url("registry"), "--token-file", str(token_file),
        "--host", "cli-enrolled", "--out", str(out), "--workdir", str(workdir), "--json",
    ]  # fmt: skip
    result = skyline(*argv)
    assert result.returncode == 0, result.stderr
    reply = json.loads(result.stdout)
    assert reply["owner"] == owner and reply["trust"] == "untrusted"
    assert reply["start"] == f"skyline-builder --conf {out}"

    with urllib.request.urlopen(f"{system.url('registry')}/api/v1/hosts/cli-enrolled") as r:
        host = json.loads(r.read())
    assert host["owner"] == owner
    assert (workdir / "host.key").stat().st_mode & 0o077 == 0
    assert out.stat().st_mode & 0o077 == 0
    config = load_config(out)  # what skyline-builder will read
    assert config.builder.host == "cli-enrolled" and config.builder.owner == owner
    assert config.builder.collector_url == system.url("collector")
    assert config.amqp_url == system.amqp_url  # the broker's address, no credentials
    assert config.path(config.builder.key_file) == workdir / "host.key"

    # The builder starts from what enroll wrote and comes online.
    builder = subprocess.Popen(
        [str(Path(sys.executable).parent / "skyline-builder"), "--conf", str(out)],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
        env={k: v for k, v in os.environ.items() if not k.startswith("SKYLINE_")},
    )
    try:
        deadline = time.monotonic() + 90
        while host_state(system, "cli-enrolled") != "online":
            assert builder.poll() is None, builder.stderr.read().decode() if builder.stderr else ""
            assert time.monotonic() < deadline, "the enrolled builder never came online"
            time.sleep(0.5)
    finally:
        builder.terminate()
        builder.wait(timeout=60)

    # Run again: the file is there.
    failed(skyline(*argv), 2, "exists")
    # With --force, the same key re-enrols (the registry answers 200).
    again = skyline(*argv, "--force")
    assert again.returncode == 0, again.stderr


def test_host_enroll_bad_inputs(system: LocalSystem, tmp_path: Path) -> None:
    token_file = tmp_path / "token"
    token_file.write_text("x" * 43 + "\n")  # the right shape, but nobody holds it
    base = ["host", "enroll", "--registry", system.url("registry"), "--out",
            str(tmp_path / "b.toml"), "--workdir", str(tmp_path / "w")]  # fmt: skip
    failed(skyline(*base, "--token-file", str(token_file)), 5, "unknown or revoked owner token")
    failed(skyline(*base), 2, "no owner token")
    failed(skyline(*base, "--token-file", str(token_file), "--host", "Bad_Name"), 2, "host name")
    failed(skyline("host", "enroll", "--registry", "ftp://x", "--token", "t"), 2, "http(s) URL")
    failed(
        skyline("host", "enroll", "--registry", "http://127.0.0.1:9", "--token", "t",
                "--out", str(tmp_path / "c.toml")),
        3,
        "cannot reach",
    )  # fmt: skip


def test_host_container_line(system: LocalSystem) -> None:
    result = skyline("host", "container", "--registry", system.url("registry"), "--json")
    assert result.returncode == 0, result.stderr
    line = json.loads(result.stdout)["command"]
    assert line.startswith("podman run -d ") and system.url("registry") in line
    failed(skyline("host", "container", "--registry", "nope"), 2, "http(s) URL")


def test_exit_codes_are_documented() -> None:
    readme = (REPO / "README.md").read_text()
    for code in (common.FAILED, common.USAGE, common.UNREACHABLE, common.NOT_FOUND,
                 common.REFUSED, common.TIMEOUT):  # fmt: skip
        assert f"| {code} |" in readme
