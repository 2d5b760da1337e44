"""Tests for services.common.config: the TOML file, SKYLINE_* overrides and strictness."""

from __future__ import annotations

from pathlib import Path

import pytest

from services.common.config import (
    BuilderConfig,
    Config,
    RegistryConfig,
    _coerce,
    load_config,
    masked,
)
from services.common.errors import ConfigError


def write(tmp_path: Path, text: str, name: str = "skyline.toml") -> Path:
    path = tmp_path / name
    path.write_text(text)
    return path


def test_defaults_without_a_file() -> None:
    config = load_config(env={})
    assert config.registry == RegistryConfig()
    assert config.amqp_url == Config().amqp_url
    assert Path(config.base_dir) == Path.cwd()


def test_toml_file_sets_top_level_and_section_keys(tmp_path: Path) -> None:
    path = write(
        tmp_path,
        'amqp_url = "amqp://u:p@broker:5672/%2F"\n'
        'log_level = "DEBUG"\n'
        "[registry]\n"
        "heartbeat_timeout = 30\n"
        'core_keys = ["a", "b"]\n'
        "[builder]\n"
        'host = "b1"\n'
        'arches = ["noarch", "aarch64"]\n'
        "slots = 3\n",
    )
    config = load_config(path, env={})
    assert config.amqp_url == "amqp://u:p@broker:5672/%2F"
    assert config.log_level == "DEBUG"
    assert config.registry.heartbeat_timeout == 30.0
    assert isinstance(config.registry.heartbeat_timeout, float)
    assert config.registry.core_keys == ["a", "b"]
    assert config.builder.host == "b1"
    assert config.builder.arches == ["noarch", "aarch64"]
    assert config.builder.slots == 3
    # Untouched sections keep their defaults.
    assert config.dispatcher.lease_seconds == 3600


def test_skyline_conf_names_the_file(tmp_path: Path) -> None:
    path = write(tmp_path, 'log_level = "WARNING"\n')
    assert load_config(env={"SKYLINE_CONF": str(path)}).log_level == "WARNING"


def test_environment_overrides_the_file(tmp_path: Path) -> None:
    path = write(
        tmp_path,
        'amqp_url = "amqp://file/"\n[builder]\narches = ["aarch64"]\nslots = 1\n',
    )
    env = {
        "SKYLINE_AMQP_URL": "amqp://env/",
        "SKYLINE_DATABASE_URL": "postgresql://env/db",
        "SKYLINE_BUILDER_ARCHES": "noarch, x86_64,",
        "SKYLINE_BUILDER_SLOTS": "4",
        "SKYLINE_REGISTRY_HEARTBEAT_TIMEOUT": "12.5",
        "SKYLINE_REGISTRY_CORE_KEYS": "",
    }
    config = load_config(path, env=env)
    assert config.amqp_url == "amqp://env/"
    assert config.database_url == "postgresql://env/db"
    assert config.builder.arches == ["noarch", "x86_64"]
    assert config.builder.slots == 4
    assert config.registry.heartbeat_timeout == 12.5
    assert config.registry.core_keys == []


def test_environment_without_a_file() -> None:
    config = load_config(env={"SKYLINE_BUILDER_ARCHES": "noarch,x86_64"})
    assert config.builder.arches == ["noarch", "x86_64"]


@pytest.mark.parametrize(
    ("text", "yes"),
    [("1", True), ("true", True), ("YES", True), ("True", True), ("0", False), ("no", False)],
)
def test_bool_coercion_from_strings(text: str, yes: bool) -> None:
    assert _coerce("X", bool, text) is yes


@pytest.mark.parametrize("value", ["maybe", "", 1, None])
def test_bool_coercion_refuses_other_values(value: object) -> None:
    with pytest.raises(ConfigError, match="X: expected true or false"):
        _coerce("X", bool, value)


def test_bool_from_toml_is_kept() -> None:
    assert _coerce("X", bool, False) is False


@pytest.mark.parametrize(("kind", "text", "value"), [(int, "42", 42), (float, "0.5", 0.5)])
def test_number_coercion(kind: type, text: str, value: object) -> None:
    result = _coerce("X", kind, text)
    assert result == value
    assert type(result) is kind


@pytest.mark.parametrize(
    ("env", "name"),
    [
        ({"SKYLINE_BUILDER_SLOTS": "two"}, "SKYLINE_BUILDER_SLOTS"),
        ({"SKYLINE_BUILDER_SLOTS": "1.5"}, "SKYLINE_BUILDER_SLOTS"),
        ({"SKYLINE_REGISTRY_HEARTBEAT_TIMEOUT": "soon"}, "SKYLINE_REGISTRY_HEARTBEAT_TIMEOUT"),
    ],
)
def test_bad_numbers_in_the_environment(env: dict[str, str], name: str) -> None:
    with pytest.raises(ConfigError, match=name):
        load_config(env=env)


