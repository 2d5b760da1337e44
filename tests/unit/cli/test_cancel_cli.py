"""`skyline cancel`: what it asks the dispatcher, and what it says."""

from __future__ import annotations

import dataclasses
import json

import pytest
from aiohttp import web
from aiohttp.test_utils import TestServer

from services.cli import cancel
from services.cli.__main__ import parser
from services.cli.submit import SubmitError
from services.common.config import load_config

TOKEN = "alice-token-0123456789"


@pytest.fixture
async def dispatcher():
    asked: list[tuple[str, str]] = []

    async def post(request: web.Request) -> web.Response:
        asked.append((request.path, request.headers.get("Authorization", "")))
        if request.match_info["id"] == "9":
            body = {"error": "build 9 is bob's: only its owner may cancel it", "status": 403}
            return web.Response(status=403, text=json.dumps(body), content_type="application/json")
        return web.json_response(
            {
                "build_id": 5,
                "state": "failed",
                "reason": "cancelled by alice",
                "cancelled_tasks": 2,
                "revoked": [{"lease_id": "3f2b8c1e-9a4d-4e6f-8b7a-1c2d3e4f5a6b", "host": "b1"}],
            }
        )

    app = web.Application()
    app.router.add_post("/api/v1/builds/{id}/cancel", post)
    server = TestServer(app)
    await server.start_server()
    base = load_config(env={})
    config = dataclasses.replace(
        base,
        dispatcher=dataclasses.replace(base.dispatcher, listen=f"127.0.0.1:{server.port}"),
    )
    try:
        yield config, asked
    finally:
        await server.close()


async def test_cancel_sends_the_owner_token_and_reports(dispatcher) -> None:
    config, asked = dispatcher
    reply = await cancel.cancel(config, 5, token=TOKEN)
    assert asked == [("/api/v1/builds/5/cancel", f"Bearer {TOKEN}")]
    assert cancel.describe(reply) == [
        "build 5 failed: cancelled by alice",
        "  2 task(s) cancelled",
        "  lease 3f2b8c1e-9a4d-4e6f-8b7a-1c2d3e4f5a6b on b1 revoked",
    ]


async def test_a_refusal_is_the_dispatchers_reason(dispatcher) -> None:
    config, _ = dispatcher
    with pytest.raises(SubmitError, match="only its owner may cancel it"):
        await cancel.cancel(config, 9, token=TOKEN)


def test_without_an_owner_token_it_says_what_to_set() -> None:
    with pytest.raises(SubmitError, match="amqp_user and amqp_password_file"):
        cancel.owner_token(load_config(env={}))


def test_commands_parse() -> None:
    args = parser().parse_args(["cancel", "12"])
    assert args.build_id == 12
    args = parser().parse_args(
        ["mass-rebuild", "a.src.rpm", "--tag", "f42", "--koji-topurl", "https://k/", "--no-wait"]
    )
    assert (args.sources, args.tag, args.koji_topurl, args.no_wait) == (
        ["a.src.rpm"],
        "f42",
        "https://k/",
        True,
    )
