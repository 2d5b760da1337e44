"""skyline-registry: enrols builder hosts and tracks their status from heartbeats."""

from pathlib import Path

from skyline_messages import HostHeartbeatV1

from services.common.service import Periodic, Service

from .handlers import mark_silent_hosts_offline, on_heartbeat, on_heartbeats
from .routes import ROUTES

SERVICE = Service(
    name="registry",
    handlers={HostHeartbeatV1: on_heartbeat},
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
)


def main() -> None:
    SERVICE.main()


if __name__ == "__main__":
    main()
