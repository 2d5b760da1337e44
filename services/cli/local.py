"""`skyline local up|down`: the whole system on this machine (services/cli/localsystem.py)."""

from __future__ import annotations

import argparse
from pathlib import Path
from typing import Any

from . import common
from .localsystem import LocalSystem

DEFAULT_STATE = Path("state")


def cmd_local(args: argparse.Namespace) -> int:
    system = LocalSystem(args.state)
    if args.action == "up":
        system.up(builders=args.builders)
        print(f"configuration: {system.config_file}")
        print(f"fedora-messaging, as the packager {system.owner}: {system.fm_config_file}")
        print(f"fedora-messaging, as the read-only monitor: {system.fm_monitor_file}")
        print(f"Koji storage: {system.koji_topdir}")
        print(f"logs: {system.logs}")
    else:
        system.down()
    return common.OK


def register(commands: Any) -> None:
    lo = commands.add_parser("local", help="run the whole system on this machine")
    lo.add_argument("action", choices=["up", "down"])
    lo.add_argument("--state", type=Path, default=DEFAULT_STATE, help="state directory")
    lo.add_argument("--builders", type=int, default=1, help="local builders to start")
    lo.set_defaults(func=cmd_local)
