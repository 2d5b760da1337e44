"""GET /api/v1/farm, and `skyline host cloud-init` reading it from a live registry: the
admins' SSH keys end up on the VM, a wrong owner token is refused before any VM boots."""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import io
from pathlib import Path

import pytest
import yaml
from aiohttp.test_utils import TestClient

from services.cli.__main__ import main
from services.common.service import Runtime

pytestmark = pytest.mark.integration

ADMIN = "admin-secret"
KEYS = ["ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIHv admin@example.org"]


@pytest.fixture
def farm(runtime: Runtime) -> None:
    runtime.config = dataclasses.replace(
        runtime.config,
        registry=dataclasses.replace(
            runtime.config.registry,
            admin_token=ADMIN,
            admin_ssh_keys=KEYS,
            # A service's own URL may carry its password: the farm page must not show it.
            public_amqp_url="amqps://skyline-registry:secret@broker.example.org/%2F",
            public_collector_url="https://collector.example.org",
        ),
    )


async def test_farm_settings_are_public_and_without_credentials(
    farm: None, client: TestClient
) -> None:
    reply = await client.get("/api/v1/farm")
    assert reply.status == 200
    assert await reply.json() == {
        "admin_ssh_keys": KEYS,
        "amqp_url": "amqps://broker.example.org/%2F",
        "collector_url": "https://collector.example.org",
    }


def run_cli(argv: list[str]) -> tuple[int, str, str]:
    out, err = io.StringIO(), io.StringIO()
    with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
        try:
            main(argv)
        except SystemExit as exc:
            return int(exc.code or 0), out.getvalue(), err.getvalue()
    return 0, out.getvalue(), err.getvalue()


async def test_cloud_init_from_the_live_registry(
    farm: None, client: TestClient, tmp_path: Path
) -> None:
    made = await client.post(
        "/api/v1/owners", json={"name": "vera"}, headers={"Authorization": f"Bearer {ADMIN}"}
    )
    token = (await made.json())["token"]
    registry = str(client.make_url("")).rstrip("/")
    token_file = tmp_path / "token"
    token_file.write_text(token)

    argv = ["host", "cloud-init", "--registry", registry, "--token-file", str(token_file)]
    code, out, err = await asyncio.to_thread(run_cli, argv)
    assert code == 0, err
    data = yaml.safe_load(out)
    admin = next(u for u in data["users"] if isinstance(u, dict) and u["name"] == "skyline-admin")
    assert admin["ssh_authorized_keys"] == KEYS
    assert any(f"--registry {registry}" in c for c in data["runcmd"])
    token_files = [f for f in data["write_files"] if f["path"] == "/etc/skyline/owner-token"]
    assert token_files[0]["content"].strip() == token

    token_file.write_text("x" * 43)  # a token of the right shape that nobody holds
    code, out, err = await asyncio.to_thread(run_cli, argv)
    assert code == 5 and out == ""
    assert err.startswith("skyline: checking the owner token with the registry: unknown or")
