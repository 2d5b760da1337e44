"""Tests for services.common.signing: Ed25519 over canonical JSON bodies."""

from __future__ import annotations

import base64
import copy
import stat
from pathlib import Path
from typing import Any

import pytest
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from services.common.errors import SignatureError
from services.common.signing import (
    canonical_json,
    load_or_create_key,
    public_key_b64,
    sign_body,
    sign_fields,
    verify_body,
    verify_fields,
)

BODY: dict[str, Any] = {
    "task_id": 7,
    "host": "builder-1",
    "status": "succeeded",
    "duration": 12.5,
    "files": [
        {"name": "a-1-1.noarch.rpm", "size": 10, "sha256": "a" * 64},
        {"name": "build.log", "size": 3, "sha256": "b" * 64},
    ],
    "env_manifest": {"rpm": "4.19.1", "gcc": "14.1"},
    "note": "déjà vu",
}


@pytest.fixture(scope="module")
def key() -> Ed25519PrivateKey:
    return Ed25519PrivateKey.generate()


@pytest.fixture(scope="module")
def signed(key: Ed25519PrivateKey) -> dict[str, Any]:
    return sign_body(BODY, key)


def test_round_trip(key: Ed25519PrivateKey, signed: dict[str, Any]) -> None:
    verify_body(signed, public_key_b64(key))
    assert {k: v for k, v in signed.items() if k not in ("signature", "signed_at")} == BODY
    assert len(base64.b64decode(signed["signature"])) == 64


def test_signing_does_not_touch_the_input(key: Ed25519PrivateKey) -> None:
    body = copy.deepcopy(BODY)
    sign_body(body, key)
    assert body == BODY


def test_existing_signed_at_is_kept_and_signed(key: Ed25519PrivateKey) -> None:
    stamp = "2026-01-02T03:04:05+00:00"
    signed = sign_body({**BODY, "signed_at": stamp}, key)
    assert signed["signed_at"] == stamp
    verify_body(signed, public_key_b64(key))
    with pytest.raises(SignatureError):
        verify_body({**signed, "signed_at": "2026-01-02T03:04:06+00:00"}, public_key_b64(key))


def test_key_order_does_not_matter(key: Ed25519PrivateKey, signed: dict[str, Any]) -> None:
    reordered = dict(reversed(list(signed.items())))
    verify_body(reordered, public_key_b64(key))


def test_canonical_json_ignores_the_signature_and_order() -> None:
    assert canonical_json({"b": 1, "a": "é", "signature": "x"}) == '{"a":"é","b":1}'.encode()


def _tamperings() -> list[tuple[str, Any]]:
    def setter(path: tuple[Any, ...], value: Any):
        def apply(body: dict[str, Any]) -> None:
            target = body
            for step in path[:-1]:
                target = target[step]
            target[path[-1]] = value

        return apply

    cases: list[tuple[str, Any]] = [
        ("task_id", setter(("task_id",), 8)),
        ("task_id type", setter(("task_id",), "7")),
        ("host", setter(("host",), "builder-2")),
        ("status", setter(("status",), "failed")),
        ("duration", setter(("duration",), 12.0)),
        ("note", setter(("note",), "deja vu")),
        ("signed_at", setter(("signed_at",), "2000-01-01T00:00:00+00:00")),
        ("nested file digest", setter(("files", 0, "sha256"), "c" * 64)),
        ("nested file size", setter(("files", 1, "size"), 4)),
        ("nested manifest", setter(("env_manifest", "gcc"), "14.2")),
        ("added field", setter(("extra",), True)),
        ("added nested field", setter(("env_manifest", "make"), "4.4")),
        ("dropped file", lambda b: b["files"].pop()),
        ("reordered files", lambda b: b["files"].reverse()),
        ("dropped field", lambda b: b.pop("note")),
    ]
    return cases


@pytest.mark.parametrize(("what", "tamper"), _tamperings(), ids=[c[0] for c in _tamperings()])
def test_tampering_any_field_fails(
    key: Ed25519PrivateKey, signed: dict[str, Any], what: str, tamper: Any
) -> None:
    forged = copy.deepcopy(signed)
    tamper(forged)
    assert forged != signed
    with pytest.raises(SignatureError):
        verify_body(forged, public_key_b64(key))


def test_wrong_key_fails(signed: dict[str, Any]) -> None:
    with pytest.raises(SignatureError):
        verify_body(signed, public_key_b64(Ed25519PrivateKey.generate()))


