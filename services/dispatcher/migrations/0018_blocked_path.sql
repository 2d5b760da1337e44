-- A pull weighs the blocked chain links of the longest paths of each arch (store.coming,
-- matching.keeps): a walk of this index, not of every blocked task.
CREATE INDEX tasks_blocked_path ON tasks (arch, path DESC)
    WHERE state = 'blocked' AND path IS NOT NULL;
