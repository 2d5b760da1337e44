-- Hosts whose result for a task the verifier refused: the task is not leased to them again.
ALTER TABLE tasks ADD COLUMN refused_hosts text[] NOT NULL DEFAULT '{}';
