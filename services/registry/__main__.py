"""skyline-registry: enrols builder hosts and tracks their status from heartbeats."""

import dataclasses
from pathlib import Path

from skyline_messages import (
    HostHeartbeatV1,
    TaskFinishedV1,
    TaskLeasedV1,
    TaskMismatchV1,
    TaskVerifiedV1,
)

from services.common.service import Periodic, Runtime, Service

from . import broker
from .handlers import mark_silent_hosts_offline, on_heartbeat, on_heartbeats
from .history import HISTORY
from .qos_events import on_task_finished, on_task_leased, on_task_mismatch, refresh_stale
from .routes import ROUTES
from .verified import on_task_verified


async def connect_broker_admin(runtime: Runtime) -> None:
    runtime.state["broker_admin"] = broker.admin_for(runtime.config)


SERVICE = Service(
    name="registry",
    # Verified results grade their hosts' trust (verified.py); leases, finishes and verdicts
    # rate their quality of service (qos_events.py).
    handlers={
        HostHeartbeatV1: on_heartbeat,
        TaskVerifiedV1: on_task_verified,
        TaskLeasedV1: on_task_leased,
        TaskFinishedV1: on_task_finished,
        TaskMismatchV1: on_task_mismatch,
    },
    batched={HostHeartbeatV1: on_heartbeats},  # on the bus: many heartbeats per transaction
    batching=lambda config: dataclasses.replace(
        config.bus, batch_concurrency=config.registry.heartbeat_batch_concurrency
    ),
    routes=ROUTES,
    listen=lambda config: config.registry.listen,
    periodic=[
        Periodic(
            "offline-sweep",
            lambda config: config.registry.heartbeat_timeout / 4,
            mark_silent_hosts_offline,
        ),
        Periodic(
            "qos-refresh",
            lambda config: min(60.0, config.registry.qos.refresh_seconds / 4),
            refresh_stale,
        ),
    ],
    migrations=Path(__file__).parent / "migrations",
    on_start=connect_broker_admin,
    history=HISTORY,
)


def main() -> None:
    SERVICE.main()


if __name__ == "__main__":
    main()
