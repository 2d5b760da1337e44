"""A container health check that means something: the bus and the database are reachable
with this process's own credentials, and the process serves (HTTP) or is online (builder).

    skyline-healthcheck registry|dispatcher|collector|verifier|builder

Reads the same configuration as the service ($SKYLINE_CONF and SKYLINE_* variables); exits 0
when healthy, else 1 with one line saying what failed.
"""

from __future__ import annotations

import asyncio
import json
import sys
import urllib.request

import aio_pika
import asyncpg

from services.builder.host import default_host_name
from services.common.config import Config, load_config

TIMEOUT = 10.0
HTTP_SERVICES = ("registry", "dispatcher", "collector")


async def bus_reachable(config: Config) -> None:
    connection = await aio_pika.connect(config.broker_url(), timeout=TIMEOUT)
    await connection.close()


async def database_reachable(config: Config) -> None:
    conn = await asyncpg.connect(config.database_url, timeout=TIMEOUT)
    try:
        await conn.fetchval("SELECT 1")
    finally:
        await conn.close()


def http_get(url: str) -> dict:
    with urllib.request.urlopen(url, timeout=TIMEOUT) as reply:
        return json.load(reply)


def serving(config: Config, service: str) -> None:
    listen = getattr(config, service).listen
    port = listen.rpartition(":")[2]
    http_get(f"http://127.0.0.1:{port}/healthz")


def builder_online(config: Config) -> None:
    """A builder's broker user comes from the registry at enrolment, so the check is the
    registry's view: enrolled and heartbeating (its heartbeats cross the bus)."""
    host = config.builder.host or default_host_name()
    state = http_get(f"{config.builder.registry_url}/api/v1/hosts/{host}").get("state")
    if state != "online":
        raise RuntimeError(f"the registry says {host} is {state}")


def check(service: str) -> None:
    config = load_config()
    if service == "builder":
        builder_online(config)
        return
    asyncio.run(asyncio.wait_for(bus_reachable(config), TIMEOUT))
    asyncio.run(asyncio.wait_for(database_reachable(config), TIMEOUT))
    if service in HTTP_SERVICES:
        serving(config, service)


def main() -> None:
    if len(sys.argv) != 2 or sys.argv[1] not in (*HTTP_SERVICES, "verifier", "builder"):
        sys.exit(f"usage: {sys.argv[0]} {'|'.join((*HTTP_SERVICES, 'verifier', 'builder'))}")
    try:
        check(sys.argv[1])
    except Exception as exc:
        print(f"unhealthy: {type(exc).__name__}: {exc}"[:300])
        sys.exit(1)
    print("healthy")


if __name__ == "__main__":
    main()
