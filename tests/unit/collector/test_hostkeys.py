"""The collector's cache of hosts' enrolled keys, against a stand-in registry."""

from __future__ import annotations

from collections.abc import AsyncIterator

import aiohttp
import pytest
from aiohttp import web
from aiohttp.test_utils import TestServer

from services.collector.hostkeys import HostKey, HostKeys, RegistryUnavailable

KEY = "k" * 43 + "="


class Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


@pytest.fixture
async def registry() -> AsyncIterator[tuple[str, dict[str, web.Response | None], list[str]]]:
    """(url, answers by host, hosts asked for); a host with no answer is a 404."""
    answers: dict[str, web.Response | None] = {}
    asked: list[str] = []

    async def get_host(request: web.Request) -> web.StreamResponse:
        host = request.match_info["host"]
        asked.append(host)
        answer = answers.get(host)
        if answer is None:
            return web.json_response({"error": "no such host"}, status=404)
        return answer

    app = web.Application()
    app.router.add_get("/api/v1/hosts/{host}", get_host)
    server = TestServer(app)
    await server.start_server()
    yield str(server.make_url("")), answers, asked
    await server.close()


def _host(state: str = "online") -> web.Response:
    return web.json_response({"host": "b1", "public_key": KEY, "state": state, "owner": "x"})


async def test_answers_are_kept_for_the_ttl(
    registry: tuple[str, dict[str, web.Response | None], list[str]],
) -> None:
    url, answers, asked = registry
    clock = Clock()
    async with aiohttp.ClientSession() as http:
        keys = HostKeys(http, url, ttl=60, clock=clock)
        answers["b1"] = _host()
        assert await keys.get("b1") == HostKey(KEY, "online")
        clock.now += 59
        assert await keys.get("b1") == HostKey(KEY, "online")
        assert asked == ["b1"]
        clock.now += 2  # expired: asked again, and a quarantine shows
        answers["b1"] = _host("quarantined")
        assert await keys.get("b1") == HostKey(KEY, "quarantined")
        assert await keys.get("nobody") is None
        assert asked == ["b1", "b1", "nobody"]


@pytest.mark.parametrize(
    "answer",
    [
        web.json_response({"error": "db down"}, status=500),
        web.Response(text="<html>proxy error</html>", status=200),
        web.json_response(["not", "an", "object"]),
        web.json_response({"host": "b1", "state": "online"}),  # no key
    ],
    ids=["500", "not json", "not an object", "no key"],
)
async def test_a_registry_in_trouble_is_unavailable_and_not_remembered(
    registry: tuple[str, dict[str, web.Response | None], list[str]], answer: web.Response
) -> None:
    url, answers, asked = registry
    async with aiohttp.ClientSession() as http:
        keys = HostKeys(http, url)
        answers["b1"] = answer
        with pytest.raises(RegistryUnavailable):
            await keys.get("b1")
        answers["b1"] = _host()
        assert await keys.get("b1") == HostKey(KEY, "online")
    assert asked == ["b1", "b1"]


async def test_an_unreachable_registry_is_unavailable() -> None:
    async with aiohttp.ClientSession() as http:
        with pytest.raises(RegistryUnavailable, match="failed"):
            await HostKeys(http, "http://127.0.0.1:9").get("b1")
