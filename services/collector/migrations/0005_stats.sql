-- Statistics for the contributors' dashboard, kept from what the collector hears on the bus
-- (stats_handlers.py). Facts only: rates and credit are computed when read (stats_store.py).

-- Builder hosts as the registry last described them (host.status).
CREATE TABLE stats_hosts (
    host        text PRIMARY KEY,
    owner       text NOT NULL,
    state       text NOT NULL,
    trust       text NOT NULL,
    arches      text[] NOT NULL,
    seen_at     timestamptz,
    updated_at  timestamptz NOT NULL DEFAULT now()
);

-- One row per result (lease): what its host reported (task.finished) and how it was judged
-- (task.verified's agreeing hosts and odd ones out, task.mismatch). Either may come first.
CREATE TABLE stats_results (
    lease_id     uuid PRIMARY KEY,
    task_id      bigint NOT NULL,
    build_id     bigint,
    host         text NOT NULL,
    owner        text,              -- the host's owner, once a verdict named it
    arch         text,
    package      text,
    status       text,              -- succeeded or failed, as the host reported it
    duration     double precision,  -- seconds, as the host attested it (its claim)
    -- accepted: in a task.verified's agreeing hosts (earns credit); refused: a mismatch or an
    -- odd one out. Accepted is final: credit once granted is never taken back.
    verdict      text NOT NULL DEFAULT 'pending'
                 CHECK (verdict IN ('pending', 'accepted', 'refused')),
    reason       text,
    finished_at  timestamptz,
    judged_at    timestamptz
);
CREATE INDEX stats_results_host ON stats_results (host);
CREATE INDEX stats_results_task ON stats_results (task_id);

-- One row per judged task: accepted (task.verified) or given up (mismatch no_agreement).
CREATE TABLE stats_tasks (
    task_id           bigint PRIMARY KEY,
    build_id          bigint,
    package           text,
    arch              text,
    outcome           text NOT NULL CHECK (outcome IN ('accepted', 'no_agreement')),
    rule              text,
    agreeing          text[] NOT NULL DEFAULT '{}',
    odd_ones_out      integer NOT NULL DEFAULT 0,
    not_reproducible  boolean NOT NULL DEFAULT false,
    judged_at         timestamptz NOT NULL DEFAULT now()
);
CREATE INDEX stats_tasks_package ON stats_tasks (package);

-- Builds from queued to their verdict (build.queued, build.complete, build.failed).
CREATE TABLE stats_builds (
    build_id     bigint PRIMARY KEY,
    nvr          text NOT NULL,
    package      text NOT NULL,
    owner        text NOT NULL,     -- the packager who asked
    scratch      boolean NOT NULL DEFAULT false,
    state        text NOT NULL CHECK (state IN ('queued', 'complete', 'failed')),
    tasks        jsonb NOT NULL DEFAULT '[]',  -- build.complete's: task_id, arch, agreeing, rule
    reason       text,
    queued_at    timestamptz,
    finished_at  timestamptz
);
CREATE INDEX stats_builds_finished ON stats_builds (finished_at);
CREATE INDEX stats_builds_package ON stats_builds (package);

-- The farm-wide throttle as last announced (one row).
CREATE TABLE stats_throttle (
    id              boolean PRIMARY KEY DEFAULT true CHECK (id),
    engaged         boolean NOT NULL,
    bad_rate        double precision NOT NULL,
    threshold       double precision NOT NULL,
    window_seconds  integer NOT NULL,
    reason          text,
    changed_at      timestamptz NOT NULL DEFAULT now()
);
