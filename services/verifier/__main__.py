"""skyline-verifier: checks each host's signed attestation before anything is stored."""

from pathlib import Path

from skyline_messages import TaskFinishedV1, TaskLeasedV1

from services.common.service import Periodic, Service

from .handlers import on_task_finished, on_task_leased
from .throttle_store import reevaluate

SERVICE = Service(
    name="verifier",
    handlers={TaskLeasedV1: on_task_leased, TaskFinishedV1: on_task_finished},
    periodic=[
        Periodic("throttle", lambda config: config.verifier.throttle_check_seconds, reevaluate)
    ],
    migrations=Path(__file__).parent / "migrations",
)


def main() -> None:
    SERVICE.main()


if __name__ == "__main__":
    main()
