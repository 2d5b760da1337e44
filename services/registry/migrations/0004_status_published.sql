-- What the last published host.status said (all but seen_at) and when, so a heartbeat that
-- changes nothing the dispatcher uses publishes nothing until the periodic refresh.
ALTER TABLE hosts ADD COLUMN status_published jsonb;
ALTER TABLE hosts ADD COLUMN status_published_at timestamptz;
