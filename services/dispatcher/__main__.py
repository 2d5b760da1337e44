"""skyline-dispatcher: queues builds and leases each task to an arch-matched builder."""

from pathlib import Path

from skyline_messages import (
    BuildChainRequestV1,
    BuildRequestV1,
    BuildStoredV1,
    HostStatusV1,
    TaskFinishedV1,
    TaskMismatchV1,
    TaskReplicateV1,
    TaskVerifiedV1,
    ThrottleEngagedV1,
    ThrottleReleasedV1,
)

from services.common.service import Periodic, Service

from . import chain_handlers, handlers, throttle
from .routes import ROUTES

SERVICE = Service(
    name="dispatcher",
    handlers={
        BuildRequestV1: handlers.on_build_request,
        BuildChainRequestV1: chain_handlers.on_chain_request,
        HostStatusV1: handlers.on_host_status,
        TaskVerifiedV1: handlers.on_task_verified,
        TaskFinishedV1: handlers.on_task_finished,
        TaskMismatchV1: handlers.on_task_mismatch,
        TaskReplicateV1: handlers.on_task_replicate,
        BuildStoredV1: handlers.on_build_stored,
        ThrottleEngagedV1: throttle.on_throttle_engaged,
        ThrottleReleasedV1: throttle.on_throttle_released,
    },
    # On the bus, statuses are handled many to a transaction (the single handler above serves
    # SERVICE.handle).
    batched={HostStatusV1: handlers.on_host_statuses},
    routes=ROUTES,
    listen=lambda config: config.dispatcher.listen,
    periodic=[
        Periodic(
            "lease-sweep",
            lambda config: config.dispatcher.sweep_seconds,
            handlers.requeue_expired_leases,
        )
    ],
    migrations=Path(__file__).parent / "migrations",
)


def main() -> None:
    SERVICE.main()


if __name__ == "__main__":
    main()
