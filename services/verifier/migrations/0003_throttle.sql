-- The farm-wide throttle (throttle.py): each non-core result counted once, by its lease, as
-- good or bad; the window is read from the newest, older ones are deleted as they leave it.
CREATE TABLE throttle_outcomes (
    seq       bigserial PRIMARY KEY,
    lease_id  uuid NOT NULL UNIQUE,
    bad       boolean NOT NULL,
    owner     text NOT NULL,  -- of the host: one owner alone cannot engage the throttle
    at        timestamptz NOT NULL DEFAULT now()
);
CREATE INDEX throttle_outcomes_at ON throttle_outcomes (at);

-- One row: engaged or not, and what was announced last (a restart keeps it).
CREATE TABLE throttle_state (
    id          integer PRIMARY KEY DEFAULT 1 CHECK (id = 1),
    engaged     boolean NOT NULL DEFAULT false,
    bad_rate    double precision,
    results     integer,
    reason      text,
    changed_at  timestamptz
);
INSERT INTO throttle_state (id) VALUES (1);

-- The owner's standing (registry standing.py) when the result came in: a probation or
-- sponsored owner's hosts are sampled more often (policy.py).
ALTER TABLE results ADD COLUMN owner_standing text;
