"""skyline-registry: enrols builder hosts and tracks their status from heartbeats."""

from pathlib import Path

from skyline_messages import HostHeartbeatV1, TaskVerifiedV1

from services.common.service import Periodic, Runtime, Service

from . import broker
from .handlers import mark_silent_hosts_offline, on_heartbeat, on_heartbeats
from .routes import ROUTES
from .verified import on_task_verified


async def connect_broker_admin(runtime: Runtime) -> None:
    runtime.state["broker_admin"] = broker.admin_for(runtime.config)


SERVICE = Service(
    name="registry",
    # Verified results grade their hosts' trust (verified.py).
    handlers={HostHeartbeatV1: on_heartbeat, TaskVerifiedV1: on_task_verified},
    batched={HostHeartbeatV1: on_heartbeats},  # on the bus: many heartbeats per transaction
    routes=ROUTES,
    listen=lambda config: config.registry.listen,
    periodic=[
        Periodic(
            "offline-sweep",
            lambda config: config.registry.heartbeat_timeout / 4,
            mark_silent_hosts_offline,
        )
    ],
    migrations=Path(__file__).parent / "migrations",
    on_start=connect_broker_admin,
)


def main() -> None:
    SERVICE.main()


if __name__ == "__main__":
    main()
