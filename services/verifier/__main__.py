"""skyline-verifier: checks each host's signed attestation before anything is stored."""

from pathlib import Path

from skyline_messages import TaskFinishedV1, TaskLeasedV1

from services.common.service import Service

from .handlers import on_task_finished, on_task_leased

SERVICE = Service(
    name="verifier",
    handlers={TaskLeasedV1: on_task_leased, TaskFinishedV1: on_task_finished},
    migrations=Path(__file__).parent / "migrations",
)


def main() -> None:
    SERVICE.main()


if __name__ == "__main__":
    main()
