"""The `skyline` command: submit and follow builds, see the farm, join it, run it locally.

Configuration: --conf FILE, else $SKYLINE_CONF, else ~/.config/skyline/skyline.toml, else
/etc/skyline/skyline.toml, else ./state/skyline.toml (what `skyline local up` writes).

Exit codes: 0 done; 1 the build failed; 2 usage or configuration error; 3 a service is
unreachable (or answered 5xx); 4 not found; 5 refused by a service (unauthorised, invalid,
conflict); 6 gave up waiting; 130 interrupted.
"""

from __future__ import annotations

import argparse
import logging
import sys
from collections.abc import Sequence
from pathlib import Path

from services.common.errors import ConfigError
from services.common.localstack import LocalStackError

from . import cancel, common, host, hosts, local, massrebuild, progress, stats, submit

# Each module adds its commands (register(commands)); a new one is one line here.
COMMANDS = [submit, progress, cancel, massrebuild, stats, host, hosts, local]


def parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="skyline", description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    p.add_argument("--conf", type=Path, help="configuration file (see above for the default)")
    p.add_argument("-v", "--verbose", action="store_true", help="log what happens")
    commands = p.add_subparsers(dest="command", required=True, metavar="COMMAND")
    for module in COMMANDS:
        module.register(commands)
    return p


def main(argv: Sequence[str] | None = None) -> None:
    args = parser().parse_args(argv)
    logging.basicConfig(level=logging.INFO if args.verbose else logging.WARNING)
    try:
        code = args.func(args)
    except common.CliError as exc:
        print(f"skyline: {exc}", file=sys.stderr)
        sys.exit(exc.code)
    except (ConfigError, LocalStackError) as exc:
        print(f"skyline: {exc}", file=sys.stderr)
        sys.exit(common.USAGE)
    except KeyboardInterrupt:
        sys.exit(common.INTERRUPTED)
    sys.exit(code)


if __name__ == "__main__":
    main()
