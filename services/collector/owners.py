"""Which owner a Bearer token belongs to: the registry's answer (services/common/owner_tokens.py),
for the collector's source uploads."""

from __future__ import annotations

from aiohttp import web

from services.common import owner_tokens
from services.common.owner_tokens import OwnerLookupFailed as RegistryUnavailable
from services.common.owner_tokens import OwnerTokens
from services.common.service import Runtime

__all__ = ["OwnerTokens", "RegistryUnavailable", "for_runtime", "owner_of"]


def for_runtime(runtime: Runtime) -> OwnerTokens:
    return owner_tokens.for_runtime(runtime, runtime.config.collector.registry_url)


async def owner_of(request: web.Request, runtime: Runtime) -> str:
    return await owner_tokens.owner_of(request, runtime, runtime.config.collector.registry_url)
