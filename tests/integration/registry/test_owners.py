"""Owner accounts against a real database: the admin API, tokens, whoami."""

from __future__ import annotations

import dataclasses
from typing import Any

import pytest
from aiohttp.test_utils import TestClient

from services.common.service import Runtime
from services.common.tokens import token_sha256

pytestmark = pytest.mark.integration

ADMIN = "admin-secret"


def configure(runtime: Runtime, **registry: Any) -> None:
    config = runtime.config
    runtime.config = dataclasses.replace(
        config, registry=dataclasses.replace(config.registry, **registry)
    )


@pytest.fixture
def admin(runtime: Runtime) -> dict[str, str]:
    configure(runtime, admin_token=ADMIN)
    return {"Authorization": f"Bearer {ADMIN}"}


async def call(
    client: TestClient, method: str, path: str, status: int, **kwargs: Any
) -> dict[str, Any]:
    response = await client.request(method, path, **kwargs)
    assert response.status == status, await response.text()
    assert response.content_type == "application/json"
    return await response.json()


def bearer(token: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {token}"}


async def test_created_owner_is_known_by_its_token_until_revoked(
    client: TestClient, runtime: Runtime, admin: dict[str, str]
) -> None:
    made = await call(client, "POST", "/api/v1/owners", 201, json={"name": "alice"}, headers=admin)
    assert set(made) == {"name", "token"}
    assert made["name"] == "alice"
    token = made["token"]
    assert len(token) == 43 and token.replace("-", "").replace("_", "").isalnum()  # URL-safe

    # Only the digest is stored.
    row = await runtime.pool.fetchrow("SELECT * FROM owners WHERE name = 'alice'")
    assert row["token_sha256"] == token_sha256(token)
    assert token not in [str(v) for v in row.values()]
    assert row["created_at"] is not None and row["revoked_at"] is None

    who = await call(client, "GET", "/api/v1/owners/whoami", 200, headers=bearer(token))
    assert who == {"owner": "alice"}

    gone = await call(client, "DELETE", "/api/v1/owners/alice", 200, headers=admin)
    assert gone["name"] == "alice" and gone["revoked_at"]
    again = await call(client, "DELETE", "/api/v1/owners/alice", 200, headers=admin)
    assert again["revoked_at"] == gone["revoked_at"]  # the first revocation stands
    refused = await call(client, "GET", "/api/v1/owners/whoami", 401, headers=bearer(token))
    assert refused["error"] == "unknown or revoked owner token"


async def test_each_owner_gets_its_own_token(client: TestClient, admin: dict[str, str]) -> None:
    tokens = {}
    for name in ("alice", "bob"):
        made = await call(client, "POST", "/api/v1/owners", 201, json={"name": name}, headers=admin)
        tokens[name] = made["token"]
    assert tokens["alice"] != tokens["bob"]
    for name, token in tokens.items():
        who = await call(client, "GET", "/api/v1/owners/whoami", 200, headers=bearer(token))
        assert who == {"owner": name}


async def test_duplicate_and_revoked_names_are_a_conflict(
    client: TestClient, admin: dict[str, str]
) -> None:
    first = await call(client, "POST", "/api/v1/owners", 201, json={"name": "alice"}, headers=admin)
    dup = await call(client, "POST", "/api/v1/owners", 409, json={"name": "alice"}, headers=admin)
    assert dup == {
        "error": "owner alice exists (names of revoked owners are not reused)",
        "status": 409,
    }
    await call(client, "DELETE", "/api/v1/owners/alice", 200, headers=admin)
    await call(client, "POST", "/api/v1/owners", 409, json={"name": "alice"}, headers=admin)
    # Re-creating a revoked name does not bring its old token back.
    await call(client, "GET", "/api/v1/owners/whoami", 401, headers=bearer(first["token"]))


@pytest.mark.parametrize(
    "body",
    [
        {},
        {"name": ""},
        {"name": "a" * 65},
        {"name": "-alice"},
        {"name": "alice\n"},
        {"name": "al ice"},
        {"name": "alice/bob"},
        {"name": 7},
        {"name": "alice", "admin": True},
        ["alice"],
    ],
)
async def test_invalid_owner_names_are_refused(
    client: TestClient, runtime: Runtime, admin: dict[str, str], body: Any
) -> None:
    answer = await call(client, "POST", "/api/v1/owners", 400, json=body, headers=admin)
    assert answer["status"] == 400 and answer["error"]
    assert await runtime.pool.fetchval("SELECT count(*) FROM owners") == 0


async def test_body_that_is_not_json_is_refused(client: TestClient, admin: dict[str, str]) -> None:
    answer = await call(client, "POST", "/api/v1/owners", 400, data=b"{nope", headers=admin)
    assert answer["error"] == "request body is not JSON"


async def test_unknown_owner_cannot_be_revoked(client: TestClient, admin: dict[str, str]) -> None:
    answer = await call(client, "DELETE", "/api/v1/owners/nobody", 404, headers=admin)
    assert answer["error"] == "no owner named 'nobody'"


async def test_admin_api_is_disabled_without_an_admin_token(
    client: TestClient, runtime: Runtime
) -> None:
    for method, path, kwargs in [
        ("POST", "/api/v1/owners", {"json": {"name": "alice"}}),
        ("DELETE", "/api/v1/owners/alice", {}),
    ]:
        answer = await call(client, method, path, 403, headers=bearer(""), **kwargs)
        assert "set [registry] admin_token" in answer["error"]
    assert await runtime.pool.fetchval("SELECT count(*) FROM owners") == 0


@pytest.mark.parametrize(
    "headers",
    [
        {},
        bearer("wrong"),
        bearer(ADMIN + "x"),
        {"Authorization": ADMIN},
        {"Authorization": f"Basic {ADMIN}"},
    ],
    ids=["none", "wrong", "longer", "no scheme", "basic"],
)
async def test_admin_api_needs_the_admin_token(
    client: TestClient, runtime: Runtime, admin: dict[str, str], headers: dict[str, str]
) -> None:
    made = await call(client, "POST", "/api/v1/owners", 201, json={"name": "alice"}, headers=admin)
    answer = await call(
        client, "POST", "/api/v1/owners", 401, json={"name": "bob"}, headers=headers
    )
    assert "admin token" in answer["error"]
    await call(client, "DELETE", "/api/v1/owners/alice", 401, headers=headers)
    # An owner's own token is not an admin token either.
    await call(client, "DELETE", "/api/v1/owners/alice", 401, headers=bearer(made["token"]))
    assert await runtime.pool.fetchval("SELECT count(*) FROM owners WHERE revoked_at IS NULL") == 1


@pytest.mark.parametrize(
    "headers",
    [
        {},
        bearer("x" * 43),  # well formed, unknown
        bearer("short"),
        bearer("a" * 129),
        bearer("not/url+safe" * 4),
        {"Authorization": "Basic " + "x" * 43},
    ],
    ids=["none", "unknown", "short", "long", "not url-safe", "basic"],
)
async def test_whoami_without_a_valid_token_is_401(
    client: TestClient, admin: dict[str, str], headers: dict[str, str]
) -> None:
    await call(client, "POST", "/api/v1/owners", 201, json={"name": "alice"}, headers=admin)
    answer = await call(client, "GET", "/api/v1/owners/whoami", 401, headers=headers)
    assert answer["status"] == 401 and "token" in answer["error"]


async def test_admin_token_is_not_an_owner(client: TestClient, runtime: Runtime) -> None:
    admin_token = "A" * 43  # shaped like an owner token
    configure(runtime, admin_token=admin_token)
    await call(client, "GET", "/api/v1/owners/whoami", 401, headers=bearer(admin_token))
