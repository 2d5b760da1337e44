"""`skyline cancel BUILD`: the build's owner stops it (the dispatcher revokes its leases)."""

from __future__ import annotations

from typing import Any

import aiohttp

from services.common.config import Config

from . import common
from .common import dispatcher_url
from .submit import SubmitError, _raise_for


def owner_token(config: Config) -> str:
    """The owner's token: its broker password (amqp_password_file), one secret for both."""
    if not config.amqp_user:
        raise SubmitError("cancelling needs your owner token: set amqp_user and amqp_password_file")
    return config.secret(config.amqp_password_file, "amqp_password_file")


async def cancel(config: Config, build_id: int, *, token: str = "") -> dict[str, Any]:
    """Ask the dispatcher to cancel `build_id`; its answer (the build failed, leases revoked)."""
    headers = {"Authorization": f"Bearer {token or owner_token(config)}"}
    url = f"{dispatcher_url(config)}/api/v1/builds/{build_id}/cancel"
    async with (
        aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=60)) as http,
        http.post(url, headers=headers) as response,
    ):
        await _raise_for(response, f"cancelling build {build_id}")
        return await response.json()


def describe(reply: dict[str, Any]) -> list[str]:
    lines = [f"build {reply['build_id']} {reply['state']}: {reply['reason']}"]
    if reply["cancelled_tasks"]:
        lines.append(f"  {reply['cancelled_tasks']} task(s) cancelled")
    lines += [f"  lease {r['lease_id']} on {r['host']} revoked" for r in reply["revoked"]]
    return lines


def register(commands: Any) -> None:
    c = commands.add_parser("cancel", help="cancel a build of yours (its builders stop)")
    c.add_argument("build_id", type=int)
    common.add_json(c)
    c.set_defaults(func=cmd_cancel)


def cmd_cancel(args: Any) -> int:
    reply = common.run(cancel(common.load(args), args.build_id))
    common.emit(args, reply, describe)
    return common.OK
