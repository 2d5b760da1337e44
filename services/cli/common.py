"""What every `skyline` command shares: finding the configuration, exit codes, errors, output
and HTTP calls to the services.

A command module exposes `register(commands)`, where `commands` is the top-level
`add_subparsers()` action; it adds its parsers (use `group(commands, "host", ...)` to add to
a shared group such as `skyline host ...`) and sets `func` to a function of the parsed
arguments that returns an exit code. A command raises `CliError` for anything the user can fix
or should know: `main` prints it as one line on stderr and exits with its code.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import sys
from collections.abc import Callable, Coroutine, Mapping
from pathlib import Path
from typing import Any, TypeVar

import aiohttp

from services.common.config import Config, load_config
from services.common.errors import ConfigError
from services.common.http import response_error

# -- exit codes (documented in README.md, "Exit codes") ----------------------------------------
OK = 0
FAILED = 1  # the build (or what was asked for) ended in failure
USAGE = 2  # bad arguments, bad input file, no or bad configuration (argparse uses 2 too)
UNREACHABLE = 3  # a service did not answer, or answered 5xx (try again later)
NOT_FOUND = 4  # no such build, host, owner...
REFUSED = 5  # the service refused: not authorised, invalid, conflicting (HTTP 4xx)
TIMEOUT = 6  # gave up waiting for a build to end (it goes on: see `skyline status`)
INTERRUPTED = 130  # Ctrl-C

ENV_VAR = "SKYLINE_CONF"
USER_FILE = Path("~/.config/skyline/skyline.toml")
SYSTEM_FILE = Path("/etc/skyline/skyline.toml")
LOCAL_FILE = Path("state/skyline.toml")  # what `skyline local up` writes in a checkout


class CliError(Exception):
    """Something the user can fix or should know: printed as one line, exit with `code`."""

    def __init__(self, message: str, code: int = USAGE) -> None:
        super().__init__(message)
        self.code = code


# -- configuration ------------------------------------------------------------------------------


def config_candidates(
    explicit: str | Path | None,
    env: Mapping[str, str] | None = None,
    home: Path | None = None,
    system: Path = SYSTEM_FILE,
) -> list[tuple[str, Path]]:
    """Where the configuration may be, in order, each with how it was named.

    Like fedora-messaging: `--conf`, then `$SKYLINE_CONF`, then the user's file, then the
    system's; `./state/skyline.toml` (a checkout running `skyline local up`) comes last.
    An explicit `--conf` or `$SKYLINE_CONF` is the only candidate: naming a file that does
    not exist is an error, never a silent fall-back to another file.
    """
    env = os.environ if env is None else env
    if explicit:
        return [("--conf", Path(explicit))]
    if env.get(ENV_VAR):
        return [(f"${ENV_VAR}", Path(env[ENV_VAR]))]
    user = (home / USER_FILE.relative_to("~")) if home else USER_FILE.expanduser()
    return [("user file", user), ("system file", system), ("local system", LOCAL_FILE)]


def find_config(
    explicit: str | Path | None,
    env: Mapping[str, str] | None = None,
    home: Path | None = None,
    system: Path = SYSTEM_FILE,
) -> Path:
    """The configuration file to use, or CliError naming every place tried."""
    candidates = config_candidates(explicit, env, home, system)
    for _, path in candidates:
        if path.is_file():
            return path
    tried = ", ".join(f"{path} ({how})" for how, path in candidates)
    raise CliError(f"no configuration file: tried {tried}", USAGE)


def load(args: argparse.Namespace) -> Config:
    """The configuration for a command: found as `find_config` says, then read."""
    path = find_config(getattr(args, "conf", None))
    try:
        # Passed explicitly, so load_config does not look at $SKYLINE_CONF again.
        return load_config(path)
    except ConfigError as exc:
        raise CliError(f"{path}: {exc}", USAGE) from None


def dispatcher_url(config: Config) -> str:
    return (config.cli.dispatcher_url or f"http://{config.dispatcher.listen}").rstrip("/")


def registry_url(config: Config) -> str:
    return (config.cli.registry_url or f"http://{config.registry.listen}").rstrip("/")


def collector_url(config: Config) -> str:
    return (config.cli.collector_url or config.collector.public_url).rstrip("/")


# -- output -------------------------------------------------------------------------------------


def emit(args: argparse.Namespace, data: Any, human: Callable[[Any], list[str]]) -> None:
    """`data` as JSON with `--json`, else the lines `human(data)` makes."""
    if getattr(args, "json", False):
        print(json.dumps(data, indent=2, sort_keys=True))
    else:
        for line in human(data):
            print(line)


def say(args: argparse.Namespace) -> Callable[[str], None]:
    """Progress lines: on stdout for people, on stderr with `--json` (stdout is the JSON)."""
    if getattr(args, "json", False):
        return lambda line: print(line, file=sys.stderr)
    return print


def add_json(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--json", action="store_true", help="print JSON instead of text")


# -- HTTP ---------------------------------------------------------------------------------------


def session(config: Config | None = None, timeout: float | None = None) -> aiohttp.ClientSession:
    total = timeout if timeout is not None else (config.cli.timeout if config else 30.0)
    return aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=total))


def code_for_status(status: int) -> int:
    if status == 404:
        return NOT_FOUND
    if status >= 500:
        return UNREACHABLE
    return REFUSED


async def call(
    http: aiohttp.ClientSession,
    method: str,
    url: str,
    *,
    what: str,
    token: str = "",
    body: Any = None,
    params: Mapping[str, str] | None = None,
) -> Any:
    """One JSON call to a service; any failure becomes a CliError saying `what` failed.

    `what` reads as "asking the dispatcher for build 7": the message is "<what>: <why>".
    """
    headers = {"Authorization": f"Bearer {token}"} if token else {}
    try:
        async with http.request(method, url, json=body, params=params, headers=headers) as r:
            if r.status >= 400:
                detail = await response_error(r)
                raise CliError(f"{what}: {detail} (HTTP {r.status})", code_for_status(r.status))
            try:
                return await r.json(content_type=None)
            except ValueError:
                raise CliError(f"{what}: the answer is not JSON", UNREACHABLE) from None
    except (aiohttp.ClientConnectionError, TimeoutError) as exc:
        why = str(exc) or type(exc).__name__
        raise CliError(f"{what}: cannot reach {url} ({why})", UNREACHABLE) from None
    except aiohttp.InvalidURL:
        raise CliError(f"{what}: {url} is not a valid URL", USAGE) from None


T = TypeVar("T")


def run(coro: Coroutine[Any, Any, T]) -> T:
    """Run a command's coroutine (commands are plain functions: argparse calls them)."""
    return asyncio.run(coro)


# -- command registration -------------------------------------------------------------------------

_GROUPS = "_skyline_groups"


def group(commands: Any, name: str, help: str) -> Any:
    """The subcommands of `skyline <name> ...`, made on first use, so that several modules
    can add to one group (`skyline host enroll` here, `skyline host show` elsewhere)."""
    groups: dict[str, Any] = commands.__dict__.setdefault(_GROUPS, {})
    if name not in groups:
        parser = commands.add_parser(name, help=help)
        groups[name] = parser.add_subparsers(dest=f"{name}_command", required=True)
    return groups[name]
