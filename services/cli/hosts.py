"""`skyline hosts`, `skyline host ...` and `skyline owner ...`: the registry's directory of
hosts and owners, and its admin calls.

The registry is `--registry URL`, else $SKYLINE_REGISTRY_URL, else http://<[registry] listen>.
Admin calls send [registry] admin_token (or $SKYLINE_REGISTRY_ADMIN_TOKEN); `owner invite`
sends your owner token (--token-file, else [top level] amqp_password_file: the owner token is
also the owner's broker password). Exit status: 0 done, 1 the registry refused (its JSON error
is printed with the HTTP status), 2 the registry could not be reached or the call is unusable.
"""

from __future__ import annotations

import argparse
import json
import os
import urllib.error
import urllib.parse
import urllib.request
from collections.abc import Callable
from pathlib import Path
from typing import Any

from services.common.config import Config
from services.common.http import ERROR_BODY_LIMIT, error_text

from . import common

TIMEOUT = 30.0
MAX_REPLY = 64 * 1024 * 1024  # the biggest listing we read (10,000 hosts fit many times)


class RegistryError(common.CliError):
    """The registry refused a call or could not be reached (exit codes: services/cli/common)."""


class Registry:
    def __init__(self, url: str, admin_token: str = "", token: str = "") -> None:
        self.url = url.rstrip("/")
        self.admin_token = admin_token
        self.token = token

    def call(
        self, method: str, path: str, body: Any = None, *, auth: str = "", query: Any = None
    ) -> Any:
        url = self.url + path + (f"?{urllib.parse.urlencode(query)}" if query else "")
        headers = {"Accept": "application/json"}
        data = None
        if body is not None:
            data = json.dumps(body).encode()
            headers["Content-Type"] = "application/json"
        if auth:
            headers["Authorization"] = f"Bearer {auth}"
        request = urllib.request.Request(url, data=data, headers=headers, method=method)
        try:
            with urllib.request.urlopen(request, timeout=TIMEOUT) as reply:
                return json.loads(reply.read(MAX_REPLY))
        except urllib.error.HTTPError as exc:
            raise RegistryError(
                f"registry: {error_text(exc.read(ERROR_BODY_LIMIT), exc.code, str(exc.reason))}"
                f" (HTTP {exc.code})",
                common.code_for_status(exc.code),
            ) from None
        except (OSError, ValueError) as exc:
            raise RegistryError(
                f"cannot reach the registry at {self.url}: {exc}", common.UNREACHABLE
            ) from None

    def admin(self, method: str, path: str, body: Any = None) -> Any:
        if not self.admin_token:
            raise RegistryError(
                "this needs the registry's admin token: set [registry] admin_token or"
                " SKYLINE_REGISTRY_ADMIN_TOKEN",
                common.USAGE,
            )
        return self.call(method, path, body, auth=self.admin_token)


def _registry(args: argparse.Namespace, config: Config) -> Registry:
    url = args.registry or os.environ.get("SKYLINE_REGISTRY_URL")
    url = url or common.registry_url(config)
    return Registry(url, config.registry.admin_token)


def _owner_token(args: argparse.Namespace, config: Config) -> str:
    if args.token_file:
        try:
            return Path(args.token_file).read_text().strip()
        except OSError as exc:
            raise RegistryError(f"cannot read {args.token_file}: {exc}", common.USAGE) from None
    if config.amqp_user and config.amqp_password_file:
        return config.secret(config.amqp_password_file, "amqp_password_file")
    raise RegistryError("this needs your owner token: --token-file FILE", common.USAGE)


def _quote(name: str) -> str:
    return urllib.parse.quote(name, safe="")


def _print_json(data: Any) -> None:
    print(json.dumps(data, indent=2, sort_keys=True))


def _fmt(value: Any, digits: int = 2) -> str:
    if value is None:
        return "-"
    if isinstance(value, float):
        return f"{value:.{digits}f}"
    return str(value)


# -- hosts ------------------------------------------------------------------------------------


