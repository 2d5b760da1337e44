"""Which owner a Bearer token belongs to, asked of the registry and remembered briefly.

The registry alone holds owners' token digests (GET /api/v1/owners/whoami); a service that
takes owners' requests over HTTP (the collector's source uploads, the dispatcher's cancel)
keeps its answers for a short TTL, keyed by the token's digest (no token is kept in memory),
so a burst of requests asks once. The TTL bounds how long a revoked token still works there.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable

import aiohttp
from aiohttp import web

from .errors import SkylineError
from .http import error
from .service import Runtime
from .tokens import bearer, token_sha256
from .ttlcache import TtlCache

log = logging.getLogger(__name__)

TTL = 30.0
MAX_ENTRIES = 10_000  # past this, expired entries are dropped
# The caller waits on this lookup: better a quick 503 and a retry than hanging on a registry
# that does not answer.
LOOKUP_TIMEOUT = aiohttp.ClientTimeout(total=10)
_STATE_KEY = "owner-tokens"


class OwnerLookupFailed(SkylineError):
    """The registry could not say whose token it is; the request may be tried again later."""


class OwnerTokens:
    """A cache of the registry's whoami answers; None = not a current owner's token."""

    def __init__(
        self,
        http: aiohttp.ClientSession,
        registry_url: str,
        *,
        ttl: float = TTL,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.http = http
        self.url = f"{registry_url.rstrip('/')}/api/v1/owners/whoami"
        self._cache: TtlCache[str, str | None] = TtlCache(ttl, MAX_ENTRIES, clock)

    async def owner(self, token: str) -> str | None:
        """The owner of `token`; raises OwnerLookupFailed if the registry cannot tell."""
        return await self._cache.get(token_sha256(token), lambda: self._whoami(token))

    async def _whoami(self, token: str) -> str | None:
        headers = {"Authorization": f"Bearer {token}"}
        try:
            async with self.http.get(self.url, headers=headers, timeout=LOOKUP_TIMEOUT) as resp:
                if resp.status == 401:
                    return None
                if resp.status != 200:
                    raise OwnerLookupFailed(f"GET {self.url} answered HTTP {resp.status}")
                data = await resp.json(content_type=None)
        except (aiohttp.ClientError, TimeoutError, ValueError) as exc:
            raise OwnerLookupFailed(f"GET {self.url} failed: {exc or type(exc).__name__}") from exc
        owner = data.get("owner") if isinstance(data, dict) else None
        if not isinstance(owner, str):
            raise OwnerLookupFailed(f"GET {self.url} answered without an owner")
        return owner


def for_runtime(runtime: Runtime, registry_url: str) -> OwnerTokens:
    """The service's one cache, made on first use from its HTTP session."""
    tokens = runtime.state.get(_STATE_KEY)
    if tokens is None:
        tokens = OwnerTokens(runtime.http, registry_url)
        runtime.state[_STATE_KEY] = tokens
    return tokens


async def owner_of(request: web.Request, runtime: Runtime, registry_url: str) -> str:
    """The owner whose token the request carries: 401 without a current one, 503 when the
    registry cannot tell (the client may retry)."""
    token = bearer(request)
    if token is None:
        raise error(401, "this needs an owner token: Authorization: Bearer <token>")
    try:
        owner = await for_runtime(runtime, registry_url).owner(token)
    except OwnerLookupFailed as exc:
        log.warning("cannot check an owner token: %s", exc)
        raise error(503, "the registry cannot be asked whose token this is; try again") from None
    if owner is None:
        raise error(401, "unknown or revoked owner token")
    return owner