@pytest.mark.parametrize(
    "line",
    [
        'slots = "many"',
        "slots = 1.5",  # never silently truncated to 1
        "slots = true",
        "arches = [1, 2]",
        "host = [1]",
        "heartbeat_seconds = false",
    ],
)
def test_wrong_types_in_the_file(tmp_path: Path, line: str) -> None:
    path = write(tmp_path, f"[builder]\n{line}\n")
    with pytest.raises(ConfigError):
        load_config(path, env={})


def test_integral_float_and_string_list_in_the_file(tmp_path: Path) -> None:
    path = write(tmp_path, '[builder]\nslots = 2.0\narches = "noarch,x86_64"\n')
    config = load_config(path, env={})
    assert config.builder.slots == 2
    assert config.builder.arches == ["noarch", "x86_64"]


@pytest.mark.parametrize(
    ("text", "where"),
    [
        ("[registry]\nheartbeat_timout = 3\n", "[registry]"),
        ("[builder]\nslot = 3\n", "[builder]"),
        ("amqp = 'x'\n", "[top level]"),
        # A key named like a section, inside a section, is a typo too (collector_url).
        ("[builder]\ncollector = 'http://x'\n", "[builder]"),
    ],
)
def test_unknown_keys_name_their_section(tmp_path: Path, text: str, where: str) -> None:
    path = write(tmp_path, text)
    with pytest.raises(ConfigError, match="unknown setting") as info:
        load_config(path, env={})
    assert where in str(info.value)


def test_section_must_be_a_table(tmp_path: Path) -> None:
    path = write(tmp_path, 'registry = "yes"\n')
    with pytest.raises(ConfigError, match=r"\[registry\] must be a table"):
        load_config(path, env={})


def test_bad_toml(tmp_path: Path) -> None:
    path = write(tmp_path, "[registry\nlisten = \n")
    with pytest.raises(ConfigError, match="not valid TOML"):
        load_config(path, env={})


def test_missing_file(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="does not exist"):
        load_config(tmp_path / "nope.toml", env={})


def test_config_error_is_a_value_error() -> None:
    assert issubclass(ConfigError, ValueError)


def test_relative_paths_resolve_against_the_files_folder(tmp_path: Path, monkeypatch) -> None:
    folder = tmp_path / "etc" / "skyline"
    folder.mkdir(parents=True)
    path = write(folder, '[collector]\nstaging_dir = "staging"\nkoji_topdir = "/srv/koji"\n')
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    monkeypatch.chdir(elsewhere)
    config = load_config(Path("..") / "etc" / "skyline" / path.name, env={})
    assert Path(config.base_dir) == folder.resolve()
    assert config.path(config.collector.staging_dir) == folder.resolve() / "staging"
    assert config.path(config.collector.koji_topdir) == Path("/srv/koji")
    assert config.path("../x") == (folder / ".." / "x").resolve()


def test_builder_defaults_have_noarch() -> None:
    assert "noarch" in BuilderConfig().arches


@pytest.mark.parametrize(
    ("url", "shown"),
    [
        ("amqp://guest:secret@host:5672/%2F", "amqp://guest:***@host:5672/%2F"),
        ("postgresql://u:p@ss@db/skyline", "postgresql://u:***@db/skyline"),
        (
            "postgresql://skyline@127.0.0.1:5432/skyline",
            "postgresql://skyline@127.0.0.1:5432/skyline",
        ),
        ("amqp://host:5672/", "amqp://host:5672/"),
        ("", ""),
    ],
)
def test_masked_hides_passwords(url: str, shown: str) -> None:
    assert masked(url) == shown
    assert "secret" not in masked(url)


def test_registry_trust_is_a_sub_table(tmp_path: Path) -> None:
    from services.registry.trust import Trust, TrustConfig

    assert load_config(env={}).registry.trust == TrustConfig()
    path = write(
        tmp_path,
        "[registry]\nlisten = '0.0.0.0:1'\n[registry.trust]\npromote_after = 3\n"
        "demote_trusted_to = 'quarantined'\n",
    )
    trust = load_config(path, env={"SKYLINE_REGISTRY_TRUST_QUARANTINE_AFTER": "4"}).registry.trust
    assert trust == TrustConfig(
        promote_after=3, demote_trusted_to=Trust.QUARANTINED, quarantine_after=4
    )


@pytest.mark.parametrize(
    ("text", "match"),
    [
        ("[registry.trust]\npromote_aftr = 3\n", r"unknown setting.*\[registry\.trust\]"),
        ("[registry.trust]\npromote_after = 0\n", r"\[registry\.trust\].*at least 1"),
        ("[registry.trust]\ndemote_untrusted_to = 'core'\n", "cannot demote to core"),
        ("[registry.trust]\ndemote_trusted_to = 'nowhere'\n", "expected one of untrusted"),
        ("[registry]\ntrust = 3\n", r"\[registry\.trust\] must be a table"),
    ],
)
def test_bad_registry_trust_settings(tmp_path: Path, text: str, match: str) -> None:
    with pytest.raises(ConfigError, match=match):
        load_config(write(tmp_path, text), env={})