def cmd_hosts(args: argparse.Namespace, config: Config) -> int:
    query: dict[str, str] = {"limit": str(args.limit)}
    for key in ("arch", "trust", "owner"):
        if getattr(args, key):
            query[key] = getattr(args, key)
    if args.online is not None:
        query["online"] = "true" if args.online else "false"
    reply = _registry(args, config).call("GET", "/api/v1/hosts", query=query)
    if args.json:
        _print_json(reply)
        return 0
    print(f"{'HOST':<24} {'OWNER':<16} {'STATE':<12} {'TRUST':<12} {'QOS':>5}  ARCHES")
    for h in reply["hosts"]:
        print(
            f"{h['host']:<24} {h['owner']:<16} {h['state']:<12} {h['trust']:<12}"
            f" {_fmt(h.get('qos_score')):>5}  {','.join(h['arches'])}"
        )
    if reply.get("next"):
        print(f"(more: --limit, or the API's ?after={reply['next']})")
    return 0


def cmd_host_show(args: argparse.Namespace, config: Config) -> int:
    registry = _registry(args, config)
    base = f"/api/v1/hosts/{_quote(args.host)}"
    host = registry.call("GET", base)
    qos = registry.call("GET", base + "/qos")
    trust = registry.call("GET", base + "/trust", query={"limit": "10"})
    builds = registry.call("GET", base + "/builds", query={"limit": "10"})
    changes = registry.call("GET", base + "/availability", query={"limit": "10"})
    if args.json:
        _print_json(
            {
                "host": host,
                "qos": qos,
                "trust": trust,
                "builds": builds["builds"],
                "availability": changes["changes"],
            }
        )
        return 0
    print(f"host {host['host']} (owner {host['owner']}, standing {host['owner_standing']})")
    print(
        f"  state {host['state']}, trust {host['trust']}, last heartbeat {host['last_heartbeat']}"
    )
    if host.get("revoked_at"):
        print(f"  revoked at {host['revoked_at']}")
    print(f"  arches {', '.join(host['arches'])}; releases {', '.join(host['releases']) or '-'}")
    if host.get("mock_configs"):
        print(f"  mock configs {', '.join(host['mock_configs'])}")
    print(
        f"  cpus {_fmt(host['cpus'])}, memory {_fmt(host['memory_mb'])} MB,"
        f" disk {_fmt(host['disk_gb'])} GB; sandbox {_fmt(host.get('sandbox'))},"
        f" agent {_fmt(host.get('agent_version'))}, location {_fmt(host.get('location'))}"
    )
    q, c = qos["qos"], qos["counters"]
    mtbf = q["mtbf_seconds"]
    print(
        f"QoS score {_fmt(q['score'])}: success {_fmt(q['success_rate'])},"
        f" valid results {_fmt(q['valid_result_rate'])}, speed x{_fmt(q['speed_factor'])},"
        f" availability {_fmt(q['availability'])},"
        f" MTBF {'-' if mtbf is None else f'{mtbf / 3600:.1f} h'}"
    )
    print(
        f"  {c['finished']} finished ({c['succeeded']} succeeded),"
        f" {c['valid']} valid / {c['invalid']} invalid results"
    )
    record = trust["record"]
    print(
        f"trust {trust['trust']}: {record['consecutive_confirmed']} confirmed in a row,"
        f" {record['odd_one_out']} odd one out"
    )
    for t in trust["transitions"]:
        print(f"  {t['at']} {t['old']} -> {t['new']} by {t['by']}: {t['reason']}")
    print("recent builds:" if builds["builds"] else "recent builds: none")
    for b in builds["builds"]:
        print(
            f"  task {b['task_id']} {b['nvr']} {b['arch']} {_fmt(b['status'])}"
            f" {_fmt(b['duration'], 0)} s {_fmt(b['verdict'])}"
        )
    print("availability:" if changes["changes"] else "availability: no state change yet")
    for ch in changes["changes"]:
        print(f"  {ch['at']} {ch['old']} -> {ch['new']} ({ch['reason']})")
    return 0


def _host_action(action: str) -> Callable[[argparse.Namespace, Config], int]:
    def run(args: argparse.Namespace, config: Config) -> int:
        path = f"/api/v1/hosts/{_quote(args.host)}/{action}"
        view = _registry(args, config).admin("POST", path)
        print(
            f"host {view['host']} is {view['state']}" + (" (revoked)" if action == "revoke" else "")
        )
        return 0

    return run


