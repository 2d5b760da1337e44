"""Make the deployment's own owners through the registry's admin API, once, and keep each
owner's token in a file its builders read (the compose file's one-shot `owners` service).

    skyline-owners [--registry URL] [--admin-token-file PATH] OWNER:DIR [OWNER:DIR ...]

For each OWNER the token ends up in DIR/OWNER (mode 0600). The registry shows a token only
when it makes the owner (POST /api/v1/owners answers 409 for an existing one), so the file is
the only copy: a file whose token the registry still knows (GET /api/v1/owners/whoami) is
kept; a missing one, or one the registry no longer knows (its database was reset), gets a new
owner. An owner that exists while its file is lost cannot get its token back: that is an
error saying what to do. Exits 0 when every owner's file holds a current token.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
import urllib.error
import urllib.request
from pathlib import Path

TIMEOUT = 10.0
WAIT_SECONDS = 600.0  # for the registry to answer: it starts with (and after) the database


class Refused(Exception):
    """The registry answered with an error that waiting will not mend."""


class Transient(Exception):
    """The registry is not answering yet, or answered 5xx (e.g. the broker is not up yet)."""


def call(url: str, token: str, body: dict | None = None) -> tuple[int, dict]:
    request = urllib.request.Request(
        url,
        data=None if body is None else json.dumps(body).encode(),
        headers={"Authorization": f"Bearer {token}", "Content-Type": "application/json"},
    )
    try:
        with urllib.request.urlopen(request, timeout=TIMEOUT) as reply:
            return reply.status, json.load(reply)
    except urllib.error.HTTPError as exc:
        try:
            detail = json.load(exc)
        except ValueError:
            detail = {}
        if exc.code >= 500:
            raise Transient(f"{url}: {exc.code} {detail}") from None
        return exc.code, detail if isinstance(detail, dict) else {}
    except (OSError, ValueError) as exc:  # URLError is an OSError; ValueError: not JSON
        raise Transient(f"{url}: {exc}") from None


def current(registry: str, owner: str, token: str) -> bool:
    """Whether the registry knows `token` as `owner`'s (401: unknown or revoked)."""
    status, body = call(f"{registry}/api/v1/owners/whoami", token)
    if status == 200:
        if body.get("owner") != owner:
            raise Refused(f"the token kept for {owner} is {body.get('owner')!r}'s")
        return True
    if status == 401:
        return False
    raise Refused(f"the registry answered {status} to whoami: {body.get('error', body)}")


def write_token(path: Path, token: str) -> None:
    """Replace `path` in one step, so a reader never sees half a token."""
    tmp = path.with_name(f".{path.name}.tmp")
    tmp.unlink(missing_ok=True)
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    with os.fdopen(fd, "w") as f:
        f.write(token + "\n")
        f.flush()
        os.fsync(f.fileno())
    os.replace(tmp, path)


def ensure_owner(registry: str, admin_token: str, owner: str, folder: Path) -> str:
    """Make `owner` unless its file holds a current token; says what it did."""
    path = folder / owner
    kept = path.read_text().strip() if path.exists() else ""
    if kept and current(registry, owner, kept):
        return f"owner {owner}: token kept in {path}"
    status, body = call(f"{registry}/api/v1/owners", admin_token, {"name": owner})
    if status == 201:
        write_token(path, body["token"])
        return f"owner {owner}: made, token in {path}"
    if status == 409:
        raise Refused(
            f"owner {owner} exists but its token is not in {path} (the registry shows a token"
            " only once): put it there, or revoke the owner (DELETE /api/v1/owners/"
            f"{owner}) and choose another name, since names are not reused"
        )
    raise Refused(f"making owner {owner}: the registry answered {status}: {body}")


def parse_args(argv: list[str]) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="skyline-owners", description=__doc__.split("\n")[0])
    parser.add_argument("--registry", default="http://registry:8410")
    parser.add_argument("--admin-token-file", default="/run/secrets/registry-admin-token")
    parser.add_argument("owners", nargs="+", metavar="OWNER:DIR")
    return parser.parse_args(argv)


def main(argv: list[str]) -> int:
    args = parse_args(argv)
    registry = args.registry.rstrip("/")
    admin_token = Path(args.admin_token_file).read_text().strip()
    pairs = []
    for spec in args.owners:
        owner, sep, folder = spec.partition(":")
        if not owner or not sep or not folder:
            print(f"skyline-owners: {spec!r} is not OWNER:DIR", file=sys.stderr)
            return 2
        pairs.append((owner, Path(folder)))
    deadline = time.monotonic() + WAIT_SECONDS
    for owner, folder in pairs:
        while True:
            try:
                print(ensure_owner(registry, admin_token, owner, folder), flush=True)
                break
            except Refused as exc:
                print(f"skyline-owners: {exc}", file=sys.stderr)
                return 1
            except Transient as exc:
                if time.monotonic() > deadline:
                    print(f"skyline-owners: the registry is not answering: {exc}", file=sys.stderr)
                    return 1
                time.sleep(2)
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
