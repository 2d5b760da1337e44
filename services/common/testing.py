"""Test helpers for any service: a Runtime on a real database, its outbox, its HTTP API.

Handlers publish through the outbox table, so a test reads what a handler "sent" from there;
the relay never runs and nothing reaches a broker.
"""

from __future__ import annotations

import asyncio
import contextlib
import subprocess
from collections.abc import AsyncIterator, Awaitable, Callable, Mapping, Sequence
from pathlib import Path
from typing import TypeVar

import aiohttp
from aiohttp import web
from aiohttp.test_utils import TestClient, TestServer
from fedora_messaging import message as fm

from . import db, outbox
from .config import Config
from .http import make_app
from .rpmfiles import REPRODUCIBLE_MACROS, macro_args, make_srpm, tool_env
from .service import RUNTIME, Runtime

T = TypeVar("T")

SERVICES_DIR = Path(__file__).resolve().parent.parent


class OutboxOnlyBus:
    """Stands in for the bus when only the outbox matters."""

    user = "test"

    async def publish(self, msg: fm.Message) -> None:  # pragma: no cover - never called
        raise AssertionError("tests read the outbox table; nothing is published")

    async def publish_encoded(self, wires: object) -> None:  # pragma: no cover - never called
        raise AssertionError("tests read the outbox table; nothing is published")


@contextlib.asynccontextmanager
async def service_runtime(
    config: Config, service: str, *, http_timeout: float = 60
) -> AsyncIterator[Runtime]:
    """A Runtime for `service` on `config.database_url`, its migrations applied."""
    pool = await db.create_pool(config.database_url, service)
    try:
        await db.migrate(pool, service, SERVICES_DIR / service / "migrations")
        bus = OutboxOnlyBus()
        timeout = aiohttp.ClientTimeout(total=http_timeout)
        async with aiohttp.ClientSession(timeout=timeout) as http:
            yield Runtime(service, config, pool, bus, outbox.Relay(pool, bus), http)  # type: ignore[arg-type]
    finally:
        await pool.close()


async def outbox_messages(runtime: Runtime) -> list[fm.Message]:
    """Every message the service queued for publication so far, oldest first."""
    rows = await runtime.pool.fetch(
        "SELECT routing_key, body, headers::text AS headers, message_id, priority,"
        " message::text AS message FROM outbox ORDER BY id"
    )
    return [outbox.wire_to_message(outbox.row_wire(r)) for r in rows]


@contextlib.asynccontextmanager
async def api_client(
    runtime: Runtime, routes: Sequence[web.AbstractRouteDef]
) -> AsyncIterator[TestClient]:
    """An HTTP client for the service's routes, served on a loopback port."""
    app = make_app(routes)
    app[RUNTIME] = runtime
    async with TestClient(TestServer(app)) as client:
        yield client


_SPEC = """\
Name:           {name}
Version:        {version}
Release:        {release}
Summary:        Skyline test package
License:        MIT
{buildarch}
%global debug_package %{{nil}}

%description
A package built by Skyline's tests.
{packages}
%install
mkdir -p %{{buildroot}}/usr/share/{name}
{installs}
{files}
%changelog
* Mon Jan 01 2024 Skyline Tests <tests@example.invalid> - {version}-{release}
- Test build
"""


def build_test_package(
    out_dir: Path,
    *,
    name: str = "skyline-test",
    version: str = "1.0",
    release: str = "1",
    arch: str = "noarch",
    subpackages: Mapping[str, str] | None = None,
) -> tuple[Path, list[Path]]:
    """Build a tiny real package with rpmbuild: (its SRPM, its binary RPMs built for `arch`).

    `subpackages` maps a subpackage suffix ("devel") to extra preamble lines for it ("" or,
    say, "BuildArch: noarch", or "Version: 1.54\nRelease: 500" as perl's subpackages have).
    Nothing is compiled, so any arch rpm knows can be targeted from any machine.
    """
    spec_dir = out_dir / "spec"
    spec_dir.mkdir(parents=True)
    subs = dict(subpackages or {})
    packages = "".join(
        f"%package {sub}\nSummary: {sub}\n{preamble}\n%description {sub}\n{sub}.\n\n"
        for sub, preamble in subs.items()
    )
    installs = "\n".join(
        f"echo {part} > %{{buildroot}}/usr/share/{name}/{part}" for part in ["main", *subs]
    )
    files = f"%files\n/usr/share/{name}/main\n" + "".join(
        f"%files {sub}\n/usr/share/{name}/{sub}\n" for sub in subs
    )
    spec = spec_dir / f"{name}.spec"
    spec.write_text(
        _SPEC.format(
            name=name,
            version=version,
            release=release,
            buildarch="BuildArch:      noarch" if arch == "noarch" else "",
            packages=packages,
            installs=installs,
            files=files,
        )
    )
    srpm = make_srpm(spec, out_dir / "srpm")
    top = out_dir / "rpmbuild"
    target = [] if arch == "noarch" else ["--target", arch]
    subprocess.run(
        [
            "rpmbuild",
            "--rebuild",
            "--nodeps",
            "--define",
            f"_topdir {top}",
            *macro_args(REPRODUCIBLE_MACROS),
            *target,
            str(srpm),
        ],
        env={**tool_env(), "HOME": str(top)},
        stdin=subprocess.DEVNULL,
        check=True,
        capture_output=True,
    )
    return srpm, sorted((top / "RPMS").rglob("*.rpm"))


async def until(check: Callable[[], Awaitable[T]], what: str, timeout: float = 60) -> T:
    """Wait for a condition, not for a fixed time: `check` again every 0.1 s until it gives a
    true value (returned), or fail naming `what` after `timeout` seconds."""
    deadline = asyncio.get_running_loop().time() + timeout
    while not (result := await check()):
        if asyncio.get_running_loop().time() > deadline:
            raise AssertionError(f"timed out waiting until {what}")
        await asyncio.sleep(0.1)
    return result
