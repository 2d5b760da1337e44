-- Koji draft builds (hub >= 1.34): a build waiting for agreement is imported as a draft from
-- each task's first result, and promoted (promoteBuild) on build.complete only if the
-- accepted files are the draft's (collector/kojidraft.py). One draft per build.
-- waiting: the tasks the verifier asked a replica for (task.replicate), task id -> the hosts
--   whose results it had then; a task's draft result is its first from one of those hosts,
--   or its stored (accepted) result.
-- leases, files: the candidate, recorded before the import (task id -> lease id; the digests
--   as kojimeta.Plan.digests), so a retry after a crash imports the same draft and finds it.
-- pending: to do (again at next_try); imported: a draft in the hub; promoted: it became the
-- build; rejected: the accepted files differ (an odd one out's draft stays unpromoted);
-- skipped: never imported (accepted first, the hub has no drafts, or no agreement in time).
CREATE TABLE koji_drafts (
    build_id       bigint PRIMARY KEY,
    nvr            text NOT NULL,
    owner          text NOT NULL,
    waiting        jsonb NOT NULL DEFAULT '{}',
    leases         jsonb,
    files          jsonb,
    state          text NOT NULL DEFAULT 'pending'
                   CHECK (state IN ('pending', 'imported', 'promoted', 'rejected', 'skipped')),
    attempts       integer NOT NULL DEFAULT 0,
    next_try       timestamptz NOT NULL DEFAULT now(),  -- also a claim: a worker pushes it on
    koji_build_id  bigint,
    error          text,
    created_at     timestamptz NOT NULL DEFAULT now(),
    imported_at    timestamptz,
    settled_at     timestamptz
);
CREATE INDEX koji_drafts_due ON koji_drafts (next_try) WHERE state = 'pending';
