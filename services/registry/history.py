"""Retention of the registry's tables that grow with traffic (run by the common retention job).

- host_state_changes: changes older than `registry.history_seconds` go, but each host's newest
  change before that cutoff stays: QoS availability starts its window in the state that row
  says (qos_store.uptime), so deleting it would turn an online host's window start offline.
- host_tasks: builds whose finish (else lease) is older go. Counters already counted them
  (host_qos is cumulative), so QoS figures do not change; only `recent builds` and the speed
  reference stop seeing them.
"""

from __future__ import annotations

from services.common.retention import History

_PRUNE_STATE_CHANGES = """
DELETE FROM host_state_changes WHERE id IN (
    SELECT c.id FROM host_state_changes c
    WHERE c.at < now() - make_interval(secs => $1)
      AND EXISTS (
          SELECT 1 FROM host_state_changes n
          WHERE n.host = c.host AND n.at < now() - make_interval(secs => $1)
            AND (n.at, n.id) > (c.at, c.id))
    LIMIT $2)
"""

_PRUNE_HOST_TASKS = """
DELETE FROM host_tasks WHERE lease_id IN (
    SELECT lease_id FROM host_tasks
    WHERE coalesce(finished_at, leased_at) < now() - make_interval(secs => $1)
    LIMIT $2)
"""

HISTORY = (
    History("host_state_changes", _PRUNE_STATE_CHANGES, lambda c: c.registry.history_seconds),
    History("host_tasks", _PRUNE_HOST_TASKS, lambda c: c.registry.history_seconds),
)
