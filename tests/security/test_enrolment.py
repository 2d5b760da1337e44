"""Only the holder of a host's private key can change its enrolment."""

from __future__ import annotations

import uuid

import aiohttp
import pytest
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from skyline_messages import HostEnrolledV1

from services.common.signing import public_key_b64, sign_body
from tests.security.attack import host_view

pytestmark = pytest.mark.e2e
HONEST = "local-builder-1"


async def enrol(system, body: dict) -> tuple[int, dict]:
    """POST an enrolment with the token of the owner it names (mallory is a real owner)."""
    url = f"{system.url('registry')}/api/v1/hosts"
    headers = {"Authorization": f"Bearer {system.owner_token(body['owner'])}"}
    async with aiohttp.ClientSession() as http, http.post(url, json=body, headers=headers) as r:
        return r.status, await r.json()


async def test_enrolment_needs_the_private_key(system, tap):
    before = await host_view(system, HONEST)
    mallory = Ed25519PrivateKey.generate()
    hijack = {
        "host": HONEST,
        "owner": "mallory",
        "public_key": before["public_key"],  # public: anyone can read it from the registry
        "arches": ["s390x"],  # would starve its noarch builds
        "releases": ["local"],
        "cpus": 2,
    }

    status, reply = await enrol(system, sign_body(hijack, mallory))
    assert status == 403 and "not signed by the private half" in reply["error"]
    assert "broker" not in reply
    status, reply = await enrol(system, hijack)
    assert status == 400 and "must be signed" in reply["error"]

    # A signed enrolment captured on the wire and sent again is a replay.
    name = f"mallory-{uuid.uuid4().hex[:6]}"
    captured = sign_body({**hijack, "host": name, "public_key": public_key_b64(mallory)}, mallory)
    status, first = await enrol(system, captured)
    assert status == 201 and first["broker"]["password"]
    status, reply = await enrol(system, captured)
    assert status == 403 and "replayed" in reply["error"]
    assert "broker" not in reply  # the replay learned no credentials

    after = await host_view(system, HONEST)
    for field in ("public_key", "owner", "arches", "releases", "trust", "state"):
        assert after[field] == before[field], field
    assert not tap.of(HostEnrolledV1, host=HONEST)
