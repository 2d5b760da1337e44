"""`skyline host enroll`'s local side: where the owner token comes from, what is refused, and
that the builder config it writes is one `skyline-builder` reads."""

from __future__ import annotations

import argparse
from pathlib import Path

import pytest

from services.cli import host
from services.cli.common import CliError
from services.common.config import load_config


def args(**given: object) -> argparse.Namespace:
    return argparse.Namespace(**{"token_file": None, "token": None, **given})


def test_token_sources_in_order(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    file_a, file_b = tmp_path / "a", tmp_path / "b"
    file_a.write_text("from-file-a\n")
    file_b.write_text("from-env-file\n")
    monkeypatch.setenv("SKYLINE_OWNER_TOKEN", "from-env")
    assert host.owner_token(args()) == "from-env"
    monkeypatch.setenv("SKYLINE_OWNER_TOKEN_FILE", str(file_b))
    assert host.owner_token(args()) == "from-env-file"
    assert host.owner_token(args(token="from-arg")) == "from-arg"
    assert host.owner_token(args(token="from-arg", token_file=str(file_a))) == "from-file-a"


@pytest.mark.parametrize(
    ("content", "words"),
    [("x" * 5000, "too long"), ("two words", "not a token"), ("", "no owner token")],
)
def test_bad_tokens(tmp_path: Path, monkeypatch, content: str, words: str) -> None:
    monkeypatch.delenv("SKYLINE_OWNER_TOKEN", raising=False)
    monkeypatch.delenv("SKYLINE_OWNER_TOKEN_FILE", raising=False)
    path = tmp_path / "token"
    path.write_text(content)
    with pytest.raises(CliError, match=words):
        host.owner_token(args(token_file=str(path)) if content else args())


def test_missing_token_file(tmp_path: Path) -> None:
    with pytest.raises(CliError, match=r"cannot read the owner token file .*nope"):
        host.owner_token(args(token_file=str(tmp_path / "nope")))


def test_builder_toml_is_what_the_builder_reads(tmp_path: Path) -> None:
    text = host.builder_toml(
        {
            "amqp_url": "amqps://broker.example.org/%2F",
            "builder": {
                "host": "vm-1",
                "owner": 'o"dd\\owner',
                "arches": ["noarch", "x86_64"],
                "releases": ["f41"],
                "slots": 2,
                "workdir": str(tmp_path / "w"),
                "enrol_token": "",
            },
        }
    )
    path = tmp_path / "builder.toml"
    path.write_text(text)
    config = load_config(path, env={})
    assert config.amqp_url == "amqps://broker.example.org/%2F"
    assert config.builder.owner == 'o"dd\\owner'
    assert config.builder.arches == ["noarch", "x86_64"]
    assert config.builder.slots == 2
    assert config.builder.enrol_token == ""
