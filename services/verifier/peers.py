"""What the verifier asks other services over HTTP: a host's enrolled key, a lease's uploads
and the facts of its RPMs."""

from __future__ import annotations

from typing import Any

import aiohttp

from services.common.errors import Retry, SkylineError
from services.common.rpmfacts import RpmFacts, facts_from_json


class FactsRefused(SkylineError):
    """The collector could not read the lease's RPMs (not intact, or lying about their
    payload): the result is refused."""


async def _get_json(http: aiohttp.ClientSession, url: str) -> dict[str, Any] | None:
    """GET JSON; None on 404; Retry when the peer is down so the message waits for it."""
    try:
        async with http.get(url) as response:
            if response.status == 404:
                return None
            if response.status == 422:
                raise FactsRefused(await _error(response))
            if response.status != 200:
                raise Retry(f"GET {url} answered {response.status}")
            return await response.json()
    except (aiohttp.ClientError, TimeoutError) as exc:
        raise Retry(f"GET {url} failed: {exc}") from exc


async def _error(response: aiohttp.ClientResponse) -> str:
    try:
        return str((await response.json())["error"])
    except (aiohttp.ClientError, ValueError, KeyError, TypeError):
        return f"answered {response.status}"


async def enrolled_host(
    http: aiohttp.ClientSession, registry_url: str, host: str
) -> dict[str, Any] | None:
    """The registry's view of a host: public_key, state, owner, trust (untrusted, trusted,
    core, quarantined) and its record (total_results, consecutive_confirmed)."""
    return await _get_json(http, f"{registry_url}/api/v1/hosts/{host}")


async def staged_files(
    http: aiohttp.ClientSession, collector_url: str, lease_id: str
) -> list[dict[str, Any]]:
    """The lease's uploads: name, size, sha256 and `rpm`, the header the collector read from
    an RPM's bytes (see the collector's routes.py); [] if the collector knows no such lease."""
    found = await _get_json(http, f"{collector_url}/api/v1/uploads/{lease_id}")
    return found["files"] if found else []


async def rpm_facts_of_files(
    http: aiohttp.ClientSession, collector_url: str, lease_id: str
) -> list[tuple[str, str, RpmFacts]] | None:
    """(file name, sha256, facts) of each staged RPM of the lease (the collector's
    GET /api/v1/leases/{id}/facts); None if the collector knows no such lease (or no longer
    has its uploads); FactsRefused if it cannot read them."""
    found = await _get_json(http, f"{collector_url}/api/v1/leases/{lease_id}/facts")
    if found is None:
        return None
    try:
        return [(str(r["name"]), str(r["sha256"]), facts_from_json(r)) for r in found["rpms"]]
    except (KeyError, TypeError, ValueError) as exc:
        raise Retry(f"the collector's facts of lease {lease_id} are malformed: {exc}") from None


async def rpm_facts(
    http: aiohttp.ClientSession, collector_url: str, lease_id: str
) -> list[RpmFacts] | None:
    """The facts of the lease's staged RPMs; None if they are not there (any more)."""
    found = await rpm_facts_of_files(http, collector_url, lease_id)
    return None if found is None else [f for _, _, f in found]
