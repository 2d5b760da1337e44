-- Chain builds: each link of a chain request is a build of its own; a link's tasks are
-- 'blocked' until every build it comes after is complete, then queued with the
-- repositories of those builds' RPMs (tasks.repos, sent in the lease).
ALTER TABLE tasks DROP CONSTRAINT IF EXISTS tasks_state_check;
ALTER TABLE tasks ADD CONSTRAINT tasks_state_check
    CHECK (state IN ('blocked', 'queued', 'leased', 'verified', 'stored', 'failed'));
ALTER TABLE tasks ADD COLUMN repos text[] NOT NULL DEFAULT '{}';

ALTER TABLE builds
    ADD COLUMN chain_request text,    -- the chain request's message id (NULL: a plain build)
    ADD COLUMN chain_link integer;    -- its position in the chain's links
CREATE INDEX builds_chain ON builds (chain_request) WHERE chain_request IS NOT NULL;

-- Which builds a chain link comes after.
CREATE TABLE build_deps (
    build_id    bigint NOT NULL REFERENCES builds (id),
    after_build bigint NOT NULL REFERENCES builds (id),
    PRIMARY KEY (build_id, after_build)
);
CREATE INDEX build_deps_after ON build_deps (after_build);

-- Cancel: a cancelled build's open leases are revoked (task.revoked to their hosts).
ALTER TABLE leases DROP CONSTRAINT IF EXISTS leases_state_check;
ALTER TABLE leases ADD CONSTRAINT leases_state_check
    CHECK (state IN ('open', 'finished', 'accepted', 'refused', 'expired', 'failed',
                     'superseded', 'revoked'));
