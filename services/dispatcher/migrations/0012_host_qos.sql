-- The registry's quality-of-service score and speed factor of each host (host.status
-- qos_score, speed_factor): the matcher prefers better and, for critical tasks, faster hosts.
-- NULL: the registry did not say (matching treats it as neutral).
ALTER TABLE hosts
    ADD COLUMN qos_score double precision,
    ADD COLUMN speed double precision;
