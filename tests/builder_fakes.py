"""One local aiohttp app standing in for the registry, the SRPM source and the collector, as
the builder agent sees them (services/builder/client.py).

It answers as the real services do where the agent depends on it: the statuses, the JSON error
body {"error", "status"} (services/common/http.py), the enrolment reply's `trust` and `broker`
and the collector's checks of a signed upload. tests/integration/builder/
test_builder_fakes_contract.py runs the same client calls against it and the real registry and
collector; change both together.

Not modelled: leases (any lease id takes uploads from any enrolled host; the real collector
404s an unknown lease, 403s another host's and 409s a closed one), a missing SRPM (any name
serves `srpm`), replayed or stale signatures, owner standing and host limits, upload size and
rate limits.
"""

from __future__ import annotations

import dataclasses
import hashlib
import re
from typing import Any

from aiohttp import web

from services.builder import client
from services.common.errors import SignatureError
from services.common.signing import verify_body, verify_fields

SRPM = b"not really an srpm, but bytes are bytes"
TOKEN = "s3cret"  # alice's owner token at the stand-in registry
_SHA256 = re.compile(r"[0-9a-f]{64}")


def refusal(status: int, message: str) -> web.Response:
    """An error as the services answer it (services/common/http.error)."""
    return web.json_response({"error": message, "status": status}, status=status)


@dataclasses.dataclass
class Services:
    """Registry, SRPM source and collector in one local app."""

    url: str = ""
    enrolments: list[tuple[dict[str, Any], str | None]] = dataclasses.field(default_factory=list)
    # Scripted answers, taken before any check (e.g. a registry still starting: 503); then
    # the checks decide.
    enrol_status: list[int] = dataclasses.field(default_factory=list)
    upload_status: list[int] = dataclasses.field(default_factory=list)  # after the signature
    uploads: dict[tuple[str, str], bytes] = dataclasses.field(default_factory=dict)
    # Keys by host, as enrolled: uploads must be signed with them (like the collector's check).
    keys: dict[str, str] = dataclasses.field(default_factory=dict)
    # Owner tokens the registry knows, and whose they are.
    owner_tokens: dict[str, str] = dataclasses.field(default_factory=lambda: {TOKEN: "alice"})
    upload_signatures: list[dict[str, str]] = dataclasses.field(default_factory=list)
    srpm: bytes = SRPM
    broker_credentials: bool = True
    _passwords: int = 0

    def app(self) -> web.Application:
        app = web.Application()
        app.router.add_post("/api/v1/hosts", self.enrol)
        app.router.add_get("/srpms/{name}", self.get_srpm)
        app.router.add_put("/api/v1/uploads/{lease}/{name}", self.put_upload)
        return app

    async def enrol(self, request: web.Request) -> web.Response:
        """As services/registry/routes.py enrol: token, then body, then proof of possession,
        then the name: 201 new, 200 again with the same key, 409 with another key."""
        signed = await request.json()
        auth = request.headers.get("Authorization")
        self.enrolments.append((signed, auth))
        if self.enrol_status:
            status = self.enrol_status.pop(0)
            if status >= 300:
                return refusal(status, "host name taken" if status == 409 else f"nope ({status})")
        token = auth.removeprefix("Bearer ") if auth and auth.startswith("Bearer ") else None
        if token is None:
            return refusal(401, "enrolment needs your owner token (Authorization: Bearer <token>)")
        owner = self.owner_tokens.get(token)
        if owner is None:
            return refusal(401, "unknown or revoked owner token")
        profile = {k: v for k, v in signed.items() if k not in ("signed_at", "signature")}
        named = profile.setdefault("owner", owner)
        if named != owner:
            return refusal(403, f"this is {owner}'s token: it cannot enrol a host for {named!r}")
        if not isinstance(signed.get("signature"), str):
            return refusal(400, "an enrolment must be signed with the host's key")
        try:
            verify_body(signed, profile["public_key"])
        except SignatureError:
            return refusal(403, "the enrolment is not signed by the private half of public_key")
        host = profile["host"]
        known = self.keys.get(host)
        if known is not None and known != profile["public_key"]:
            return refusal(409, f"host {host} is enrolled with another key")
        self.keys[host] = profile["public_key"]
        body: dict[str, Any] = {**profile, "trust": "untrusted", "state": "offline"}
        if self.broker_credentials:
            self._passwords += 1  # a new password at each enrolment, as the registry's
            body["broker"] = {
                "user": f"host-{host}",
                "password": f"pw{self._passwords}",
                "queue": f"skyline.builder.{host}",
            }
        return web.json_response(body, status=201 if known is None else 200)

    async def get_srpm(self, request: web.Request) -> web.Response:
        return web.Response(body=self.srpm)

    async def put_upload(self, request: web.Request) -> web.Response:
        """As services/collector/routes.py put_upload: 400 bad digest header, 401 unsigned,
        403 not the host's signature, 422 body not the signed digest; 201 new, 200 again."""
        headers = request.headers
        lease, name = request.match_info["lease"], request.match_info["name"]
        sha256 = headers.get(client.SHA256_HEADER)
        if sha256 is None or not _SHA256.fullmatch(sha256.lower()):
            return refusal(400, f"the {client.SHA256_HEADER} header must be a hex SHA-256 digest")
        signing = (client.HOST_HEADER, client.SIGNED_AT_HEADER, client.SIGNATURE_HEADER)
        missing = [h for h in signing if not headers.get(h)]
        if missing:
            return refusal(401, f"uploads must be signed with the host's enrolled key: {missing}")
        fields = {
            "lease_id": lease,
            "name": name,
            "sha256": sha256,
            "host": headers[client.HOST_HEADER],
            "signed_at": headers[client.SIGNED_AT_HEADER],
        }
        key = self.keys.get(fields["host"])
        if key is None:
            return refusal(403, f"host {fields['host']} is not enrolled")
        try:
            verify_fields(fields, headers[client.SIGNATURE_HEADER], key)
        except SignatureError:
            return refusal(403, "upload not signed by the leased host's key")
        self.upload_signatures.append(fields)
        if self.upload_status:
            status = self.upload_status.pop(0)
            return refusal(status, f"nope ({status})")
        data = await request.read()
        actual = hashlib.sha256(data).hexdigest()
        if actual != sha256.lower():
            return refusal(422, f"{name}: body has sha256 {actual}, header says {sha256}")
        new = (lease, name) not in self.uploads
        self.uploads[(lease, name)] = data
        reply = {"name": name, "size": len(data), "sha256": actual}
        return web.json_response(reply, status=201 if new else 200)
