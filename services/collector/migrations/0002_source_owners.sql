-- Who uploaded each source RPM (the first owner to upload its bytes); older rows have none.
-- The index serves the per-owner quota: recent uploads of one owner.
ALTER TABLE sources ADD COLUMN owner text;
CREATE INDEX sources_owner_recent ON sources (owner, created_at);
