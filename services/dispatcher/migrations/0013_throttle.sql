-- The farm-wide throttle as the verifier last announced it (throttle.engaged / released):
-- while engaged, only core hosts get new leases (matching.Throttle). One row.
CREATE TABLE throttle (
    id          integer PRIMARY KEY DEFAULT 1 CHECK (id = 1),
    engaged     boolean NOT NULL DEFAULT false,
    bad_rate    double precision NOT NULL DEFAULT 0,
    results     integer,
    reason      text,
    changed_at  timestamptz  -- the announcement's sent-at: an older one never overrides it
);
INSERT INTO throttle (id) VALUES (1);
