-- Queued tasks in id order (handlers.refresh_reasons re-explains them a bounded number at a
-- time, round the queue): the scan stops at its limit found, however many tasks are done.
CREATE INDEX tasks_queued_id ON tasks (id) WHERE state = 'queued';
