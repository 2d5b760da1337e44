"""`skyline-builder`: run the volunteer's builder agent until SIGTERM or Ctrl-C.

The first signal stops taking leases and lets running builds finish (for up to the grace
period); a second one interrupts them (they resume at the next start if their lease is valid).
"""

from __future__ import annotations

import argparse
import asyncio
import dataclasses
import logging
import signal
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from services.common import telemetry
from services.common.config import Config, load_config
from services.common.errors import ConfigError
from services.common.service import setup_logging

from .agent import DEFAULT_GRACE, Agent
from .client import EnrolmentError

log = logging.getLogger("services.builder")


def parse_args(argv: Sequence[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        prog="skyline-builder", description="Build RPMs for a Skyline build farm."
    )
    parser.add_argument("--conf", help="TOML configuration file (default: $SKYLINE_CONF)")
    parser.add_argument("--host", help="this builder's name (default: [builder] host)")
    parser.add_argument("--owner", help="your account name (default: [builder] owner)")
    parser.add_argument(
        "--workdir", help="key, journal and task files (default: [builder] workdir)"
    )
    parser.add_argument(
        "--grace",
        type=float,
        default=DEFAULT_GRACE,
        help="seconds running builds may take to finish after a stop signal (default: %(default)g)",
    )
    return parser.parse_args(argv)


def with_overrides(config: Config, args: argparse.Namespace) -> Config:
    """Apply the command-line conveniences on top of the file and environment."""
    changes: dict[str, Any] = {}
    if args.host:
        changes["host"] = args.host
    if args.owner:
        changes["owner"] = args.owner
    if args.workdir:
        # Relative to where the volunteer typed it, not to the configuration file.
        changes["workdir"] = str(Path(args.workdir).resolve())
    return dataclasses.replace(config, builder=dataclasses.replace(config.builder, **changes))


async def serve(agent: Agent) -> None:
    stop = asyncio.Event()

    def on_signal() -> None:
        if stop.is_set():
            log.warning("second stop signal: interrupting running builds")
            agent.abort()
        else:
            stop.set()

    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, on_signal)
    await agent.run(stop)


def main(argv: Sequence[str] | None = None) -> None:
    args = parse_args(argv)
    try:
        config = with_overrides(load_config(args.conf), args)
        setup_logging(config.log_level)
        agent = Agent(config, grace=args.grace)
    except ConfigError as exc:
        sys.exit(f"skyline-builder: {exc}")
    telemetry.setup("skyline-builder", config.otlp_endpoint)
    try:
        asyncio.run(serve(agent))
    except EnrolmentError as exc:
        # The volunteer's to fix (a token, a key, a name): a sentence, not a traceback.
        sys.exit(f"skyline-builder: {exc}")


if __name__ == "__main__":
    main()
