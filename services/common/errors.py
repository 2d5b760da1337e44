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


#: Longest text of a message or an error that goes into one log line: an invalid 16 MiB body
#: must not be logged whole.
LOG_TEXT_LIMIT = 300


def describe(exc: BaseException, limit: int = LOG_TEXT_LIMIT) -> str:
    """The first line of `exc`, cut to `limit` characters, for a log line."""
    text = str(exc).strip()
    line = text.splitlines()[0] if text else type(exc).__name__
    return line if len(line) <= limit else line[:limit] + f"... ({len(text)} chars)"


def is_unavailable(exc: BaseException) -> bool:
    """True when `exc` says the database or a peer is down, which is never a message's fault:
    such a delivery is held and retried, and does not count toward the delivery limit."""
    import asyncpg  # here, so that importing the errors needs no database driver

    if isinstance(exc, Retry):
        return True
    if isinstance(
        exc,
        (
            OSError,  # ConnectionRefusedError, ConnectionResetError, socket timeouts
            TimeoutError,  # a pool that cannot hand out a connection
            asyncpg.exceptions.InterfaceError,  # "connection is closed" and the like
            asyncpg.exceptions.PostgresConnectionError,  # CannotConnectNow, ConnectionFailure...
            asyncpg.exceptions.CannotConnectNowError,
            asyncpg.exceptions.TooManyConnectionsError,
            asyncpg.exceptions.AdminShutdownError,
            asyncpg.exceptions.CrashShutdownError,
        ),
    ):
        return True
    import aiohttp

    return isinstance(exc, aiohttp.ClientConnectionError)


class ClipLongRecords:
    """A logging filter that cuts a record's text to LOG_TEXT_LIMIT characters:
    fedora-messaging logs a message's whole body when it fails validation."""

    def filter(self, record: object) -> bool:
        import logging

        assert isinstance(record, logging.LogRecord)
        text = record.getMessage()
        if len(text) > LOG_TEXT_LIMIT:
            record.msg = text[:LOG_TEXT_LIMIT] + f"... ({len(text)} chars)"
            record.args = None
        return True


class BriefWhenUnavailable:
    """A logging filter that replaces the traceback of a record about an outage (the database
    or a peer down, see is_unavailable) with its one-line reason: asyncpg's pool logs one every
    few seconds while PostgreSQL is down."""

    def filter(self, record: object) -> bool:
        import logging

        assert isinstance(record, logging.LogRecord)
        exc = record.exc_info[1] if record.exc_info else None
        if exc is not None and is_unavailable(exc):
            record.msg = f"{record.getMessage()}: {describe(exc)}"
            record.args = None
            record.exc_info = None
            record.exc_text = None
        return True
