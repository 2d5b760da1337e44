-- A pull takes each owner's tasks by priority, then the longest critical path first (a task
-- without one after those with one: matching.TaskView.path), then age (issue 9: the order
-- the mass-rebuild simulation measures). This index serves both the loose index scan over
-- (class, owner) and each owner's probe in that order, so the one it replaces has no use left.
CREATE INDEX tasks_queued_owner_path
    ON tasks (class, owner, priority DESC, path DESC NULLS LAST, id) WHERE state = 'queued';
DROP INDEX IF EXISTS tasks_queued_owner;
-- The batch's expected end reads the leased tasks of the longest critical paths
-- (store.batch_end): a walk of this index, not of every leased task.
CREATE INDEX tasks_leased_path ON tasks (path DESC) WHERE state = 'leased' AND path IS NOT NULL;
