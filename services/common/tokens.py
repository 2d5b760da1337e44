"""Bearer tokens: made, read from a request, and compared only through their SHA-256.

Owners authenticate with a random token (it doubles as their broker password, so it is
URL-safe). Only its digest is stored: a leaked database gives no usable token, and lookups
compare digests, so nothing about the token itself leaks through timing.
"""

from __future__ import annotations

import hashlib
import hmac
import re
import secrets

from aiohttp import web

# token_urlsafe(32) makes 43 characters; anything far off that is not one of ours.
TOKEN = re.compile(r"[A-Za-z0-9_-]{16,128}")


def new_token() -> str:
    return secrets.token_urlsafe(32)


def token_sha256(token: str) -> str:
    return hashlib.sha256(token.encode()).hexdigest()


def same_token(given: str, expected: str) -> bool:
    """Constant-time comparison of two tokens (through their digests, so lengths leak nothing)."""
    return hmac.compare_digest(token_sha256(given), token_sha256(expected))


def bearer(request: web.Request) -> str | None:
    """The `Authorization: Bearer <token>` of a request, or None if absent or malformed."""
    scheme, _, token = request.headers.get("Authorization", "").partition(" ")
    token = token.strip()
    if scheme.lower() != "bearer" or not TOKEN.fullmatch(token):
        return None
    return token
