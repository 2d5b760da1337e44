"""The `skyline` command: submit builds, check them, run the whole system locally."""

from __future__ import annotations

import argparse
import asyncio
import logging
import sys
from pathlib import Path

from services.common.config import load_config
from services.common.errors import ConfigError
from services.common.localstack import LocalStackError

from . import cancel, massrebuild
from .localsystem import LocalSystem
from .submit import SubmitError, print_files, status, submit

DEFAULT_STATE = Path("state")


def _config(args: argparse.Namespace):
    conf = args.conf
    if conf is None and (DEFAULT_STATE / "skyline.toml").exists():
        conf = DEFAULT_STATE / "skyline.toml"  # what `skyline local up` wrote here
    return load_config(conf)


def cmd_submit(args: argparse.Namespace) -> int:
    config = _config(args)
    build = asyncio.run(
        submit(
            config,
            args.source,
            arches=args.arch or ["noarch"],
            owner=args.owner,
            scratch=args.scratch,
            release=args.release,
            wait=not args.no_wait,
            timeout=args.timeout,
        )
    )
    if build is None:
        return 0
    if build["state"] == "complete":
        print("stored in Koji storage:")
        print_files(build, config.path(config.collector.koji_topdir))
        return 0
    return 1


def cmd_status(args: argparse.Namespace) -> int:
    config = _config(args)
    build = asyncio.run(status(config, args.build_id))
    print(f"build {build['build_id']}: {build['nvr']} by {build['owner']}: {build['state']}")
    if build["reason"]:
        print(f"  reason: {build['reason']}")
    for task in build["tasks"]:
        host = f" on {task['host']}" if task["host"] else ""
        print(f"  task {task['task_id']} {task['arch']:<8} {task['state']}{host}")
    print_files(build, config.path(config.collector.koji_topdir))
    return 0 if build["state"] != "failed" else 1


def cmd_cancel(args: argparse.Namespace) -> int:
    reply = asyncio.run(cancel.cancel(_config(args), args.build_id))
    print("\n".join(cancel.describe(reply)))
    return 0


def cmd_mass_rebuild(args: argparse.Namespace) -> int:
    config = _config(args)
    summary = asyncio.run(
        massrebuild.mass_rebuild(
            config,
            list(args.sources),
            arches=args.arch or ["noarch"],
            tag=args.tag,
            hub_url=args.koji_hub or config.collector.koji_hub_url,
            topurl=args.koji_topurl or "",
            wait=not args.no_wait,
            timeout=args.timeout,
        )
    )
    return 0 if summary is None or (summary.done and not summary.failed) else 1


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
    return 0


def parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="skyline", description=__doc__)
    p.add_argument(
        "--conf", type=Path, help="configuration (default: $SKYLINE_CONF or ./state/skyline.toml)"
    )
    p.add_argument("-v", "--verbose", action="store_true")
    sub = p.add_subparsers(dest="command", required=True)

    s = sub.add_parser("submit", help="request a build and follow it to the end")
    s.add_argument("source", help="an SRPM file, a .spec file, or an http(s) URL of an SRPM")
    s.add_argument("--arch", action="append", help="architecture (repeatable; default noarch)")
    s.add_argument("--scratch", action="store_true", help="a scratch build")
    s.add_argument(
        "--owner", help="whose build it is (default: your broker user, amqp_user in the config)"
    )
    s.add_argument("--release", help="release to build for (default: any)")
    s.add_argument("--no-wait", action="store_true", help="publish and return")
    s.add_argument("--timeout", type=float, default=3600, help="seconds to wait (default 3600)")
    s.set_defaults(func=cmd_submit)

    st = sub.add_parser("status", help="show a build")
    st.add_argument("build_id", type=int)
    st.set_defaults(func=cmd_status)

    c = sub.add_parser("cancel", help="cancel a build of yours (its builders stop)")
    c.add_argument("build_id", type=int)
    c.set_defaults(func=cmd_cancel)

    m = sub.add_parser(
        "mass-rebuild", help="rebuild many sources, or a Koji tag's builds, at low priority"
    )
    m.add_argument("sources", nargs="*", help="SRPM files or http(s) URLs")
    m.add_argument("--tag", help="also every latest build in this Koji tag")
    m.add_argument("--koji-hub", help="the hub's XML-RPC URL (default [collector] koji_hub_url)")
    m.add_argument("--koji-topurl", help="the hub's file URL (koji.conf's topurl)")
    m.add_argument("--arch", action="append", help="architecture (repeatable; default noarch)")
    m.add_argument("--no-wait", action="store_true", help="publish and return")
    m.add_argument("--timeout", type=float, default=7 * 24 * 3600, help="seconds to follow")
    m.set_defaults(func=cmd_mass_rebuild)

    lo = sub.add_parser("local", help="run the whole system on this machine")
    lo.add_argument("action", choices=["up", "down"])
    lo.add_argument("--state", type=Path, default=DEFAULT_STATE, help="state directory")
    lo.add_argument("--builders", type=int, default=1, help="local builders to start")
    lo.set_defaults(func=cmd_local)
    return p


def main(argv: list[str] | None = None) -> None:
    args = parser().parse_args(argv)
    logging.basicConfig(level=logging.INFO if args.verbose else logging.WARNING)
    try:
        sys.exit(args.func(args))
    except (SubmitError, ConfigError, LocalStackError) as exc:
        print(f"skyline: {exc}", file=sys.stderr)
        sys.exit(2)
    except KeyboardInterrupt:
        sys.exit(130)


if __name__ == "__main__":
    main()
