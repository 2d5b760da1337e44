"""skyline-collector: takes builders' uploads and puts verified results into Koji storage;
keeps the contributors' statistics and serves their dashboard."""

from pathlib import Path

from skyline_messages import (
    BuildCompleteV1,
    BuildFailedV1,
    TaskFinishedV1,
    TaskLeasedV1,
    TaskReplicateV1,
    TaskVerifiedV1,
)

from services.common.service import Periodic, Service

from . import kojidraft, repos, stats_handlers, stats_routes
from .cleanup import INTERVAL, sweep_staging
from .handlers import on_build_complete, on_task_finished, on_task_leased, on_task_verified
from .kojiimport import import_pending
from .routes import ROUTES

SERVICE = Service(
    name="collector",
    handlers={
        TaskLeasedV1: on_task_leased,
        TaskVerifiedV1: stats_handlers.both(stats_handlers.on_task_verified, on_task_verified),
        **stats_handlers.HANDLERS,
        # The Koji import shares these with the statistics: the env manifest, the intent.
        TaskFinishedV1: stats_handlers.both(stats_handlers.on_task_finished, on_task_finished),
        BuildCompleteV1: stats_handlers.both(stats_handlers.on_build_complete, on_build_complete),
        # A task waiting for agreement: its build may go into Koji as a draft meanwhile.
        TaskReplicateV1: kojidraft.on_task_replicate,
        BuildFailedV1: stats_handlers.both(
            stats_handlers.on_build_failed, kojidraft.on_build_failed
        ),
    },
    routes=[*ROUTES, *stats_routes.ROUTES, *repos.ROUTES],
    listen=lambda config: config.collector.listen,
    periodic=[
        Periodic("staging-sweep", lambda config: INTERVAL, sweep_staging),
        Periodic(
            "koji-import", lambda config: config.collector.koji_import_interval, import_pending
        ),
        Periodic(
            "koji-drafts",
            lambda config: config.collector.koji_import_interval,
            kojidraft.import_drafts,
        ),
    ],
    migrations=Path(__file__).parent / "migrations",
)


def main() -> None:
    SERVICE.main()


if __name__ == "__main__":
    main()
