"""Shared fixtures: real RabbitMQ and PostgreSQL on private loopback ports.

Tests talk to the broker as the principals of services/common/principals.py (`broker`
fixture: a service, a host, a packager, the monitor), never as the administrator, who only
creates those users through the management API.

The servers are started once per test session by the same code as `skyline local up`
(services/common/localstack.py), in a temp dir outside pytest's own: pytest resets its base dir
to mode 0700 whenever a session starts, which would lock the `postgres` user out.
Set SKYLINE_TEST_AMQP_URL (an administrator's), SKYLINE_TEST_BROKER_API_URL (its management
API) and SKYLINE_TEST_DATABASE_URL to use servers you run yourself instead.
"""

from __future__ import annotations

import dataclasses
import os
import shutil
import tempfile
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest

from services.common.broker_admin import Principals, new_password
from services.common.config import Config, load_config
from services.common.localstack import PostgreSQL, RabbitMQ

pytest_plugins = [
    "tests.system",  # the whole system, for tests/e2e and tests/security
    "tests.kojihub",  # a real Koji hub (koji_hub), for the content-generator import
]


@dataclasses.dataclass
class Servers:
    amqp_url: str  # the administrator's: for setting up principals only
    postgres: PostgreSQL | None
    database_url: str
    broker_api_url: str = ""


# One password per user for the whole session: a second URL for the same principal must not
# lock out a process that still connects with the first.
_PASSWORDS: dict[str, str] = {}


@pytest.fixture(scope="session")
def servers() -> Iterator[Servers]:
    amqp = os.environ.get("SKYLINE_TEST_AMQP_URL")
    db = os.environ.get("SKYLINE_TEST_DATABASE_URL")
    api = os.environ.get("SKYLINE_TEST_BROKER_API_URL", "")
    if amqp and db:
        yield Servers(amqp, None, db, api)
        return
    state = Path(tempfile.mkdtemp(prefix="skyline-servers-"))
    rabbitmq = RabbitMQ(state)
    postgres = PostgreSQL(state, fast=True)  # fsync off: tests need no crash durability
    rabbitmq.start()
    try:
        postgres.start()
        try:
            yield Servers(rabbitmq.url, postgres, postgres.url, rabbitmq.management_url)
        finally:
            postgres.stop()
    finally:
        rabbitmq.stop()
        shutil.rmtree(state, ignore_errors=True)


@pytest.fixture
def broker(servers: Servers) -> Principals:
    if not servers.broker_api_url:
        pytest.skip("SKYLINE_TEST_BROKER_API_URL is not set: principals cannot be created")
    # Users with exactly a principal's permissions; their URLs carry their credentials.
    return Principals.from_admin_url(
        servers.amqp_url,
        servers.broker_api_url,
        password=lambda name: _PASSWORDS.setdefault(name, new_password()),
    )


@pytest.fixture
def database_url(servers: Servers) -> Iterator[str]:
    """A fresh, empty database for one test."""
    if servers.postgres is None:
        yield servers.database_url  # a server you run: tests use unique schemas/ids there
        return
    name = f"t_{uuid.uuid4().hex[:12]}"
    url = servers.postgres.create_database(name)
    try:
        yield url
    finally:
        servers.postgres.drop_database(name)


@pytest.fixture
def config(servers: Servers, database_url: str, tmp_path: Path) -> Config:
    """A configuration pointing at the test servers, with every path under tmp_path."""
    base = load_config(env={})
    return dataclasses.replace(
        base,
        amqp_url=servers.amqp_url,
        database_url=database_url,
        base_dir=str(tmp_path),
    )
