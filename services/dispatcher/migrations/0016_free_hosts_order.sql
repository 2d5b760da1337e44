-- free_hosts_for walks the free hosts in preference order (matching.preference) and stops at
-- its limit instead of sorting every free host of an arch: by QoS score (unrated: 0.5, as
-- matching.NEUTRAL_QOS), and for a task with a critical-path weight by speed first (unrated:
-- 1.0, NEUTRAL_SPEED). The constants must stay those of the query.
CREATE INDEX hosts_free_by_qos ON hosts ((coalesce(qos_score, 0.5)) DESC, spare DESC, host)
    WHERE state = 'online' AND spare > 0;
CREATE INDEX hosts_free_by_speed
    ON hosts ((coalesce(speed, 1.0)) DESC, (coalesce(qos_score, 0.5)) DESC, spare DESC, host)
    WHERE state = 'online' AND spare > 0;
