-- Each host's trust record (trust.HostTrust): it restarts at every level change, except
-- odd_one_out, which counts the settled disagreements the host lost over its life.
ALTER TABLE hosts ADD COLUMN consecutive_confirmed integer NOT NULL DEFAULT 0
    CHECK (consecutive_confirmed >= 0);
ALTER TABLE hosts ADD COLUMN total_results integer NOT NULL DEFAULT 0
    CHECK (total_results >= 0);
ALTER TABLE hosts ADD COLUMN odd_one_out integer NOT NULL DEFAULT 0 CHECK (odd_one_out >= 0);

-- Every trust transition, with its reason and evidence, kept for the API and for audits.
CREATE TABLE trust_transitions (
    id          bigserial PRIMARY KEY,
    host        text NOT NULL REFERENCES hosts (host),
    old_level   text NOT NULL CHECK (old_level IN ('untrusted', 'trusted', 'core', 'quarantined')),
    new_level   text NOT NULL CHECK (new_level IN ('untrusted', 'trusted', 'core', 'quarantined')),
    reason      text NOT NULL,
    evidence    jsonb,
    decided_by  text NOT NULL,   -- 'registry' (the policy) or the admin
    at          timestamptz NOT NULL DEFAULT now()
);
CREATE INDEX trust_transitions_by_host ON trust_transitions (host, id DESC);
