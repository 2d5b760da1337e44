"""What an outage logs: one line with its reason, never a traceback every few seconds."""

from __future__ import annotations

import logging
import sys

import asyncpg

from services.common.errors import BriefWhenUnavailable


def record_of(exc: BaseException) -> logging.LogRecord:
    try:
        raise exc
    except BaseException:
        info = sys.exc_info()
    return logging.LogRecord("asyncpg.pool", logging.WARNING, __file__, 1, "floor %s", ("x",), info)


def test_an_outage_is_logged_in_one_line_with_its_reason():
    record = record_of(ConnectionRefusedError(111, "Connect call failed"))
    assert BriefWhenUnavailable().filter(record)
    assert record.exc_info is None
    assert record.getMessage() == "floor x: [Errno 111] Connect call failed"
    record = record_of(asyncpg.exceptions.CannotConnectNowError("shutting down"))
    assert BriefWhenUnavailable().filter(record)
    assert record.exc_info is None


def test_any_other_failure_keeps_its_traceback():
    record = record_of(ValueError("a bug"))
    assert BriefWhenUnavailable().filter(record)
    assert record.exc_info is not None
    assert record.getMessage() == "floor x"