def test_body_signed_by_another_key_fails(key: Ed25519PrivateKey) -> None:
    forged = sign_body(BODY, Ed25519PrivateKey.generate())
    with pytest.raises(SignatureError):
        verify_body(forged, public_key_b64(key))


@pytest.mark.parametrize(
    "signature",
    [
        "",
        "not base64 at all!",
        "AAAA",  # valid base64, wrong length
        "A" * 86 + "==",  # right shape, wrong value
        "é" * 88,  # not ASCII
        None,
        123,
        ["A" * 86 + "=="],
    ],
)
def test_garbage_signature_is_a_signature_error(
    key: Ed25519PrivateKey, signed: dict[str, Any], signature: Any
) -> None:
    with pytest.raises(SignatureError):
        verify_body({**signed, "signature": signature}, public_key_b64(key))


def test_missing_signature_is_a_signature_error(
    key: Ed25519PrivateKey, signed: dict[str, Any]
) -> None:
    unsigned = {k: v for k, v in signed.items() if k != "signature"}
    with pytest.raises(SignatureError):
        verify_body(unsigned, public_key_b64(key))


@pytest.mark.parametrize(
    "public_key",
    [
        "",
        "!!!",
        base64.b64encode(b"x" * 31).decode(),  # too short for Ed25519
        base64.b64encode(b"x" * 33).decode(),
        "é",
        None,
        42,
        b"\x00" * 32,
    ],
)
def test_garbage_key_is_a_signature_error(signed: dict[str, Any], public_key: Any) -> None:
    with pytest.raises(SignatureError):
        verify_body(signed, public_key)


def test_key_file_is_created_private_and_reloaded_identically(tmp_path: Path) -> None:
    path = tmp_path / "deep" / "er" / "host.key"
    key = load_or_create_key(path)
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    assert path.read_bytes().startswith(b"-----BEGIN PRIVATE KEY-----")
    again = load_or_create_key(path)
    assert public_key_b64(again) == public_key_b64(key)
    # The re-loaded key signs what the first one verifies, and the other way round.
    verify_body(sign_body(BODY, again), public_key_b64(key))
    assert stat.S_IMODE(path.stat().st_mode) == 0o600


def test_two_key_files_are_two_keys(tmp_path: Path) -> None:
    a = load_or_create_key(tmp_path / "a.key")
    b = load_or_create_key(tmp_path / "b.key")
    assert public_key_b64(a) != public_key_b64(b)


def test_a_file_holding_another_kind_of_key_is_refused(tmp_path: Path) -> None:
    path = tmp_path / "ec.key"
    pem = ec.generate_private_key(ec.SECP256R1()).private_bytes(
        serialization.Encoding.PEM,
        serialization.PrivateFormat.PKCS8,
        serialization.NoEncryption(),
    )
    path.write_bytes(pem)
    with pytest.raises(SignatureError, match="Ed25519"):
        load_or_create_key(path)


UPLOAD = {
    "lease_id": "3f2b8c1e-9a4d-4e6f-8b7a-1c2d3e4f5a6b",
    "name": "build.log",
    "sha256": "a" * 64,
    "host": "builder-1",
    "signed_at": "2026-01-02T03:04:05.000006+00:00",
}


def test_fields_round_trip_and_match_a_signed_body(key: Ed25519PrivateKey) -> None:
    signature = sign_fields(UPLOAD, key)
    verify_fields(dict(reversed(list(UPLOAD.items()))), signature, public_key_b64(key))
    # The same bytes are signed as for a body: one canonical form for everything.
    verify_body({**UPLOAD, "signature": signature}, public_key_b64(key))
    assert sign_body(UPLOAD, key)["signature"] == signature  # Ed25519 is deterministic


@pytest.mark.parametrize("field", sorted(UPLOAD))
def test_fields_changed_after_signing_fail(key: Ed25519PrivateKey, field: str) -> None:
    signature = sign_fields(UPLOAD, key)
    with pytest.raises(SignatureError):
        verify_fields({**UPLOAD, field: UPLOAD[field] + "x"}, signature, public_key_b64(key))


@pytest.mark.parametrize("signature", ["", "not base64!", "AAAA", "A" * 86 + "=="])
def test_fields_with_another_key_or_garbage_fail(key: Ed25519PrivateKey, signature: str) -> None:
    other = sign_fields(UPLOAD, Ed25519PrivateKey.generate())
    for bad in (other, signature):
        with pytest.raises(SignatureError):
            verify_fields(UPLOAD, bad, public_key_b64(key))
