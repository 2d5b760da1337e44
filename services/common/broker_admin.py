"""Broker users, permissions and host queues, through RabbitMQ's management HTTP API.

Why the HTTP API and not `rabbitmqctl`: rabbitmqctl must run beside the broker with its
Erlang cookie, so a registry in another container or on another machine could not use it; the
management API is reachable over HTTP with an administrator's credentials, which only the
registry and `skyline local up` hold (never a host, a packager or another service).
"""

from __future__ import annotations

import base64
import dataclasses
import logging
import secrets
from collections.abc import Callable
from typing import Any
from urllib.parse import quote, unquote, urlsplit

import aiohttp

from . import principals
from .config import with_credentials
from .principals import Permissions

log = logging.getLogger(__name__)
TIMEOUT = aiohttp.ClientTimeout(total=30)


class BrokerAdminError(RuntimeError):
    """The management API refused a request or could not be reached."""


def vhost_of(amqp_url: str) -> str:
    """The vhost an AMQP URL names ("/" when its path is empty)."""
    path = urlsplit(amqp_url).path.removeprefix("/")
    return unquote(path) if path else "/"


def new_password() -> str:
    return secrets.token_urlsafe(32)


@dataclasses.dataclass
class BrokerAdmin:
    """A client of the management API, for one vhost and one exchange."""

    api_url: str  # e.g. http://127.0.0.1:15672
    user: str
    password: str
    vhost: str = "/"
    exchange: str = "amq.topic"

    async def _call(
        self, method: str, path: str, body: Any = None, *, missing_ok: bool = False
    ) -> Any:
        url = self.api_url.rstrip("/") + "/api/" + path
        token = base64.b64encode(f"{self.user}:{self.password}".encode()).decode()
        headers = {"Authorization": f"Basic {token}"}
        try:
            async with (
                aiohttp.ClientSession(timeout=TIMEOUT) as http,
                http.request(method, url, json=body, headers=headers) as response,
            ):
                if response.status == 404 and missing_ok:
                    return None
                if response.status >= 300:
                    text = (await response.text())[:500]
                    raise BrokerAdminError(f"{method} {path}: {response.status} {text}")
                return await response.json() if response.status == 200 else None
        except (aiohttp.ClientError, TimeoutError) as exc:
            raise BrokerAdminError(f"broker management API at {self.api_url}: {exc}") from exc

    def _v(self) -> str:
        return quote(self.vhost, safe="")

    async def put_user(
        self, name: str, password: str, perms: Permissions, *, tags: str = ""
    ) -> None:
        """Create or update `name` with `password` and exactly these permissions. `tags` are
        RabbitMQ user tags (comma-separated); principals have none."""
        n = quote(name, safe="")
        await self._call("PUT", f"users/{n}", {"password": password, "tags": tags})
        await self._call(
            "PUT",
            f"permissions/{self._v()}/{n}",
            {"configure": perms.configure, "write": perms.write, "read": perms.read},
        )
        await self._call(
            "PUT",
            f"topic-permissions/{self._v()}/{n}",
            {"exchange": self.exchange, "write": perms.topic_write, "read": perms.topic_read},
        )

    async def delete_user(self, name: str) -> None:
        """Delete `name` and close its connections at once (a revoked host is cut off now)."""
        await self._call("DELETE", f"users/{quote(name, safe='')}", missing_ok=True)
        for conn in await self._call("GET", "connections") or []:
            if conn.get("user") == name:
                await self._call(
                    "DELETE", f"connections/{quote(conn['name'], safe='')}", missing_ok=True
                )

    async def user_exists(self, name: str) -> bool:
        return await self._call("GET", f"users/{quote(name, safe='')}", missing_ok=True) is not None

    async def declare_host_queue(self, host: str, delivery_limit: int = 5) -> None:
        """The host's lease queue and its dead-letter queue, bound to its leases (and their
        revocations) only."""
        queue = principals.host_queue(host)
        dlx = principals.DEAD_LETTER_EXCHANGE
        v = self._v()
        await self._call("PUT", f"exchanges/{v}/{dlx}", {"type": "direct", "durable": True})
        await self._call(
            "PUT",
            f"queues/{v}/{queue}.dead",
            {"durable": True, "arguments": {"x-queue-type": "quorum"}},
        )
        await self._call("POST", f"bindings/{v}/e/{dlx}/q/{queue}.dead", {"routing_key": queue})
        await self._call(
            "PUT",
            f"queues/{v}/{queue}",
            {"durable": True, "arguments": queue_arguments(queue, delivery_limit)},
        )
        # Its leases, and the revocations of them (same queue: a revocation follows its lease).
        for topic in ("skyline.task.leased", "skyline.task.revoked"):
            await self._call(
                "POST",
                f"bindings/{v}/e/{quote(self.exchange, safe='')}/q/{queue}",
                {"routing_key": f"{topic}.{host}"},
            )

    async def delete_host_queue(self, host: str) -> None:
        queue = principals.host_queue(host)
        for name in (queue, f"{queue}.dead"):
            await self._call("DELETE", f"queues/{self._v()}/{name}", missing_ok=True)


def queue_arguments(queue: str, delivery_limit: int) -> dict[str, Any]:
    """A consumer queue: quorum, dead-lettered to `<queue>.dead` after `delivery_limit`."""
    return {
        "x-queue-type": "quorum",
        "x-dead-letter-exchange": principals.DEAD_LETTER_EXCHANGE,
        "x-dead-letter-routing-key": queue,
        # A message that keeps crashing its handler ends in the dead-letter queue
        # instead of looping forever.
        "x-delivery-limit": delivery_limit,
    }


class Principals:
    """Makes broker users with exactly a principal's permissions (principals.py) and returns
    their AMQP URLs: `skyline local up`, the tests and the benchmarks all make them here.
    `password(name)` chooses each user's password (a fresh one by default)."""

    def __init__(
        self,
        admin: BrokerAdmin,
        amqp_url: str,
        password: Callable[[str], str] = lambda name: new_password(),
    ) -> None:
        self.admin = admin
        self.amqp_url = amqp_url
        self.password = password

    @classmethod
    def from_admin_url(cls, admin_amqp_url: str, api_url: str, **kw: Any) -> Principals:
        """As the administrator named by an AMQP URL, through the management API at api_url."""
        parts = urlsplit(admin_amqp_url)
        admin = BrokerAdmin(
            api_url,
            unquote(parts.username or ""),
            unquote(parts.password or ""),
            vhost=vhost_of(admin_amqp_url),
        )
        return cls(admin, admin_amqp_url, **kw)

    async def user(self, name: str, perms: Permissions, tags: str = "") -> str:
        password = self.password(name)
        await self.admin.put_user(name, password, perms, tags=tags)
        return with_credentials(self.amqp_url, name, password)

    async def service(self, service: str) -> str:
        perms = principals.service_permissions(service, self.admin.exchange)
        return await self.user(principals.service_user(service), perms)

    async def host(self, host: str) -> str:
        """A host's user and its lease queue, as the registry makes them at enrolment."""
        await self.admin.declare_host_queue(host)
        perms = principals.host_permissions(host, self.admin.exchange)
        return await self.user(principals.host_user(host), perms)

    async def owner(self, owner: str) -> str:
        perms = principals.owner_permissions(owner, self.admin.exchange)
        return await self.user(principals.owner_user(owner), perms)

    async def monitor(self) -> str:
        perms = principals.monitor_permissions(self.admin.exchange)
        return await self.user(principals.MONITOR_USER, perms)
