"""What the dispatcher asks the collector over HTTP: whether a lease's results were stored.

The collector announces a stored result with build.stored; if that message is lost, the
dispatcher would requeue the task at lease expiry and finally fail a build whose RPMs are in
Koji storage. So at expiry it asks GET /api/v1/leases/{lease_id} (collector/routes.py).
"""

from __future__ import annotations

import dataclasses
import json
from typing import Any

import aiohttp
import jsonschema
from skyline_messages.base import UUID
from skyline_messages.build import STORED_FILE

from services.common.errors import Retry

# Asked inside the expiry sweep's transaction: a collector that hangs must not hold it long.
TIMEOUT = aiohttp.ClientTimeout(total=10)
MAX_ANSWER_BYTES = 16 * 1024 * 1024  # 10,000 files of the longest paths fit
ANSWER = {
    "type": "object",
    "required": ["lease_id", "state", "files"],
    "properties": {
        "lease_id": UUID,
        "state": {"type": "string", "enum": ["open", "stored", "failed", "superseded"]},
        "files": {"type": "array", "items": STORED_FILE, "maxItems": 10000},
    },
    "additionalProperties": False,
}
_VALIDATOR = jsonschema.Draft7Validator(ANSWER)


@dataclasses.dataclass(frozen=True)
class Lease:
    """The collector's record of a lease: its state, and what it stored (as build.stored)."""

    state: str
    files: list[dict[str, Any]]

    @property
    def stored(self) -> bool:
        return self.state == "stored"


async def lease(http: aiohttp.ClientSession, collector_url: str, lease_id: str) -> Lease | None:
    """The collector's record of `lease_id`; None if it never heard of the lease.

    Raises Retry when the collector cannot answer (down, error, malformed answer): the caller
    must not conclude anything about the lease then.
    """
    url = f"{collector_url.rstrip('/')}/api/v1/leases/{lease_id}"
    try:
        async with http.get(url, timeout=TIMEOUT) as response:
            if response.status == 404:
                return None
            if response.status != 200:
                raise Retry(f"GET {url} answered {response.status}")
            data = bytearray()
            async for chunk in response.content.iter_chunked(65536):
                data += chunk
                if len(data) > MAX_ANSWER_BYTES:
                    raise Retry(f"GET {url}: answer larger than {MAX_ANSWER_BYTES} bytes")
        answer = json.loads(data)
    except (aiohttp.ClientError, TimeoutError) as exc:
        raise Retry(f"GET {url} failed: {exc}") from exc
    except ValueError as exc:
        raise Retry(f"GET {url}: answer is not JSON: {exc}") from exc
    error = jsonschema.exceptions.best_match(_VALIDATOR.iter_errors(answer))
    if error is not None:
        raise Retry(f"GET {url}: unexpected answer: {error.message[:200]}")
    if answer["lease_id"] != lease_id:
        raise Retry(f"GET {url}: answer is about lease {answer['lease_id']}")
    return Lease(answer["state"], answer["files"])
