"""Remove staging folders of finished leases.

The handler that stores a lease cannot remove its uploads itself: its transaction commits
after it returns, and a rollback (then a redelivery) still needs them. So a periodic sweep
removes them once the lease is recorded as stored or superseded (another lease of its task
was stored: replicas and tie-breaks of an accepted task), and gives up on any other lease
(failed, never verified, refused, or of a task still waiting for agreement: the verifier
compares later results with it) after RETENTION, which leaves time to look at refused uploads.
"""

from __future__ import annotations

import asyncio
import datetime
import logging
import shutil

from services.common.service import Runtime

from . import storage, store

log = logging.getLogger(__name__)

INTERVAL = 60.0  # seconds between sweeps
RETENTION = datetime.timedelta(days=7)
BATCH = 200


async def sweep_staging(runtime: Runtime) -> None:
    while True:
        async with runtime.transaction() as ctx:
            lease_ids = await store.claim_leases_to_clean(ctx.conn, RETENTION, BATCH)
            for lease_id in lease_ids:
                folder = storage.staging_dir(runtime.config, lease_id)
                await asyncio.to_thread(shutil.rmtree, folder, ignore_errors=True)
            if lease_ids:
                await store.mark_cleaned(ctx.conn, lease_ids)
                log.info("removed the staging folders of %d lease(s)", len(lease_ids))
        if len(lease_ids) < BATCH:
            return