# -- owners -----------------------------------------------------------------------------------


def cmd_owner_create(args: argparse.Namespace, config: Config) -> int:
    body: dict[str, Any] = {"name": args.name}
    if args.sponsor:
        body["sponsor"] = args.sponsor
    if args.max_hosts is not None:
        body["max_hosts"] = args.max_hosts
    made = _registry(args, config).admin("POST", "/api/v1/owners", body)
    print(f"owner {made['name']} created; its token (shown once): {made['token']}")
    return 0


def cmd_owner_invite(args: argparse.Namespace, config: Config) -> int:
    registry = _registry(args, config)
    made = registry.call(
        "POST", "/api/v1/owners/invite", {"name": args.name}, auth=_owner_token(args, config)
    )
    print(
        f"owner {made['name']} invited by {made['sponsor']} ({made['standing']});"
        f" its token (shown once): {made['token']}"
    )
    return 0


def _print_owner(o: dict[str, Any], indent: str = "") -> None:
    revoked = f", revoked {o['revoked_at']}" if o["revoked_at"] else ""
    print(
        f"{indent}{o['name']}: {o['standing']}, sponsor {o['sponsor'] or '-'},"
        f" frauds {o['own_frauds']} own / {o['sponsored_frauds']} sponsored,"
        f" max hosts {o['max_hosts']}{revoked}"
    )


def cmd_owner_show(args: argparse.Namespace, config: Config) -> int:
    owner = _registry(args, config).admin("GET", f"/api/v1/owners/{_quote(args.name)}")
    if args.json:
        _print_json(owner)
        return 0
    _print_owner(owner)
    print(f"  hosts enrolled: {owner['hosts']}")
    for f in owner["frauds"]:
        print(f"  fraud {f['at']}: {f['detail']} (host {f['host'] or '-'})")
    return 0


def cmd_owner_list(args: argparse.Namespace, config: Config) -> int:
    reply = _registry(args, config).admin("GET", "/api/v1/owners")
    if args.json:
        _print_json(reply)
        return 0
    for o in reply["owners"]:
        _print_owner(o)
    return 0


def cmd_owner_tree(args: argparse.Namespace, config: Config) -> int:
    reply = _registry(args, config).admin("GET", "/api/v1/owners/tree")
    if args.json:
        _print_json(reply)
        return 0

    def show(nodes: list[dict[str, Any]], depth: int) -> None:
        for node in nodes:
            _print_owner(node, "  " * depth)
            show(node["sponsored"], depth + 1)

    show(reply["tree"], 0)
    return 0


def cmd_owner_max_hosts(args: argparse.Namespace, config: Config) -> int:
    if args.limit == "default":
        limit = None
    elif args.limit.isdigit():
        limit = int(args.limit)
    else:
        raise RegistryError("the limit is a number of hosts or 'default'", common.USAGE)
    path = f"/api/v1/owners/{_quote(args.name)}/max_hosts"
    owner = _registry(args, config).admin("PUT", path, {"max_hosts": limit})
    print(f"owner {owner['name']} may enrol {owner['max_hosts']} host(s)")
    return 0


def cmd_owner_standing(args: argparse.Namespace, config: Config) -> int:
    path = f"/api/v1/owners/{_quote(args.name)}/standing"
    owner = _registry(args, config).admin("PUT", path, {"standing": args.standing})
    print(f"owner {owner['name']} is {owner['standing']}")
    return 0


def cmd_owner_fraud(args: argparse.Namespace, config: Config) -> int:
    body: dict[str, Any] = {"detail": args.detail}
    if args.host:
        body["host"] = args.host
    if args.task:
        body["task_id"] = args.task
    path = f"/api/v1/owners/{_quote(args.name)}/frauds"
    reply = _registry(args, config).admin("POST", path, body)
    _print_owner(reply["owner"])
    if reply["sponsor"]:
        _print_owner(reply["sponsor"], "sponsor ")
    return 0


def cmd_owner_revoke(args: argparse.Namespace, config: Config) -> int:
    gone = _registry(args, config).admin("DELETE", f"/api/v1/owners/{_quote(args.name)}")
    print(f"owner {gone['name']} revoked at {gone['revoked_at']}")
    return 0


