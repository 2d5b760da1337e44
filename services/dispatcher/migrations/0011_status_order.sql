-- host.status without a processed-message row per status (issue 10: at one status per host
-- and heartbeat, those rows were the largest table): a status applies only if it is not
-- older than the host's stored one, by (seen_at, the registry's sent-at: a trust change or
-- an offline transition carries the last heartbeat's seen_at), and is none of the host's
-- last applied statuses (by message id; sent-at has whole seconds only). So a redelivered
-- or stale status changes nothing.
ALTER TABLE hosts
    ADD COLUMN status_sent_at timestamptz,
    ADD COLUMN recent_statuses text[] NOT NULL DEFAULT '{}';
