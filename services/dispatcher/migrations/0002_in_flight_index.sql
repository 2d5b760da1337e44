-- Expiry sweeps look at verified-but-not-stored tasks as well as leased ones.
DROP INDEX IF EXISTS tasks_leased;
CREATE INDEX tasks_in_flight ON tasks (lease_expires) WHERE state IN ('leased', 'verified');
