-- Issue 6: a task is accepted only when the acceptance policy (policy.py) is met by its results.

-- Whether the lease's build is a scratch build (task.leased's optional `scratch`), and what
-- the lease is for (build, replica, tiebreak).
ALTER TABLE leases ADD COLUMN scratch boolean NOT NULL DEFAULT false;
ALTER TABLE leases ADD COLUMN purpose text NOT NULL DEFAULT 'build';

-- Every verified succeeded result of a task, with what the host was when it came in.
CREATE TABLE results (
    lease_id        uuid PRIMARY KEY,
    task_id         bigint NOT NULL,
    build_id        bigint NOT NULL,
    host            text NOT NULL,
    owner           text NOT NULL,
    trust           text NOT NULL
                    CHECK (trust IN ('untrusted', 'trusted', 'core', 'quarantined')),
    total_results   integer NOT NULL DEFAULT 0,  -- the host's record at that trust level
    consecutive_confirmed integer NOT NULL DEFAULT 0,
    comparison_key  text NOT NULL,  -- equal keys: the RPM-aware comparison agrees
    result_digest   text NOT NULL,
    env_digest      text NOT NULL,
    duration        double precision NOT NULL,
    package         text NOT NULL,
    arch            text NOT NULL,
    decision        text,  -- what policy.decide answered once this result was in
    received_at     timestamptz NOT NULL DEFAULT now()
);
CREATE INDEX results_task ON results (task_id, received_at);
CREATE INDEX results_host_package ON results (host, package, received_at);
CREATE INDEX results_package_arch ON results (package, arch);

-- Packages whose honest builds differ on an arch: their official builds come from core hosts.
CREATE TABLE not_reproducible (
    package      text NOT NULL,
    arch         text NOT NULL,
    task_id      bigint NOT NULL,  -- the task whose tie-break showed it
    recorded_at  timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (package, arch)
);
