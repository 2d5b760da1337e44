"""An HTTP error answer as one readable line, whoever reads it (the CLI, its host commands,
the builder): a Skyline JSON error's `error`, else the start of the text, bounded."""

from __future__ import annotations

import json
from collections.abc import AsyncIterator

import aiohttp
import pytest
from aiohttp import web
from aiohttp.test_utils import TestServer

from services.common.http import (
    ERROR_BODY_LIMIT,
    ERROR_TEXT_LIMIT,
    error,
    error_text,
    response_error,
)


def test_a_skyline_json_error_gives_its_error() -> None:
    body = error(404, "no build 7").text
    assert body is not None
    assert error_text(body, 404, "Not Found") == "no build 7"
    assert error_text(body.encode(), 404) == "no build 7"
    # Another JSON object's `error`, whatever its type, is still the explanation.
    assert error_text(json.dumps({"error": {"code": 7}}), 400) == "{'code': 7}"


@pytest.mark.parametrize(
    "body",
    ['{"status": 400}', "[1, 2]", '"quoted"', "<html>\n  <b>Bad  Gateway</b>\n</html>"],
)
def test_any_other_body_gives_its_text_on_one_line(body: str) -> None:
    assert error_text(body, 400) == " ".join(body.split())


def test_an_empty_body_gives_the_reason_else_the_status() -> None:
    assert error_text(b"  \n", 502, "Bad Gateway") == "Bad Gateway"
    assert error_text("", 502, None) == "HTTP 502"
    assert error_text('{"error": null}', 500) == '{"error": null}'


def test_the_explanation_is_bounded() -> None:
    assert len(error_text("x" * 10_000, 500)) == ERROR_TEXT_LIMIT
    long_error = json.dumps({"error": "y\n" * 10_000})
    assert error_text(long_error, 400) == ("y " * ERROR_TEXT_LIMIT)[:ERROR_TEXT_LIMIT]
    assert error_text(b"\xff\xfe oops", 500) == "\ufffd\ufffd oops"


async def _answers(request: web.Request) -> web.StreamResponse:
    if request.path == "/json":
        raise error(409, "host builder-1 is enrolled with another key")
    # A streamed (chunked) answer far over the limit: read no more of it than the limit.
    response = web.StreamResponse(status=502, reason="Bad Gateway")
    await response.prepare(request)
    for _ in range(64):
        await response.write(b"z" * 64 * 1024)
    return response


@pytest.fixture
async def server() -> AsyncIterator[TestServer]:
    app = web.Application()
    app.router.add_get("/{name}", _answers)
    async with TestServer(app) as server:
        yield server


async def test_a_client_answer_is_read_within_bounds(server: TestServer) -> None:
    async with aiohttp.ClientSession() as http:
        async with http.get(server.make_url("/json")) as response:
            assert await response_error(response) == "host builder-1 is enrolled with another key"
        async with http.get(server.make_url("/huge")) as response:
            assert response.content_length is None
            assert await response_error(response) == "z" * ERROR_TEXT_LIMIT
            assert not response.content.at_eof()  # the rest was never read
    assert ERROR_BODY_LIMIT < 64 * 64 * 1024
