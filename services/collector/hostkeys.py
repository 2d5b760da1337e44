"""Hosts' enrolled keys, asked of the registry and remembered for a short while.

Every upload is checked against its host's key (auth.py), and a build uploads its files in a
burst: asking the registry for each one would make every upload wait on it. A short TTL bounds
how long a quarantine (or a removed enrolment) takes to reach the collector.
"""

from __future__ import annotations

import dataclasses
import time
from collections.abc import Callable
from urllib.parse import quote

import aiohttp

from services.common.errors import SkylineError
from services.common.service import Runtime
from services.common.ttlcache import TtlCache

TTL = 60.0
# A builder waits on this lookup before its upload starts; better a quick 503 and a retry
# (client.upload backs off) than hanging on a registry that does not answer.
LOOKUP_TIMEOUT = aiohttp.ClientTimeout(total=10)
MAX_ENTRIES = 100_000  # past this, expired entries are dropped (one per host ever seen)
_STATE_KEY = "hostkeys"


class RegistryUnavailable(SkylineError):
    """The registry could not say what key a host has; the upload may be tried again later."""


@dataclasses.dataclass(frozen=True)
class HostKey:
    public_key: str  # base64 Ed25519, as enrolled
    state: str  # online, offline or quarantined


class HostKeys:
    """A per-host cache of the registry's GET /api/v1/hosts/{host}; None = not enrolled."""

    def __init__(
        self,
        http: aiohttp.ClientSession,
        registry_url: str,
        *,
        ttl: float = TTL,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.http = http
        self.registry_url = registry_url.rstrip("/")
        self._cache: TtlCache[str, HostKey | None] = TtlCache(ttl, MAX_ENTRIES, clock)

    async def get(self, host: str) -> HostKey | None:
        """The host's enrolled key and state; raises RegistryUnavailable if it cannot tell."""
        return await self._cache.get(host, lambda: self._fetch(host))

    async def _fetch(self, host: str) -> HostKey | None:
        url = f"{self.registry_url}/api/v1/hosts/{quote(host, safe='')}"
        try:
            async with self.http.get(url, timeout=LOOKUP_TIMEOUT) as resp:
                if resp.status == 404:
                    return None
                if resp.status != 200:
                    raise RegistryUnavailable(f"GET {url} answered HTTP {resp.status}")
                data = await resp.json(content_type=None)
        except (aiohttp.ClientError, TimeoutError, ValueError) as exc:
            raise RegistryUnavailable(f"GET {url} failed: {exc or type(exc).__name__}") from exc
        if not isinstance(data, dict):
            raise RegistryUnavailable(f"GET {url} answered something other than a JSON object")
        public_key, state = data.get("public_key"), data.get("state")
        if not isinstance(public_key, str) or not isinstance(state, str):
            raise RegistryUnavailable(f"GET {url} answered without public_key and state")
        return HostKey(public_key, state)


def for_runtime(runtime: Runtime) -> HostKeys:
    """The collector's one cache, made on first use from its config and HTTP session."""
    keys = runtime.state.get(_STATE_KEY)
    if keys is None:
        keys = HostKeys(runtime.http, runtime.config.collector.registry_url)
        runtime.state[_STATE_KEY] = keys
    return keys
