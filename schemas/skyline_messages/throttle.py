"""The farm-wide throttle: when bad results rise, only core hosts get new work."""

from __future__ import annotations

from fedora_messaging.message import INFO, WARNING

from .base import SkylineMessage, body_schema

RATE_FIELDS = {
    "bad_rate": {"type": "number", "minimum": 0, "maximum": 1},
    "threshold": {"type": "number", "minimum": 0, "maximum": 1},
    "window_seconds": {"type": "integer", "minimum": 1},
    "reason": {"type": "string", "maxLength": 2000},
    # How many results the rate is over (optional: absent from older verifiers).
    "results": {"type": "integer", "minimum": 0, "maximum": 1000000000},
}


class _Rate(SkylineMessage):
    """The typed fields both throttle messages carry."""

    @property
    def bad_rate(self) -> float:
        return float(self.body["bad_rate"])

    @property
    def threshold(self) -> float:
        return float(self.body["threshold"])

    @property
    def window_seconds(self) -> int:
        return int(self.body["window_seconds"])

    @property
    def results(self) -> int | None:
        """None from a verifier that does not say."""
        return self.body.get("results")

    @property
    def reason(self) -> str:
        return self.body.get("reason", "")


class ThrottleEngagedV1(_Rate):
    """Non-core hosts stop getting new work; builds wait for core hosts."""

    topic = "skyline.throttle.engaged"
    severity = WARNING
    body_schema = body_schema(
        "The throttle was engaged", ["bad_rate", "threshold", "window_seconds"], RATE_FIELDS
    )

    @property
    def summary(self) -> str:
        b = self.body
        return (
            f"throttle engaged: {b['bad_rate']:.1%} bad results over {b['window_seconds']} s "
            f"(threshold {b['threshold']:.1%})"
        )


class ThrottleReleasedV1(_Rate):
    """Volunteer hosts get work again."""

    topic = "skyline.throttle.released"
    severity = INFO
    body_schema = body_schema(
        "The throttle was released", ["bad_rate", "threshold", "window_seconds"], RATE_FIELDS
    )

    @property
    def summary(self) -> str:
        b = self.body
        return f"throttle released: {b['bad_rate']:.1%} bad results over {b['window_seconds']} s"
