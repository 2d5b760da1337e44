"""Who may upload to a lease: only its host, proven by a signature with its enrolled key.

The lease id is no secret (every reader of `skyline.task.leased.*` sees it), so an upload
carries `X-Skyline-Host`, `X-Skyline-Signed-At` and `X-Skyline-Signature`: the host's
Ed25519 signature over canonical JSON of {lease_id, name, sha256, host, signed_at}
(builder/client.py makes them). The digest is signed, and the body must match it (routes.py),
so the signature covers the bytes too. `signed_at` must be close to now, so a captured request
cannot be replayed later (within the window it can only re-send the same bytes).
"""

from __future__ import annotations

import dataclasses
import datetime
import logging
from collections.abc import Mapping
from typing import Any, NoReturn

from aiohttp import web

from services.common.errors import SignatureError
from services.common.http import error
from services.common.service import Runtime
from services.common.signing import verify_fields

from . import hostkeys

log = logging.getLogger(__name__)

HOST_HEADER = "X-Skyline-Host"
SIGNED_AT_HEADER = "X-Skyline-Signed-At"
SIGNATURE_HEADER = "X-Skyline-Signature"
MAX_SKEW = datetime.timedelta(minutes=10)  # either way: builders' clocks are not ours


@dataclasses.dataclass(frozen=True)
class Credentials:
    host: str
    signed_at: str  # exactly as sent: it is what was signed
    signature: str


def credentials(request: web.Request) -> Credentials:
    """The upload's signing headers; 401 if any is missing."""
    headers = (HOST_HEADER, SIGNED_AT_HEADER, SIGNATURE_HEADER)
    missing = [h for h in headers if not request.headers.get(h)]
    if missing:
        raise error(
            401,
            f"uploads must be signed with the host's enrolled key: missing {', '.join(missing)}",
        )
    host, signed_at, signature = (request.headers[h] for h in headers)
    return Credentials(host, signed_at, signature)


async def check(
    runtime: Runtime,
    lease: Mapping[str, Any],
    creds: Credentials,
    *,
    lease_id: str,
    name: str,
    sha256: str,
) -> None:
    """Raise 403 unless `creds` sign this upload as the lease's host, now; 503 if we can't tell.

    The cheap checks come first, so forged or stale requests never reach the registry.
    """
    if creds.host != lease["host"]:
        _refuse(lease_id, name, f"lease {lease_id} belongs to {lease['host']}, not {creds.host}")
    _check_time(lease_id, name, creds.signed_at)
    try:
        key = await hostkeys.for_runtime(runtime).get(creds.host)
    except hostkeys.RegistryUnavailable as exc:
        log.warning("lease %s: cannot check the upload of %s: %s", lease_id, name, exc)
        raise error(503, "the registry cannot be asked for the host's key; try again") from None
    if key is None:
        _refuse(lease_id, name, f"host {creds.host} is not enrolled")
    if key.state == "quarantined":
        _refuse(lease_id, name, f"host {creds.host} is quarantined")
    fields = {
        "lease_id": lease_id,
        "name": name,
        "sha256": sha256,
        "host": creds.host,
        "signed_at": creds.signed_at,
    }
    try:
        verify_fields(fields, creds.signature, key.public_key)
    except SignatureError:
        _refuse(lease_id, name, "upload not signed by the leased host's key")


def _check_time(lease_id: str, name: str, signed_at: str) -> None:
    try:
        when = datetime.datetime.fromisoformat(signed_at)
    except ValueError:
        when = None
    if when is None or when.tzinfo is None:
        raise error(401, f"{SIGNED_AT_HEADER} must be an ISO 8601 time with a UTC offset")
    skew = abs(datetime.datetime.now(datetime.UTC) - when)
    if skew > MAX_SKEW:
        _refuse(
            lease_id,
            name,
            f"the upload was signed at {signed_at}, {skew.total_seconds():.0f} s away from the "
            f"collector's clock (at most {MAX_SKEW.total_seconds():.0f} s): check the "
            "builder's clock",
        )


def _refuse(lease_id: str, name: str, reason: str) -> NoReturn:
    # Worth an operator's eye: a misconfigured builder, or someone trying to slip files in.
    log.warning("lease %s: refused the upload of %s: %s", lease_id, name, reason)
    raise error(403, reason)
