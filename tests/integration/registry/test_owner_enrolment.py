"""Owners enrol their own hosts, up to their limit; sponsors invite owners; frauds lower
standing; the host directory's filters, revocation and JSON errors. Real PostgreSQL."""

from __future__ import annotations

from typing import Any

import pytest
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from skyline_messages import HostEnrolledV1
from test_registry_service import configure, host_row, profile

from services.common.signing import public_key_b64, sign_body

pytestmark = pytest.mark.integration

ADMIN = {"Authorization": "Bearer admin-secret"}


@pytest.fixture(autouse=True)
def admin_api(runtime) -> None:
    configure(runtime, admin_token="admin-secret")


async def call(client, method: str, path: str, status: int, **kwargs: Any) -> Any:
    response = await client.request(method, path, **kwargs)
    assert response.status == status, await response.text()
    assert response.content_type == "application/json"
    return await response.json()


async def make_owner(client, name: str, **extra: Any) -> str:
    made = await call(
        client, "POST", "/api/v1/owners", 201, json={"name": name, **extra}, headers=ADMIN
    )
    return made["token"]


def bearer(token: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {token}"}


def new_host(name: str, owner: str | None = "alice", **changes: Any) -> tuple[dict, Any]:
    key = Ed25519PrivateKey.generate()
    body = profile(name, key, **changes)
    if owner is None:
        del body["owner"]
    else:
        body["owner"] = owner
    return body, key


async def post_enrolment(client, body: dict, key, token: str | None, status: int) -> dict:
    headers = bearer(token) if token is not None else {}
    return await call(
        client, "POST", "/api/v1/hosts", status, json=sign_body(body, key), headers=headers
    )


# Enrolment with owner tokens


async def test_a_host_is_enrolled_for_the_owner_whose_token_it_brings(
    client, runtime, sent
) -> None:
    alice = await make_owner(client, "alice")
    body, key = new_host("a-1", owner=None)  # the owner comes from the token
    view = await post_enrolment(client, body, key, alice, 201)
    assert view["owner"] == "alice"
    body, key = new_host("a-2", owner="alice")  # or the body names the same owner
    assert (await post_enrolment(client, body, key, alice, 201))["owner"] == "alice"
    [first, second] = await sent()
    assert type(first) is HostEnrolledV1 and first.body["owner"] == "alice"
    assert second.body["host"] == "a-2"


@pytest.mark.parametrize(
    "headers",
    [{}, bearer("x" * 43), {"Authorization": "Basic abc"}, bearer("short")],
    ids=["missing", "unknown", "not bearer", "malformed"],
)
async def test_enrolment_without_a_valid_owner_token_is_401(client, runtime, sent, headers) -> None:
    await make_owner(client, "alice")
    body, key = new_host("a-1")
    answer = await call(
        client, "POST", "/api/v1/hosts", 401, json=sign_body(body, key), headers=headers
    )
    assert answer["status"] == 401 and "token" in answer["error"]
    assert await host_row(runtime, "a-1") is None and await sent() == []


async def test_another_owners_token_or_a_revoked_one_enrols_nothing(client, runtime) -> None:
    alice, bob = await make_owner(client, "alice"), await make_owner(client, "bob")
    body, key = new_host("a-1", owner="alice")
    answer = await post_enrolment(client, body, key, bob, 403)
    assert answer["error"] == "this is bob's token: it cannot enrol a host for 'alice'"
    await call(client, "DELETE", "/api/v1/owners/alice", 200, headers=ADMIN)
    answer = await post_enrolment(client, body, key, alice, 401)
    assert answer["error"] == "unknown or revoked owner token"
    assert await host_row(runtime, "a-1") is None


async def test_the_shared_enrolment_token_is_gone(runtime) -> None:
    assert not hasattr(runtime.config.registry, "enrol_token")


async def test_an_owner_enrols_up_to_its_host_limit(client, runtime) -> None:
    configure(runtime, admin_token="admin-secret", max_hosts_per_owner=2)
    alice = await make_owner(client, "alice")
    bob = await make_owner(client, "bob", max_hosts=3)  # an admin's own limit for bob
    keys = {}
    for n in (1, 2):
        body, keys[n] = new_host(f"a-{n}")
        await post_enrolment(client, body, keys[n], alice, 201)
    body, key = new_host("a-3")
    answer = await post_enrolment(client, body, key, alice, 403)
    assert answer["error"].startswith("owner alice has 2 host(s) enrolled, its limit")
    # Re-enrolling a host it has is not a new host.
    again = profile("a-1", keys[1], owner="alice")
    await post_enrolment(client, again, keys[1], alice, 200)
    for n in (1, 2, 3):
        body, other = new_host(f"b-{n}", owner="bob")
        await post_enrolment(client, body, other, bob, 201)
    # The admin raises alice's limit; a revoked host frees its place too.
    owner = await call(
        client, "PUT", "/api/v1/owners/alice/max_hosts", 200, json={"max_hosts": 3}, headers=ADMIN
    )
    assert (owner["max_hosts"], owner["max_hosts_override"]) == (3, 3)
    body, key = new_host("a-3")
    await post_enrolment(client, body, key, alice, 201)
    body, key = new_host("a-4")
    await post_enrolment(client, body, key, alice, 403)
    await call(client, "POST", "/api/v1/hosts/a-1/revoke", 200, headers=ADMIN)
    await post_enrolment(client, body, key, alice, 201)
    # Back to the default: alice has 3 enrolled, so no fourth.
    owner = await call(
        client,
        "PUT",
        "/api/v1/owners/alice/max_hosts",
        200,
        json={"max_hosts": None},
        headers=ADMIN,
    )
    assert owner["max_hosts"] == 2
    body, key = new_host("a-5")
    await post_enrolment(client, body, key, alice, 403)


@pytest.mark.parametrize("value", [-1, "3", 1.5, True, 10**9])
async def test_a_bad_host_limit_is_400(client, value) -> None:
    await make_owner(client, "alice")
    answer = await call(
        client,
        "PUT",
        "/api/v1/owners/alice/max_hosts",
        400,
        json={"max_hosts": value},
        headers=ADMIN,
    )
    assert "max_hosts" in answer["error"]


# Sponsorship


async def test_sponsorship_sets_the_new_owners_standing(client, runtime) -> None:
    alice = await make_owner(client, "alice")  # made by an admin: good
    invited = await call(
        client, "POST", "/api/v1/owners/invite", 201, json={"name": "bob"}, headers=bearer(alice)
    )
    assert (invited["sponsor"], invited["standing"]) == ("alice", "sponsored")
    bob = invited["token"]
    who = await call(client, "GET", "/api/v1/owners/whoami", 200, headers=bearer(bob))
    assert who == {"owner": "bob"}
    # A sponsored owner enrols hosts; its standing is shown with each host, for the verifier.
    body, key = new_host("b-1", owner="bob")
    await post_enrolment(client, body, key, bob, 201)
    host = await call(client, "GET", "/api/v1/hosts/b-1", 200)
    assert (host["owner_standing"], host["trust"]) == ("sponsored", "untrusted")
    body, key = new_host("a-1")
    await post_enrolment(client, body, key, alice, 201)
    assert (await call(client, "GET", "/api/v1/hosts/a-1", 200))["owner_standing"] == "good"
    # ...but may not sponsor until an admin vouches for it.
    answer = await call(
        client, "POST", "/api/v1/owners/invite", 403, json={"name": "carol"}, headers=bearer(bob)
    )
    assert answer["error"] == "bob may not sponsor owners while sponsored"
    vouched = await call(
        client,
        "PUT",
        "/api/v1/owners/bob/standing",
        200,
        json={"standing": "good"},
        headers=ADMIN,
    )
    assert vouched["standing"] == "good"
    await call(
        client, "POST", "/api/v1/owners/invite", 201, json={"name": "carol"}, headers=bearer(bob)
    )
    # An admin may name the sponsor too.
    await make_owner(client, "dave", sponsor="alice")
    tree = await call(client, "GET", "/api/v1/owners/tree", 200, headers=ADMIN)

    def names(nodes: list) -> list:
        return [(n["name"], n["standing"], names(n["sponsored"])) for n in nodes]

    assert names(tree["tree"]) == [
        (
            "alice",
            "good",
            [("bob", "good", [("carol", "sponsored", [])]), ("dave", "sponsored", [])],
        )
    ]


async def test_a_confirmed_fraud_counts_against_the_owner_and_lightly_its_sponsor(
    client, runtime
) -> None:
    alice = await make_owner(client, "alice")
    invited = await call(
        client, "POST", "/api/v1/owners/invite", 201, json={"name": "bob"}, headers=bearer(alice)
    )
    body, key = new_host("b-1", owner="bob")
    await post_enrolment(client, body, key, invited["token"], 201)
    fraud = {"detail": "b-1 shipped a trojaned /usr/bin/hello", "host": "b-1", "task_id": 7}
    reply = await call(client, "POST", "/api/v1/owners/bob/frauds", 201, json=fraud, headers=ADMIN)
    assert (reply["owner"]["standing"], reply["owner"]["own_frauds"]) == ("probation", 1)
    # Half a fraud against alice: she is on probation too, and may not sponsor anyone.
    assert (reply["sponsor"]["standing"], reply["sponsor"]["sponsored_frauds"]) == ("probation", 1)
    await call(
        client, "POST", "/api/v1/owners/invite", 403, json={"name": "eve"}, headers=bearer(alice)
    )
    assert (await call(client, "GET", "/api/v1/hosts/b-1", 200))["owner_standing"] == "probation"
    # A second fraud suspends bob: no new host; alice (1 point) stays on probation.
    await call(client, "POST", "/api/v1/owners/bob/frauds", 201, json=fraud, headers=ADMIN)
    body, key = new_host("b-2", owner="bob")
    answer = await post_enrolment(client, body, key, invited["token"], 403)
    assert answer["error"] == "owner bob is suspended: it may not enrol hosts"
    shown = await call(client, "GET", "/api/v1/owners/bob", 200, headers=ADMIN)
    assert shown["standing"] == "suspended" and shown["hosts"] == 1
    assert [f["detail"] for f in shown["frauds"]] == [fraud["detail"]] * 2
    assert shown["frauds"][0]["task_id"] == "7"
    assert (await call(client, "GET", "/api/v1/owners/alice", 200, headers=ADMIN))[
        "standing"
    ] == "probation"


@pytest.mark.parametrize(
    ("path", "body", "status"),
    [
        ("/api/v1/owners/bob/frauds", {"detail": ""}, 400),
        ("/api/v1/owners/bob/frauds", {"detail": "x" * 2001}, 400),
        ("/api/v1/owners/bob/frauds", {"detail": "x", "host": "Not A Host"}, 400),
        ("/api/v1/owners/bob/frauds", {"detail": "x", "extra": 1}, 400),
        ("/api/v1/owners/nobody/frauds", {"detail": "x"}, 404),
        ("/api/v1/owners/bob/standing", {"standing": "probation"}, 400),
        ("/api/v1/owners/nobody/standing", {"standing": "good"}, 404),
        ("/api/v1/owners/nobody/max_hosts", {"max_hosts": 1}, 404),
        ("/api/v1/owners", {"name": "carol", "sponsor": "nobody"}, 400),
        ("/api/v1/owners", {"name": "bob"}, 409),
        ("/api/v1/owners", {"name": "tree"}, 400),
    ],
)
async def test_owner_admin_calls_refuse_bad_input_with_json_errors(
    client, path: str, body: dict, status: int
) -> None:
    await make_owner(client, "bob")
    method = "PUT" if path.endswith(("standing", "max_hosts")) else "POST"
    answer = await call(client, method, path, status, json=body, headers=ADMIN)
    assert answer["status"] == status and answer["error"]


async def test_owner_admin_calls_need_the_admin_token(client) -> None:
    alice = await make_owner(client, "alice")
    for method, path in [
        ("GET", "/api/v1/owners"),
        ("GET", "/api/v1/owners/tree"),
        ("GET", "/api/v1/owners/alice"),
        ("POST", "/api/v1/owners/alice/frauds"),
        ("PUT", "/api/v1/owners/alice/standing"),
        ("PUT", "/api/v1/owners/alice/max_hosts"),
    ]:
        answer = await call(client, method, path, 401, json={}, headers=bearer(alice))
        assert "admin token" in answer["error"]


async def test_an_invitation_needs_a_current_owners_token(client) -> None:
    for headers in ({}, bearer("y" * 43)):
        answer = await call(
            client, "POST", "/api/v1/owners/invite", 401, json={"name": "bob"}, headers=headers
        )
        assert "token" in answer["error"]
    alice = await make_owner(client, "alice")
    for body in ({"name": "alice"}, {"name": "bob", "sponsor": "x"}, {"name": "-x"}):
        status = 409 if body == {"name": "alice"} else 400
        await call(
            client, "POST", "/api/v1/owners/invite", status, json=body, headers=bearer(alice)
        )


# The host directory


async def test_hosts_are_filtered_by_arch_trust_owner_and_online(client, runtime) -> None:
    alice, bob = await make_owner(client, "alice"), await make_owner(client, "bob")
    for name, token, owner, arches in [
        ("a-1", alice, "alice", ["noarch", "x86_64"]),
        ("a-2", alice, "alice", ["aarch64"]),
        ("b-1", bob, "bob", ["x86_64"]),
    ]:
        body, key = new_host(name, owner=owner, arches=arches)
        await post_enrolment(client, body, key, token, 201)
    await runtime.pool.execute("UPDATE hosts SET state = 'online' WHERE host = 'b-1'")
    await runtime.pool.execute("UPDATE hosts SET trust = 'trusted' WHERE host = 'a-2'")

    async def names(query: str) -> list[str]:
        reply = await call(client, "GET", f"/api/v1/hosts{query}", 200)
        return [h["host"] for h in reply["hosts"]]

    assert await names("") == ["a-1", "a-2", "b-1"]
    assert await names("?arch=x86_64") == ["a-1", "b-1"]
    assert await names("?owner=alice") == ["a-1", "a-2"]
    assert await names("?trust=trusted") == ["a-2"]
    assert await names("?online=true") == ["b-1"]
    assert await names("?online=false&arch=x86_64") == ["a-1"]
    page = await call(client, "GET", "/api/v1/hosts?limit=2", 200)
    assert page["next"] == "a-2"
    assert await names("?after=a-2") == ["b-1"]
    for bad in ("?arch=sparc", "?trust=godlike", "?online=yes", "?limit=0", "?colour=red"):
        answer = await call(client, "GET", f"/api/v1/hosts{bad}", 400)
        assert answer["status"] == 400


async def test_profile_fields_are_kept_and_bounded(client, runtime, sent) -> None:
    alice = await make_owner(client, "alice")
    extra = {
        "mock_configs": ["fedora-40-x86_64", "fedora-rawhide-x86_64"],
        "location": "Brno, CZ",
        "agent_version": "0.4.1",
        "sandbox": "mock",
    }
    body, key = new_host("a-1", **extra)
    view = await post_enrolment(client, body, key, alice, 201)
    for field, value in extra.items():
        assert view[field] == value
    [enrolled] = await sent()
    assert {k: enrolled.body[k] for k in extra} == extra
    for bad in (
        {"location": "x\n"},
        {"location": "x" * 65},
        {"mock_configs": ["a b"]},
        {"agent_version": "1.0; rm -rf"},
        {"sandbox": "Mock"},
        {"sandbox": "m" * 33},
        {"sandbox": "bwrap\n"},
    ):
        body, key = new_host("a-2", **bad)
        answer = await post_enrolment(client, body, key, alice, 400)
        assert answer["error"].startswith("invalid enrolment")


async def test_json_errors_for_unknown_host_bad_key_and_duplicate_name(client, runtime) -> None:
    alice = await make_owner(client, "alice")
    for path in ("", "/qos", "/builds", "/availability", "/trust"):
        answer = await call(client, "GET", f"/api/v1/hosts/nobody{path}", 404)
        assert answer == {"error": "no host named 'nobody' is enrolled", "status": 404}
    for action in ("quarantine", "release", "revoke"):
        await call(client, "POST", f"/api/v1/hosts/nobody/{action}", 404, headers=ADMIN)
    body, key = new_host("a-1", public_key="A" * 44)  # bad key
    answer = await post_enrolment(client, body, key, alice, 400)
    assert answer["error"].startswith("invalid enrolment")
    body, key = new_host("a-1")
    await post_enrolment(client, body, key, alice, 201)
    body2, key2 = new_host("a-1")  # duplicate name, another key
    answer = await post_enrolment(client, body2, key2, alice, 409)
    assert answer == {"error": "host a-1 is enrolled with another key", "status": 409}
    answer = await call(
        client, "POST", "/api/v1/owners", 409, json={"name": "alice"}, headers=ADMIN
    )
    assert "exists" in answer["error"]


async def test_a_revoked_host_is_cut_off_for_good(client, runtime, sent) -> None:
    alice = await make_owner(client, "alice")
    body, key = new_host("a-1")
    await post_enrolment(client, body, key, alice, 201)
    view = await call(client, "POST", "/api/v1/hosts/a-1/revoke", 200, headers=ADMIN)
    assert view["state"] == "quarantined" and view["revoked_at"]
    assert (await sent())[-1].body["state"] == "quarantined"
    answer = await post_enrolment(client, profile("a-1", key), key, alice, 403)
    assert answer["error"] == "host a-1 was revoked; its name is not reused"
    for action in ("release", "revoke", "quarantine"):
        answer = await call(client, "POST", f"/api/v1/hosts/a-1/{action}", 409, headers=ADMIN)
        assert "revoked" in answer["error"]
    await call(client, "POST", "/api/v1/hosts/a-1/revoke", 401)
    changes = await call(client, "GET", "/api/v1/hosts/a-1/availability", 200)
    assert [(c["old"], c["new"], c["reason"]) for c in changes["changes"]] == [
        ("offline", "quarantined", "revoke")
    ]


async def test_key_shown_is_the_enrolled_one(client) -> None:
    alice = await make_owner(client, "alice")
    body, key = new_host("a-1")
    await post_enrolment(client, body, key, alice, 201)
    view = await call(client, "GET", "/api/v1/hosts/a-1", 200)
    assert view["public_key"] == public_key_b64(key)
    assert "token_sha256" not in view and "status_published" not in view
