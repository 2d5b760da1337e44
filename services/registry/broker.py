"""Each enrolled host's broker user: made at enrolment, deleted on quarantine or revocation."""

from __future__ import annotations

import logging

from services.common import principals
from services.common.broker_admin import BrokerAdmin, BrokerAdminError, new_password, vhost_of
from services.common.config import Config
from services.common.errors import Retry

log = logging.getLogger(__name__)


def admin_for(config: Config) -> BrokerAdmin | None:
    """The management API client, or None where the registry makes no broker users."""
    settings = config.registry
    if not settings.broker_api_url:
        return None
    return BrokerAdmin(
        settings.broker_api_url,
        settings.broker_api_user,
        config.secret(settings.broker_api_password_file, "[registry] broker_api_password_file"),
        vhost=vhost_of(config.amqp_url),
        exchange=config.exchange,
    )


async def issue_credentials(admin: BrokerAdmin, host: str) -> dict[str, str]:
    """A new password for the host's user (made if missing), its permissions and its lease
    queue. Every call rotates the password: the volunteer's agent keeps the one it got last."""
    user, password = principals.host_user(host), new_password()
    try:
        await admin.put_user(user, password, principals.host_permissions(host, admin.exchange))
        await admin.declare_host_queue(host)
    except BrokerAdminError as exc:
        raise Retry(f"cannot create broker user {user}: {exc}") from exc
    log.info("broker user %s ready", user)
    return {"user": user, "password": password, "queue": principals.host_queue(host)}


async def revoke_credentials(admin: BrokerAdmin, host: str) -> None:
    """Delete the host's broker user and close its connections: it can neither publish nor
    read its leases until an admin lets it enrol again."""
    try:
        await admin.delete_user(principals.host_user(host))
    except BrokerAdminError as exc:
        raise Retry(f"cannot delete broker user of {host}: {exc}") from exc


async def create_owner_user(admin: BrokerAdmin, owner: str, token: str) -> None:
    """The packager's broker user: its password is its owner token (one secret for both the
    broker and the HTTP APIs); it may publish only `skyline.build.request.<owner>`."""
    try:
        user = principals.owner_user(owner)
        await admin.put_user(user, token, principals.owner_permissions(owner, admin.exchange))
    except BrokerAdminError as exc:
        raise Retry(f"cannot create broker user {owner}: {exc}") from exc


async def delete_owner_user(admin: BrokerAdmin, owner: str) -> None:
    try:
        await admin.delete_user(principals.owner_user(owner))
    except BrokerAdminError as exc:
        raise Retry(f"cannot delete broker user {owner}: {exc}") from exc
