"""The exceptions a handler or a helper may raise, and what the bus does with them."""


class SkylineError(Exception):
    """Base of Skyline's own errors."""


class ConfigError(SkylineError, ValueError):
    """The configuration is missing, malformed or contradictory."""


class Reject(SkylineError):
    """The message can never be processed: dead-letter it (and log why)."""


class Retry(SkylineError):
    """The message cannot be processed yet (a peer is down): redeliver it later."""


class SignatureError(SkylineError):
    """A signature does not verify with the key it claims."""
