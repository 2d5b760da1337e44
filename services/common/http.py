"""HTTP plumbing: one aiohttp app factory with a JSON error boundary and a health route, and
for clients, an error answer as a readable line."""

from __future__ import annotations

import json
import logging
from collections.abc import Awaitable, Callable, Sequence

import aiohttp
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


# -- clients --------------------------------------------------------------------------------------

# An error answer's body is read up to this many bytes (anyone's server may answer a fetch with
# a huge page), and its explanation shown up to this many characters, on one line.
ERROR_BODY_LIMIT = 64 * 1024
ERROR_TEXT_LIMIT = 500


def error_text(body: bytes | str, status: int, reason: str | None = None) -> str:
    """The explanation in an HTTP error answer, as one line: the `error` of a Skyline JSON
    error body (`error` above), else the start of the body's text, else the reason phrase."""
    text = body.decode(errors="replace") if isinstance(body, bytes) else body
    try:
        data = json.loads(text)
    except ValueError:
        data = None
    if isinstance(data, dict) and data.get("error") is not None:
        text = str(data["error"])
    line = " ".join(text.split())[:ERROR_TEXT_LIMIT]
    return line or reason or f"HTTP {status}"


async def response_error(response: aiohttp.ClientResponse) -> str:
    """`error_text` of an aiohttp client's answer, of at most ERROR_BODY_LIMIT bytes read."""
    size = response.content_length
    if size is not None and size <= ERROR_BODY_LIMIT:
        body = await response.read()  # kept by aiohttp: a trace hook may have read it already
    else:
        body = b""
        while len(body) < ERROR_BODY_LIMIT:
            chunk = await response.content.read(ERROR_BODY_LIMIT - len(body))
            if not chunk:
                break
            body += chunk
    return error_text(body, response.status, response.reason)
