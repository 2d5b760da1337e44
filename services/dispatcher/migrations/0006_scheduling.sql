-- Incremental scheduling (issue 9): a host with free slots pulls its best tasks, and a new
-- task finds a free host, each by index; nothing scans every host or every queued task.

-- What a host pulls by, copied from the build so the queued-task index covers it; the
-- priority class (fairshare.py: 0 interactive, 1 normal, 2 mass rebuild); why the task is not
-- running now (the matcher's word at the last scheduling pass that left it unassigned).
ALTER TABLE tasks
    ADD COLUMN owner text,
    ADD COLUMN class smallint,
    ADD COLUMN release text,
    ADD COLUMN scratch boolean,
    ADD COLUMN queue_reason text;
UPDATE tasks t SET owner = b.owner, release = b.release, scratch = b.scratch,
    class = CASE WHEN b.priority >= 500 THEN 0 WHEN b.priority >= 100 THEN 1 ELSE 2 END
FROM builds b WHERE b.id = t.build_id;
ALTER TABLE tasks
    ALTER COLUMN owner SET NOT NULL,
    ALTER COLUMN class SET NOT NULL,
    ALTER COLUMN scratch SET NOT NULL;
DROP INDEX IF EXISTS tasks_queued;
-- A pull skips from one (class, owner) with queued tasks to the next on this index (a loose
-- index scan), then takes each owner's first tasks from it: no shared counter row that every
-- lease of an owner would update (two dispatchers would queue on it).
CREATE INDEX tasks_queued_owner ON tasks (class, owner, priority DESC, id) WHERE state = 'queued';

-- Each owner's decayed usage, as log2 of the sum of its charges 2^(t / half-life): ordering
-- owners by this is ordering them by usage decayed to any common moment (fairshare.py).
CREATE TABLE owner_usage (
    owner     text PRIMARY KEY,
    usage_key double precision NOT NULL
);

-- What a host builds (arches.py: noarch, and its advertised arches Koji calls native), its
-- open leases (kept by trigger), and so the slots it may still take, indexed.
ALTER TABLE hosts
    ADD COLUMN build_arches text[] NOT NULL DEFAULT '{noarch}',
    ADD COLUMN open_leases integer NOT NULL DEFAULT 0;
-- Until their next status, hosts build what they advertised (and noarch).
UPDATE hosts SET build_arches = array(SELECT DISTINCT unnest(arches || '{noarch}'::text[]));
UPDATE hosts h SET open_leases = n
FROM (SELECT host, count(*) AS n FROM leases WHERE state = 'open' GROUP BY host) l
WHERE l.host = h.host;
-- matching.free_slots, in SQL.
ALTER TABLE hosts ADD COLUMN spare integer GENERATED ALWAYS AS
    (GREATEST(0, LEAST(free_slots, LEAST(free_slots + running, max_slots) - open_leases))) STORED;
CREATE INDEX hosts_spare ON hosts (spare DESC, host) WHERE state = 'online' AND spare > 0;
CREATE INDEX hosts_build_arches ON hosts USING gin (build_arches) WHERE state = 'online';

CREATE FUNCTION leases_count_open() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    IF TG_OP = 'UPDATE' AND OLD.state = 'open' AND NEW.state <> 'open' THEN
        UPDATE hosts SET open_leases = open_leases - 1 WHERE host = OLD.host;
    ELSIF NEW.state = 'open' AND (TG_OP = 'INSERT' OR OLD.state <> 'open') THEN
        UPDATE hosts SET open_leases = open_leases + 1 WHERE host = NEW.host;
    END IF;
    RETURN NULL;
END $$;
CREATE TRIGGER leases_count_open AFTER INSERT OR UPDATE OF state ON leases
    FOR EACH ROW EXECUTE FUNCTION leases_count_open();
