-- Critical-path weights in the live dispatcher (issue 9, critical.py): each package's
-- estimated build seconds at the farm's pace, learnt from its accepted builds; each task's
-- work and path (matching.TaskView); the host's speed factor when a lease was given (to turn
-- its duration into the farm's pace); when a slower host first left a task to a faster one.
CREATE TABLE package_durations (
    package      text NOT NULL,
    arch         text NOT NULL,            -- '*': over all its arches
    seconds_ewma double precision NOT NULL,
    samples      integer NOT NULL,
    updated_at   timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (package, arch)
);
ALTER TABLE tasks
    ADD COLUMN work double precision,       -- NULL: no history (the rules leave it alone)
    ADD COLUMN path double precision,
    ADD COLUMN declined_at timestamptz;     -- first declined since it was last queued
ALTER TABLE leases ADD COLUMN speed double precision;  -- NULL: not rated then
-- A pull's deadline: the longest path among the queued tasks of an arch.
CREATE INDEX tasks_queued_path ON tasks (arch, path DESC)
    WHERE state = 'queued' AND path IS NOT NULL;
