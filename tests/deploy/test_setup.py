"""deploy/podman/setup.py: the deployment's secrets and RabbitMQ definitions (no podman)."""

from __future__ import annotations

import base64
import hashlib
import importlib.util
import json
import stat
from pathlib import Path

from services.common import principals

SETUP = Path(__file__).resolve().parents[2] / "deploy" / "podman" / "setup.py"
spec = importlib.util.spec_from_file_location("podman_setup", SETUP)
assert spec is not None and spec.loader is not None
setup = importlib.util.module_from_spec(spec)
spec.loader.exec_module(setup)


def password_matches(entry: dict, password: str) -> bool:
    raw = base64.b64decode(entry["password_hash"])
    salt, digest = raw[:4], raw[4:]
    return hashlib.sha256(salt + password.encode()).digest() == digest


def test_secrets_are_private_and_kept(tmp_path: Path) -> None:
    folder = tmp_path / "secrets"
    setup.main(["setup.py", str(folder)])
    first = {p.name: p.read_bytes() for p in folder.iterdir()}
    assert stat.S_IMODE(folder.stat().st_mode) == 0o700
    for path in folder.iterdir():
        assert stat.S_IMODE(path.stat().st_mode) == 0o600, path.name
    setup.main(["setup.py", str(folder)])
    again = {p.name: p.read_bytes() for p in folder.iterdir()}
    # Passwords, tokens and the key are made once; only the definitions (new salts) change.
    changed = {name for name in first if first[name] != again[name]}
    assert changed == {"rabbitmq-definitions.json"}
    # No shared enrolment token: builders enrol with their owners' tokens.
    assert "enrol-token" not in first


def test_definitions_are_the_permission_model(tmp_path: Path) -> None:
    setup.main(["setup.py", str(tmp_path)])
    defs = json.loads((tmp_path / "rabbitmq-definitions.json").read_text())
    users = {u["name"]: u for u in defs["users"]}
    expected = {principals.service_user(s) for s in principals.SERVICES}
    assert set(users) == {*expected, principals.MONITOR_USER, setup.ADMIN_USER}
    assert "guest" not in users
    for name, user in users.items():
        assert password_matches(
            user,
            (tmp_path / ("broker-admin" if name == setup.ADMIN_USER else name)).read_text().strip(),
        ), name
        assert user["tags"] == ("administrator" if name == setup.ADMIN_USER else "")
    perms = {p["user"]: p for p in defs["permissions"]}
    topics = {p["user"]: p for p in defs["topic_permissions"]}
    for service in principals.SERVICES:
        want = principals.service_permissions(service, "amq.topic")
        user = principals.service_user(service)
        assert (perms[user]["configure"], perms[user]["write"], perms[user]["read"]) == (
            want.configure,
            want.write,
            want.read,
        )
        assert (topics[user]["write"], topics[user]["read"]) == (want.topic_write, want.topic_read)
    assert topics[principals.MONITOR_USER]["write"] == principals.NOTHING
    assert setup.ADMIN_USER not in topics
    queues = {q["name"] for q in defs["queues"]}
    for service in principals.SERVICES:
        assert {f"skyline.{service}", f"skyline.{service}.dead"} <= queues
    bound = {(b["source"], b["destination"], b["routing_key"]) for b in defs["bindings"]}
    # The dispatcher hears of hosts even if the registry announced them before its first start.
    assert ("amq.topic", "skyline.dispatcher", "skyline.host.status") in bound
    assert ("skyline.dead-letter", "skyline.dispatcher.dead", "skyline.dispatcher") in bound
    # The database password file is libpq's format for the role the services log in as.
    pgpass = (tmp_path / "pgpass").read_text().strip()
    assert pgpass == "*:*:*:skyline:" + (tmp_path / "postgres-password").read_text().strip()
