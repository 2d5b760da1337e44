"""The one place the collector asks the dispatcher something: its queue, for the dashboard.

The dispatcher owns the queue, so the dashboard shows its count rather than a second guess
from messages. A dispatcher that is down or slow makes the queue "unavailable" on the page,
never an error: the dashboard does not depend on it.
"""

from __future__ import annotations

import json
import logging
from typing import Any

import aiohttp

from services.common.errors import describe
from services.common.service import Runtime

log = logging.getLogger(__name__)

TIMEOUT = aiohttp.ClientTimeout(total=3)
MAX_BYTES = 1024 * 1024  # a queue listing larger than this is not read


async def fetch_queue(runtime: Runtime) -> dict[str, Any]:
    """{"available": true, "tasks": {state: n}, "hosts": [...]} or {"available": false, "error"}."""
    url = runtime.config.collector.dispatcher_url.rstrip("/") + "/api/v1/queue"
    try:
        async with runtime.http.get(url, timeout=TIMEOUT) as resp:
            if resp.status != 200:
                return _unavailable(f"the dispatcher answered HTTP {resp.status}")
            raw = await resp.content.read(MAX_BYTES + 1)
            if len(raw) > MAX_BYTES:
                return _unavailable("the dispatcher's queue listing is too large")
            data = _parse(raw)
    except (aiohttp.ClientError, TimeoutError, ValueError, TypeError) as exc:
        log.warning("queue from %s: %s", url, describe(exc))
        return _unavailable("the dispatcher cannot be reached")
    return {"available": True, **data}


def _parse(raw: bytes) -> dict[str, Any]:
    data = json.loads(raw)
    if not isinstance(data, dict):
        raise ValueError("not a JSON object")
    tasks, hosts = data.get("tasks"), data.get("hosts")
    if not isinstance(tasks, dict) or not isinstance(hosts, list):
        raise ValueError("not a queue listing")
    return {
        "tasks": {str(k): int(v) for k, v in tasks.items()},
        "hosts": [h for h in hosts if isinstance(h, dict)],
    }


def _unavailable(why: str) -> dict[str, Any]:
    return {"available": False, "error": why}
