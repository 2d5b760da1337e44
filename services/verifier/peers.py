"""What the verifier asks other services over HTTP: a host's enrolled key, a lease's uploads."""

from __future__ import annotations

from typing import Any

import aiohttp

from services.common.errors import Retry


async def _get_json(http: aiohttp.ClientSession, url: str) -> dict[str, Any] | None:
    """GET JSON; None on 404; Retry when the peer is down so the message waits for it."""
    try:
        async with http.get(url) as response:
            if response.status == 404:
                return None
            if response.status != 200:
                raise Retry(f"GET {url} answered {response.status}")
            return await response.json()
    except (aiohttp.ClientError, TimeoutError) as exc:
        raise Retry(f"GET {url} failed: {exc}") from exc


async def enrolled_host(
    http: aiohttp.ClientSession, registry_url: str, host: str
) -> dict[str, Any] | None:
    return await _get_json(http, f"{registry_url}/api/v1/hosts/{host}")


async def staged_files(
    http: aiohttp.ClientSession, collector_url: str, lease_id: str
) -> list[dict[str, Any]]:
    """The lease's uploads: name, size, sha256 and `rpm`, the header the collector read from
    an RPM's bytes (see the collector's routes.py); [] if the collector knows no such lease."""
    found = await _get_json(http, f"{collector_url}/api/v1/uploads/{lease_id}")
    return found["files"] if found else []