# -- the parser -------------------------------------------------------------------------------


Command = Callable[[argparse.Namespace, Config], int]


def register(sub: Any) -> None:
    """Add `hosts`, `host show|quarantine|release|revoke` and `owner` to `skyline`."""

    def bind(command: Command) -> Callable[[argparse.Namespace], int]:
        return lambda args: command(args, common.load(args))

    shared = argparse.ArgumentParser(add_help=False)
    shared.add_argument("--registry", help="the registry's URL (default: from the config)")
    shared.add_argument("--json", action="store_true", help="print the registry's JSON")

    h = sub.add_parser("hosts", parents=[shared], help="list builder hosts")
    h.add_argument("--arch", help="hosts that build this arch")
    h.add_argument("--trust", help="untrusted, trusted, core or quarantined")
    h.add_argument("--owner", help="hosts of this owner")
    online = h.add_mutually_exclusive_group()
    online.add_argument("--online", dest="online", action="store_true", default=None)
    online.add_argument("--offline", dest="online", action="store_false")
    h.add_argument("--limit", type=int, default=1000, help="at most this many (default 1000)")
    h.set_defaults(func=bind(cmd_hosts))

    hs = common.group(sub, "host", "builder hosts: enrol this machine, show one; admin acts")
    show = hs.add_parser("show", parents=[shared], help="profile, QoS, trust, recent builds")
    show.add_argument("host")
    show.set_defaults(func=bind(cmd_host_show))
    for action, text in (
        ("quarantine", "admin: cut the host off now"),
        ("release", "admin: let a quarantined host enrol again"),
        ("revoke", "admin: cut the host off for good (its name is never reused)"),
    ):
        p = hs.add_parser(action, parents=[shared], help=text)
        p.add_argument("host")
        p.set_defaults(func=bind(_host_action(action)))

    owner = sub.add_parser("owner", help="owners and sponsors (mostly admin)")
    os_ = owner.add_subparsers(dest="action", required=True)
    c = os_.add_parser("create", parents=[shared], help="admin: make an owner, print its token")
    c.add_argument("name")
    c.add_argument("--sponsor", help="the owner that vouches for it (it starts 'sponsored')")
    c.add_argument("--max-hosts", type=int, help="its host limit (default: the registry's)")
    c.set_defaults(func=bind(cmd_owner_create))
    i = os_.add_parser("invite", parents=[shared], help="sponsor a new owner with your token")
    i.add_argument("name")
    i.add_argument("--token-file", help="your owner token (default: amqp_password_file)")
    i.set_defaults(func=bind(cmd_owner_invite))
    s = os_.add_parser("show", parents=[shared], help="admin: an owner, its frauds and hosts")
    s.add_argument("name")
    s.set_defaults(func=bind(cmd_owner_show))
    os_.add_parser("list", parents=[shared], help="admin: every owner").set_defaults(
        func=bind(cmd_owner_list)
    )
    os_.add_parser("tree", parents=[shared], help="admin: the sponsorship tree").set_defaults(
        func=bind(cmd_owner_tree)
    )
    m = os_.add_parser("max-hosts", parents=[shared], help="admin: an owner's host limit")
    m.add_argument("name")
    m.add_argument("limit", help="a number of hosts, or 'default'")
    m.set_defaults(func=bind(cmd_owner_max_hosts))
    st = os_.add_parser("standing", parents=[shared], help="admin: vouch for an owner or not")
    st.add_argument("name")
    st.add_argument("standing", choices=["good", "sponsored"])
    st.set_defaults(func=bind(cmd_owner_standing))
    f = os_.add_parser("fraud", parents=[shared], help="admin: record a confirmed fraud")
    f.add_argument("name")
    f.add_argument("--detail", required=True, help="what was found, and where")
    f.add_argument("--host", help="the host that committed it")
    f.add_argument("--task", help="the task it was found in")
    f.set_defaults(func=bind(cmd_owner_fraud))
    r = os_.add_parser("revoke", parents=[shared], help="admin: revoke an owner and its token")
    r.add_argument("name")
    r.set_defaults(func=bind(cmd_owner_revoke))
