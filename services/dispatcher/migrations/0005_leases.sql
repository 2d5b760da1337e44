-- A task has many leases (its first build, replicas, tie-breaks): each is recorded here, and
-- a task.verified may name any of them, not only the task's current one.
CREATE TABLE leases (
    lease_id    uuid PRIMARY KEY,
    task_id     bigint NOT NULL REFERENCES tasks (id),
    host        text NOT NULL,
    owner       text NOT NULL,                -- the host's owner when leased ('' if unknown)
    purpose     text NOT NULL DEFAULT 'build'
                CHECK (purpose IN ('build', 'replica', 'tiebreak')),
    -- open: the host builds it, or its verdict is awaited; finished: its result awaits
    -- agreement (a replica was asked for); accepted: named by task.verified; superseded: the
    -- task was accepted through another lease; the others end the lease without a result.
    state       text NOT NULL DEFAULT 'open'
                CHECK (state IN ('open', 'finished', 'accepted', 'refused', 'expired',
                                 'failed', 'superseded')),
    created_at  timestamptz NOT NULL DEFAULT now(),
    expires_at  timestamptz NOT NULL,
    finished_at timestamptz                   -- when its host reported it finished
);
CREATE INDEX leases_task ON leases (task_id);
-- Open leases are counted per host on every scheduling round.
CREATE INDEX leases_open ON leases (host) WHERE state = 'open';
DROP INDEX IF EXISTS tasks_open_leases;

-- What the task's next lease is for and who may take it (task.replicate), why it waits, and
-- how it was accepted (task.verified): the hosts that agreed and the policy rule met.
ALTER TABLE tasks
    ADD COLUMN purpose text NOT NULL DEFAULT 'build'
        CHECK (purpose IN ('build', 'replica', 'tiebreak')),
    ADD COLUMN min_trust text CHECK (min_trust IN ('untrusted', 'trusted', 'core')),
    ADD COLUMN exclude_owners text[] NOT NULL DEFAULT '{}',
    ADD COLUMN exclude_hosts text[] NOT NULL DEFAULT '{}',
    ADD COLUMN waiting text,
    -- The verifier's result count of the newest replicate request acted on: an older or
    -- redelivered request (same or lower count) is not acted on twice.
    ADD COLUMN replicate_results integer NOT NULL DEFAULT 0,
    -- Replica or tie-break leases given since that request (bounded like attempts).
    ADD COLUMN replica_attempts integer NOT NULL DEFAULT 0,
    ADD COLUMN agreeing jsonb NOT NULL DEFAULT '[]',
    ADD COLUMN rule text;

-- Every lease held so far; the tasks table only ever named the current one.
INSERT INTO leases (lease_id, task_id, host, owner, purpose, state, created_at, expires_at)
SELECT t.lease_id, t.id, t.host, coalesce(h.owner, ''), 'build',
       CASE t.state WHEN 'leased' THEN 'open' WHEN 'failed' THEN 'failed' ELSE 'accepted' END,
       t.updated_at, coalesce(t.lease_expires, t.updated_at)
FROM tasks t LEFT JOIN hosts h ON h.host = t.host
WHERE t.lease_id IS NOT NULL AND t.host IS NOT NULL;
