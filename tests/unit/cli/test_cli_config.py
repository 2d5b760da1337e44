"""Where `skyline` looks for its configuration, like fedora-messaging: --conf, then
$SKYLINE_CONF, then the user's file, then the system's; a clear error naming every place."""

from __future__ import annotations

from pathlib import Path

import pytest

from services.cli import common
from services.cli.common import CliError


def _write(path: Path) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text("")
    return path


def test_order_conf_then_env_then_user_then_system(tmp_path: Path) -> None:
    home = tmp_path / "home"
    system = _write(tmp_path / "etc" / "skyline.toml")
    user = _write(home / ".config" / "skyline" / "skyline.toml")
    env_file = _write(tmp_path / "env.toml")
    explicit = _write(tmp_path / "explicit.toml")
    env = {"SKYLINE_CONF": str(env_file)}

    assert common.find_config(explicit, env, home, system) == explicit
    assert common.find_config(None, env, home, system) == env_file
    assert common.find_config(None, {}, home, system) == user
    user.unlink()
    assert common.find_config(None, {}, home, system) == system


def test_a_named_file_that_is_missing_is_an_error_not_a_fall_back(tmp_path: Path) -> None:
    system = _write(tmp_path / "etc" / "skyline.toml")
    with pytest.raises(CliError) as caught:
        common.find_config(None, {"SKYLINE_CONF": str(tmp_path / "nope.toml")}, tmp_path, system)
    assert caught.value.code == common.USAGE
    assert "nope.toml ($SKYLINE_CONF)" in str(caught.value)


def test_nothing_found_names_every_place_tried(tmp_path: Path, monkeypatch) -> None:
    monkeypatch.chdir(tmp_path)
    with pytest.raises(CliError) as caught:
        common.find_config(None, {}, tmp_path / "home", tmp_path / "etc" / "skyline.toml")
    message = str(caught.value)
    assert message.startswith("no configuration file: tried ")
    for where in ("(user file)", "(system file)", "(local system)", ".config/skyline"):
        assert where in message


def test_subcommand_groups_are_shared_between_modules() -> None:
    import argparse

    parser = argparse.ArgumentParser()
    commands = parser.add_subparsers(dest="command")
    common.group(commands, "host", "hosts").add_parser("one").set_defaults(which=1)
    common.group(commands, "host", "hosts").add_parser("two").set_defaults(which=2)
    assert parser.parse_args(["host", "one"]).which == 1
    assert parser.parse_args(["host", "two"]).which == 2


def test_the_real_parser_has_every_command() -> None:
    from services.cli.__main__ import parser

    p = parser()
    for argv in (
        ["submit", "x.src.rpm"],
        ["status", "1"],
        ["watch", "1"],
        ["stats"],
        ["host", "enroll"],
        ["host", "cloud-init"],
        ["host", "container"],
        ["local", "up"],
    ):
        assert callable(p.parse_args(argv).func)
