"""Make the secrets of a podman-compose deployment (once), and RabbitMQ's definitions from them.

    python3 deploy/podman/setup.py [SECRETS_DIR]     # default: deploy/podman/secrets

Run it from a checkout with Skyline installed (`.venv/bin/python`), or in the service image:
    podman run --rm -v ./secrets:/secrets:Z localhost/skyline-service \\
        python3 /opt/skyline/deploy/setup.py /secrets

Every file is made only when missing (mode 0600, the folder 0700), so running it again keeps
the passwords; the definitions are rewritten each time from principals.py, the one table of who
may say what, so the broker's permissions always match the consumers' sender checks. The
definitions hold password hashes, never passwords.
"""

from __future__ import annotations

import base64
import hashlib
import importlib
import json
import os
import secrets
import sys
from collections.abc import Callable
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[2]))  # a checkout's services/

from services.common import principals
from services.common.broker_admin import queue_arguments
from services.common.config import BusConfig
from services.common.signing import load_or_create_key, public_key_b64

ADMIN_USER = "skyline-admin"  # the management API's administrator: only the registry uses it
EXCHANGE = "amq.topic"
VHOST = "/"
# Secrets the registry reads as environment variables: the containers' entrypoint exports
# each file mounted in /run/skyline-env/ under its file name. Builders enrol with their
# owners' tokens, which the registry makes at run time (the compose file's `owners` service).
ENV_SECRETS = ("registry-admin-token",)


def make_secret(folder: Path, name: str, make: Callable[[], str]) -> str:
    path = folder / name
    if not path.exists():
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        with os.fdopen(fd, "w") as f:
            f.write(make() + "\n")
    return path.read_text().strip()


def password() -> str:
    return secrets.token_urlsafe(32)


def rabbit_hash(pw: str) -> str:
    """RabbitMQ's rabbit_password_hashing_sha256: base64(salt + sha256(salt + password))."""
    salt = secrets.token_bytes(4)
    return base64.b64encode(salt + hashlib.sha256(salt + pw.encode()).digest()).decode()


def service_bindings(service: str) -> list[str]:
    """The routing keys `service` binds its queue to (from its handler table)."""
    return importlib.import_module(f"services.{service}.__main__").SERVICE.routing_keys()


def definitions(folder: Path) -> dict:
    """Users, permissions, topic permissions and the services' queues of the permission model,
    with their bindings: a message published before its consumer's first start (a builder's
    enrolment announced before the dispatchers are up) waits in the queue instead of being
    dropped as unroutable."""
    users = [(ADMIN_USER, make_secret(folder, "broker-admin", password), "administrator", None)]
    for service in principals.SERVICES:
        user = principals.service_user(service)
        perms = principals.service_permissions(service, EXCHANGE)
        users.append((user, make_secret(folder, user, password), "", perms))
    monitor = principals.MONITOR_USER
    users.append(
        (
            monitor,
            make_secret(folder, monitor, password),
            "",
            principals.monitor_permissions(EXCHANGE),
        )
    )
    admin_perms = {"configure": ".*", "write": ".*", "read": ".*"}
    limit = BusConfig().delivery_limit
    queues = []
    for service in principals.SERVICES:
        name = principals.service_queue(service)
        # The same arguments the services declare their queues with (bus.py), so a
        # service's own declaration matches the one made here.
        queues.append({"name": name, "arguments": queue_arguments(name, limit)})
        queues.append({"name": f"{name}.dead", "arguments": {"x-queue-type": "quorum"}})
    dlx = principals.DEAD_LETTER_EXCHANGE
    return {
        "vhosts": [{"name": VHOST}],
        "users": [
            {
                "name": name,
                "password_hash": rabbit_hash(pw),
                "hashing_algorithm": "rabbit_password_hashing_sha256",
                "tags": tags,
            }
            for name, pw, tags, _ in users
        ],
        "permissions": [{"user": ADMIN_USER, "vhost": VHOST, **admin_perms}]
        + [
            {
                "user": name,
                "vhost": VHOST,
                "configure": p.configure,
                "write": p.write,
                "read": p.read,
            }
            for name, _, _, p in users
            if p is not None
        ],
        "topic_permissions": [
            {
                "user": name,
                "vhost": VHOST,
                "exchange": EXCHANGE,
                "write": p.topic_write,
                "read": p.topic_read,
            }
            for name, _, _, p in users
            if p is not None
        ],
        "exchanges": [
            {
                "name": dlx,
                "vhost": VHOST,
                "type": "direct",
                "durable": True,
                "auto_delete": False,
                "internal": False,
                "arguments": {},
            }
        ],
        "queues": [{"vhost": VHOST, "durable": True, "auto_delete": False, **q} for q in queues],
        "bindings": [
            {
                "source": EXCHANGE,
                "vhost": VHOST,
                "destination": principals.service_queue(service),
                "destination_type": "queue",
                "routing_key": key,
                "arguments": {},
            }
            for service in principals.SERVICES
            for key in service_bindings(service)
        ]
        + [
            {
                "source": dlx,
                "vhost": VHOST,
                "destination": f"{q['name']}",
                "destination_type": "queue",
                "routing_key": q["name"].removesuffix(".dead"),
                "arguments": {},
            }
            for q in queues
            if q["name"].endswith(".dead")
        ],
    }


def main(argv: list[str]) -> None:
    folder = Path(argv[1] if len(argv) > 1 else Path(__file__).parent / "secrets")
    folder.mkdir(mode=0o700, parents=True, exist_ok=True)
    folder.chmod(0o700)  # also when it already existed
    db_password = make_secret(folder, "postgres-password", password)
    # libpq's password file format, which asyncpg reads through $PGPASSFILE.
    make_secret(folder, "pgpass", lambda: f"*:*:*:skyline:{db_password}")
    for name in ENV_SECRETS:
        make_secret(folder, name, password)
    # The farm's own builder: its key is listed in the registry's core keys, as
    # `skyline local up` does for its local builders, so it may take official builds.
    key = load_or_create_key(folder / "builder.key")
    (folder / "core-keys").write_text(public_key_b64(key) + "\n")
    (folder / "core-keys").chmod(0o600)
    path = folder / "rabbitmq-definitions.json"
    path.touch(mode=0o600)
    path.write_text(json.dumps(definitions(folder), indent=1) + "\n")
    print(f"secrets and broker definitions in {folder}")


if __name__ == "__main__":
    main(sys.argv)
