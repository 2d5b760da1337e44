-- The rest of a host's profile (all optional at enrolment), and its revocation: a revoked
-- host is cut off for good (its name is never reused) and no longer counts to its owner's
-- host limit.
ALTER TABLE hosts ADD COLUMN mock_configs text[] NOT NULL DEFAULT '{}';
ALTER TABLE hosts ADD COLUMN location text;
ALTER TABLE hosts ADD COLUMN agent_version text;
ALTER TABLE hosts ADD COLUMN sandbox text;
ALTER TABLE hosts ADD COLUMN revoked_at timestamptz;
CREATE INDEX hosts_by_owner ON hosts (owner) WHERE revoked_at IS NULL;

-- Availability history: every change of a host's state, whatever made it (heartbeats, the
-- offline sweep, admins). A trigger, so the hot heartbeat statement stays as it is; the
-- reason is the transaction's `skyline.state_reason` setting, else 'heartbeat'.
CREATE TABLE host_state_changes (
    id         bigserial PRIMARY KEY,
    host       text NOT NULL REFERENCES hosts (host),
    old_state  text NOT NULL,
    new_state  text NOT NULL,
    reason     text NOT NULL,
    at         timestamptz NOT NULL DEFAULT now()
);
CREATE INDEX host_state_changes_by_host ON host_state_changes (host, at);

CREATE FUNCTION record_host_state_change() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    INSERT INTO host_state_changes (host, old_state, new_state, reason)
    VALUES (NEW.host, OLD.state, NEW.state,
            coalesce(nullif(current_setting('skyline.state_reason', true), ''), 'heartbeat'));
    RETURN NULL;
END $$;

CREATE TRIGGER hosts_state_changed AFTER UPDATE OF state ON hosts
    FOR EACH ROW WHEN (OLD.state IS DISTINCT FROM NEW.state)
    EXECUTE FUNCTION record_host_state_change();
