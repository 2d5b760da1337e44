-- Capacity: what the host runs by its own word, and the most it may run (its enrolled CPUs).
-- Free capacity is computed from these and the dispatcher's own open leases (matching.py).
ALTER TABLE hosts
    ADD COLUMN running   integer NOT NULL DEFAULT 0,
    ADD COLUMN max_slots integer NOT NULL DEFAULT 1;
-- Open leases are counted per host on every scheduling round.
CREATE INDEX tasks_open_leases ON tasks (host) WHERE state = 'leased';

-- Who reported the task as failed, [{host, owner, trust}]: a failure counts once confirmed
-- (failures.py), and the task is not leased again to a host or owner that failed it.
ALTER TABLE tasks ADD COLUMN failures jsonb NOT NULL DEFAULT '[]';

-- Per-owner quota: active builds are counted at every request.
CREATE INDEX builds_active_owner ON builds (owner) WHERE state = 'building';
