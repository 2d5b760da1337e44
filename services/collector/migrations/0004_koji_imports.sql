-- The builder's environment manifest from its task.finished (package -> version), used to
-- describe the build's buildroot in a Koji content-generator import. NULL if never received.
ALTER TABLE leases ADD COLUMN env_manifest jsonb;

-- Complete builds to import into the configured Koji hub: the intent is recorded by the
-- build.complete handler, the import runs outside it (collector/kojiimport.py), the result
-- is recorded after. pending: to do (again at next_try); imported: the hub has it;
-- failed: the hub holds another build of the same N-V-R (needs an admin).
CREATE TABLE koji_imports (
    build_id       bigint PRIMARY KEY,
    nvr            text NOT NULL,
    owner          text NOT NULL,
    tasks          jsonb NOT NULL DEFAULT '[]',  -- build.complete's tasks: who agreed, by what rule
    state          text NOT NULL DEFAULT 'pending'
                   CHECK (state IN ('pending', 'imported', 'failed')),
    attempts       integer NOT NULL DEFAULT 0,
    next_try       timestamptz NOT NULL DEFAULT now(),  -- also a claim: a worker pushes it on
    koji_build_id  bigint,
    error          text,
    created_at     timestamptz NOT NULL DEFAULT now(),
    imported_at    timestamptz
);
CREATE INDEX koji_imports_due ON koji_imports (next_try) WHERE state = 'pending';
