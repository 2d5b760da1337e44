-- Retention (history.py) deletes old history in chunks by age: index the ages.
CREATE INDEX host_state_changes_at ON host_state_changes (at);
CREATE INDEX host_tasks_age ON host_tasks ((coalesce(finished_at, leased_at)));

-- Every heartbeat updates its host's row. Without an index on last_heartbeat (the offline
-- sweep scans the table instead: 100,000 rows every 30 s), such an update changes no indexed
-- column and can be a HOT update: no new index entries, dead row versions reclaimed in-page.
-- Free room in each page lets the new version stay on its page.
DROP INDEX hosts_online;
ALTER TABLE hosts SET (fillfactor = 70);
