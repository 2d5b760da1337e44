"""Ed25519 signatures over message bodies, so a host's claims can be pinned to its enrolled key.

A body is signed as canonical JSON (sorted keys, no spaces, UTF-8) of every field but
`signature` itself; the signature travels in the body as base64. Requests that are not
messages (uploads) sign a set of fields the same way, with the signature sent beside them.
"""

from __future__ import annotations

import base64
import datetime
import functools
import json
import os
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric.ed25519 import (
    Ed25519PrivateKey,
    Ed25519PublicKey,
)

from .errors import SignatureError


def canonical_json(body: Mapping[str, Any]) -> bytes:
    """The exact bytes that are signed: stable across Python versions and dict orders."""
    unsigned = {k: v for k, v in body.items() if k != "signature"}
    return json.dumps(unsigned, sort_keys=True, separators=(",", ":"), ensure_ascii=False).encode()


def load_or_create_key(path: Path) -> Ed25519PrivateKey:
    """The host's private key, created on first use with owner-only permissions."""
    if path.exists():
        key = serialization.load_pem_private_key(path.read_bytes(), password=None)
        if not isinstance(key, Ed25519PrivateKey):
            raise SignatureError(f"{path} does not hold an Ed25519 private key")
        return key
    key = Ed25519PrivateKey.generate()
    pem = key.private_bytes(
        serialization.Encoding.PEM,
        serialization.PrivateFormat.PKCS8,
        serialization.NoEncryption(),
    )
    path.parent.mkdir(parents=True, exist_ok=True)
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    with os.fdopen(fd, "wb") as f:
        f.write(pem)
    return key


def public_key_b64(key: Ed25519PrivateKey) -> str:
    raw = key.public_key().public_bytes(serialization.Encoding.Raw, serialization.PublicFormat.Raw)
    return base64.b64encode(raw).decode()


def now_iso() -> str:
    # Microseconds, not seconds: the registry drops a heartbeat not signed strictly later than
    # the last one (replays), and a builder sends one when a task starts and one when it ends.
    # With whole seconds the second of two in one second was dropped, so a host that had just
    # freed its slot looked busy to the dispatcher until its next periodic heartbeat.
    return datetime.datetime.now(datetime.UTC).isoformat(timespec="microseconds")


def sign_body(body: Mapping[str, Any], key: Ed25519PrivateKey) -> dict[str, Any]:
    """A copy of `body` stamped with `signed_at` (if absent) and its `signature`."""
    signed = dict(body)
    signed.setdefault("signed_at", now_iso())
    signed["signature"] = base64.b64encode(key.sign(canonical_json(signed))).decode()
    return signed


def verify_body(body: Mapping[str, Any], public_key: str) -> None:
    """Raise SignatureError unless `body` was signed by the holder of `public_key` (base64)."""
    try:
        pub = _public_key(public_key)
        signature = base64.b64decode(body.get("signature", ""), validate=True)
        pub.verify(signature, canonical_json(body))
    except (InvalidSignature, ValueError, TypeError) as exc:
        # TypeError: a signature or key that is not even a string (None, a number) is garbage
        # like any other, and callers only expect SignatureError.
        raise SignatureError("signature does not match the enrolled key") from exc


@functools.lru_cache(maxsize=262144)
def _public_key(b64: str) -> Ed25519PublicKey:
    """Parsed once per key: heartbeats check thousands of signatures a second. Room for every
    host's key: 100,000 hosts heartbeat in turn, so a smaller LRU cache would miss every time."""
    return Ed25519PublicKey.from_public_bytes(base64.b64decode(b64, validate=True))


def sign_fields(fields: Mapping[str, Any], key: Ed25519PrivateKey) -> str:
    """The base64 signature over canonical JSON of `fields`, to send beside them (a header)."""
    return base64.b64encode(key.sign(canonical_json(fields))).decode()


def verify_fields(fields: Mapping[str, Any], signature: str, public_key: str) -> None:
    """Raise SignatureError unless `signature` (base64) is `public_key`'s over `fields`."""
    verify_body({**fields, "signature": signature}, public_key)
