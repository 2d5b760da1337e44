-- Leases the dispatcher handed out: uploads are accepted only for these.
CREATE TABLE leases (
    lease_id     uuid PRIMARY KEY,
    task_id      bigint NOT NULL,
    build_id     bigint NOT NULL,
    host         text NOT NULL,
    arch         text NOT NULL,
    owner        text NOT NULL,
    nvr          text NOT NULL,
    srpm_sha256  text NOT NULL,
    scratch      boolean NOT NULL DEFAULT false,
    -- open: uploads accepted; stored: results are in Koji storage; failed: the build failed;
    -- superseded: another lease of the same task was stored first.
    state        text NOT NULL DEFAULT 'open'
                 CHECK (state IN ('open', 'stored', 'failed', 'superseded')),
    created_at   timestamptz NOT NULL DEFAULT now(),
    stored_at    timestamptz,
    cleaned_at   timestamptz  -- when its staging directory was removed
);
CREATE INDEX leases_task ON leases (task_id);
CREATE INDEX leases_to_clean ON leases (created_at) WHERE cleaned_at IS NULL;

-- Files uploaded into <staging_dir>/<lease_id>/ and not yet cleaned up.
CREATE TABLE staged_files (
    lease_id     uuid NOT NULL REFERENCES leases ON DELETE CASCADE,
    name         text NOT NULL,
    size         bigint NOT NULL,
    sha256       text NOT NULL,
    uploaded_at  timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (lease_id, name)
);

-- What each lease put into Koji storage (path relative to the Koji top directory).
CREATE TABLE stored_files (
    lease_id     uuid NOT NULL REFERENCES leases,
    name         text NOT NULL,
    path         text NOT NULL,
    arch         text NOT NULL,
    sha256       text NOT NULL,
    size         bigint NOT NULL,
    stored_at    timestamptz NOT NULL DEFAULT now(),
    UNIQUE (lease_id, name)
);
CREATE INDEX stored_files_path ON stored_files (path);

-- Source RPMs uploaded by packagers, served to builders by digest.
CREATE TABLE sources (
    sha256      text PRIMARY KEY,
    name        text NOT NULL,
    size        bigint NOT NULL,
    created_at  timestamptz NOT NULL DEFAULT now()
);
