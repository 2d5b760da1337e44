-- Quality of service (qos.py): the score the dispatcher reads, on the host row that
-- host.status is made from; the counters it is computed from in their own table.
ALTER TABLE hosts ADD COLUMN qos_score real CHECK (qos_score BETWEEN 0 AND 1);
ALTER TABLE hosts ADD COLUMN qos_computed_at timestamptz;

CREATE TABLE host_qos (
    host           text PRIMARY KEY REFERENCES hosts (host),
    finished       integer NOT NULL DEFAULT 0,
    succeeded      integer NOT NULL DEFAULT 0,
    valid          integer NOT NULL DEFAULT 0,
    invalid        integer NOT NULL DEFAULT 0,
    speed_log      double precision NOT NULL DEFAULT 0,
    speed_samples  integer NOT NULL DEFAULT 0
);

-- Each lease the dispatcher made (task.leased) and how it ended (task.finished, then the
-- verifier's word): the recent builds of a host, and the durations speed is measured against.
-- Either half may arrive first; only a lease the dispatcher made counts.
CREATE TABLE host_tasks (
    lease_id     uuid PRIMARY KEY,
    host         text NOT NULL,
    task_id      bigint,
    build_id     bigint,
    nvr          text,
    package      text,
    arch         text,
    leased_at    timestamptz,   -- the dispatcher's lease (its message's sent-at)
    finished_at  timestamptz,   -- when the registry received the host's task.finished
    status       text,          -- succeeded or failed, by the host's attestation
    duration     double precision,  -- wall seconds from lease to finish
    verdict      text,          -- agreed, odd_one_out or mismatch:<reason>
    counted      boolean NOT NULL DEFAULT false  -- its finish is in host_qos
);
CREATE INDEX host_tasks_by_host ON host_tasks (host, leased_at DESC);
CREATE INDEX host_tasks_reference ON host_tasks (package, arch, finished_at DESC)
    WHERE status = 'succeeded' AND duration IS NOT NULL;
