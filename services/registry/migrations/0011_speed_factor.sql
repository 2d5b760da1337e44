-- The host's speed factor (qos.py) beside its score: host.status carries both, and the
-- dispatcher sends critical tasks to fast hosts. NULL until a build of the host was timed.
ALTER TABLE hosts ADD COLUMN speed_factor real CHECK (speed_factor > 0 AND speed_factor <= 100);
