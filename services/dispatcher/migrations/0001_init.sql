CREATE TABLE builds (
    id           bigserial PRIMARY KEY,
    request_id   text NOT NULL UNIQUE,        -- message id of the request: one build per request
    owner        text NOT NULL,
    nvr          text NOT NULL,
    srpm_url     text NOT NULL,
    srpm_sha256  text NOT NULL,
    release      text,                         -- NULL: any release will do
    scratch      boolean NOT NULL,
    priority     integer NOT NULL,
    state        text NOT NULL DEFAULT 'building'
                 CHECK (state IN ('building', 'complete', 'failed')),
    reason       text,
    created_at   timestamptz NOT NULL DEFAULT now(),
    finished_at  timestamptz
);

CREATE TABLE tasks (
    id            bigserial PRIMARY KEY,
    build_id      bigint NOT NULL REFERENCES builds (id),
    arch          text NOT NULL,
    priority      integer NOT NULL,
    state         text NOT NULL DEFAULT 'queued'
                  CHECK (state IN ('queued', 'leased', 'verified', 'stored', 'failed')),
    host          text,
    lease_id      uuid UNIQUE,
    lease_expires timestamptz,
    attempts      integer NOT NULL DEFAULT 0,
    result_digest text,
    files         jsonb NOT NULL DEFAULT '[]',
    reason        text,
    updated_at    timestamptz NOT NULL DEFAULT now(),
    UNIQUE (build_id, arch)
);
-- Leasing scans only queued tasks: without this partial index it is a sequential scan.
CREATE INDEX tasks_queued ON tasks (priority DESC, id) WHERE state = 'queued';
CREATE INDEX tasks_leased ON tasks (lease_expires) WHERE state = 'leased';

-- The dispatcher's own copy of the registry's host status (services share no tables).
CREATE TABLE hosts (
    host        text PRIMARY KEY,
    owner       text NOT NULL,
    state       text NOT NULL,
    trust       text NOT NULL,
    arches      text[] NOT NULL,
    releases    text[] NOT NULL,
    free_slots  integer NOT NULL,
    seen_at     timestamptz NOT NULL
);
