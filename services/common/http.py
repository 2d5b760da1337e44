"""HTTP plumbing: one aiohttp app factory with a JSON error boundary and a health route."""

from __future__ import annotations

import json
import logging
from collections.abc import Awaitable, Callable, Sequence

from aiohttp import web

from . import telemetry
from .errors import describe, is_unavailable

log = logging.getLogger(__name__)


def error(status: int, message: str) -> web.HTTPException:
    """An HTTP error whose JSON body says what went wrong, for the caller to read."""
    exc_class = _STATUS_CLASSES.get(status, web.HTTPInternalServerError)
    return exc_class(
        text=json.dumps({"error": message, "status": status}),
        content_type="application/json",
    )


def query_limit(request: web.Request, default: int, maximum: int) -> int:
    """The request's `?limit=`: `default` when absent, else a whole number from 1 to
    `maximum`; anything else is a 400."""
    raw = request.query.get("limit")
    if raw is None:
        return default
    if not raw.isdigit() or not 1 <= int(raw) <= maximum:
        raise error(400, f"limit must be a whole number from 1 to {maximum}")
    return int(raw)


class _PayloadTooLarge(web.HTTPClientError):
    # aiohttp's HTTPRequestEntityTooLarge insists on (max_size, actual_size) arguments.
    status_code = 413


_STATUS_CLASSES: dict[int, type[web.HTTPException]] = {
    400: web.HTTPBadRequest,
    401: web.HTTPUnauthorized,
    403: web.HTTPForbidden,
    404: web.HTTPNotFound,
    409: web.HTTPConflict,
    413: _PayloadTooLarge,
    422: web.HTTPUnprocessableEntity,
    429: web.HTTPTooManyRequests,
    500: web.HTTPInternalServerError,
    503: web.HTTPServiceUnavailable,
}


@web.middleware
async def _error_boundary(
    request: web.Request, handler: Callable[[web.Request], Awaitable[web.StreamResponse]]
) -> web.StreamResponse:
    try:
        return await handler(request)
    except web.HTTPException:
        raise
    except Exception as exc:
        if is_unavailable(exc):  # the database or a peer is down: the caller should retry
            log.warning("%s %s: %s", request.method, request.path, describe(exc))
            raise error(503, "temporarily unavailable, try again") from None
        # Log the details; tell the caller nothing about the internals.
        log.exception("%s %s failed", request.method, request.path)
        raise error(500, "internal error") from None


async def _health(request: web.Request) -> web.Response:
    return web.json_response({"status": "ok"})


def make_app(routes: Sequence[web.AbstractRouteDef]) -> web.Application:
    app = web.Application(
        middlewares=[telemetry.server_middleware, _error_boundary], client_max_size=1024**2
    )
    app.add_routes([web.get("/healthz", _health), *routes])
    return app


async def serve(app: web.Application, listen: str) -> web.AppRunner:
    host, _, port = listen.rpartition(":")
    runner = web.AppRunner(app, access_log=None)
    await runner.setup()
    await web.TCPSite(runner, host or "127.0.0.1", int(port)).start()
    log.info("listening on http://%s", listen)
    return runner
