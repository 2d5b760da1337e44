"""How many builds an owner may have in progress: pure policy, no I/O.

A request beyond the quota is refused, not held: the build is created (so the submitter finds
it by its request id, with the reason) and failed at once with build.failed. Holding it queued
instead would let one owner grow the dispatcher's queue without bound, which is what the quota
is there to prevent, and would leave the submitter waiting without knowing why. The request is
not lost: its refusal is announced (build.failed only, never build.queued), and the owner
submits again once builds have finished.
"""

from __future__ import annotations


def refusal(owner: str, active: int, limit: int) -> str | None:
    """The reason to refuse one more build of `owner`, who has `active` builds; None: go on."""
    if active < limit:
        return None
    return f"quota: owner {owner} already has {active} active builds (at most {limit})"
