-- Sponsorship (standing.py): who vouched for each owner, the standing an admin gave it, and
-- the most hosts it may enrol (NULL: [registry] max_hosts_per_owner).
ALTER TABLE owners ADD COLUMN sponsor text REFERENCES owners (name);
ALTER TABLE owners ADD COLUMN base_standing text NOT NULL DEFAULT 'good'
    CHECK (base_standing IN ('good', 'sponsored'));
ALTER TABLE owners ADD COLUMN max_hosts integer CHECK (max_hosts >= 0);
CREATE INDEX owners_by_sponsor ON owners (sponsor);

-- Frauds an admin confirmed: each counts against its owner, and more lightly its sponsor.
CREATE TABLE owner_frauds (
    id           bigserial PRIMARY KEY,
    owner        text NOT NULL REFERENCES owners (name),
    host         text,
    task_id      text,
    detail       text NOT NULL,
    recorded_by  text NOT NULL,
    at           timestamptz NOT NULL DEFAULT now()
);
CREATE INDEX owner_frauds_by_owner ON owner_frauds (owner);
