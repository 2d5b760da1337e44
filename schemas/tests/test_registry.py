"""Entry points, the fedora-messaging registry, the wire format, and base.package_of."""

from __future__ import annotations

import importlib
import json
from importlib.metadata import entry_points
from pathlib import Path

import pika
import pytest
import skyline_messages
from fedora_messaging import exceptions
from fedora_messaging.message import Message, get_class, get_message, get_name
from schema_support import EXAMPLES, mutated, param_id
from skyline_messages import TaskLeasedV1
from skyline_messages.base import SkylineMessage, package_of

tomllib = pytest.importorskip("tomllib")

PYPROJECT = Path(__file__).resolve().parents[1] / "pyproject.toml"
ENTRY_POINTS: dict[str, str] = tomllib.loads(PYPROJECT.read_text())["project"]["entry-points"][
    "fedora.messages"
]


def load(target: str) -> type:
    module, _, name = target.partition(":")
    return getattr(importlib.import_module(module), name)


@pytest.mark.parametrize(("name", "target"), ENTRY_POINTS.items())
def test_entry_point_resolves(name, target):
    cls = load(target)
    assert issubclass(cls, SkylineMessage)
    assert get_class(name) is cls
    assert get_name(cls) == name
    # The schema name is the topic plus a version, so the two cannot drift apart.
    assert name == f"{cls.topic}.v{cls.__name__.rsplit('V', 1)[1]}"


def test_every_class_has_an_entry_point():
    registered = {load(target) for target in ENTRY_POINTS.values()}
    exported = {getattr(skyline_messages, name) for name in skyline_messages.__all__}
    assert registered == exported == set(EXAMPLES)


def test_installed_entry_points_match_pyproject():
    """A stale editable install would register an old set of classes."""
    installed = {
        ep.name: ep.value
        for ep in entry_points(group="fedora.messages")
        if ep.name.startswith("skyline.")
    }
    assert installed == ENTRY_POINTS


def over_the_wire(msg: Message) -> tuple[str, pika.BasicProperties, bytes]:
    """What a consumer receives: the properties go through AMQP encoding and back."""
    props = pika.BasicProperties()
    props.decode(b"".join(msg._properties.encode()))
    return msg._encoded_routing_key, props, msg._encoded_body


def wire_cases() -> list:
    cases = [pytest.param(cls, None, id=cls.__name__) for cls in EXAMPLES]
    cases.append(pytest.param(TaskLeasedV1, "builder-01", id="TaskLeasedV1-per-host-topic"))
    return cases


@pytest.mark.parametrize(("cls", "host"), wire_cases())
def test_wire_round_trip(cls, host):
    topic = cls.topic_for(host) if host else None
    sent = cls(body=EXAMPLES[cls], topic=topic)
    sent.validate()
    received = get_message(*over_the_wire(sent))
    assert type(received) is cls
    assert received.body == sent.body
    assert received.topic == sent.topic
    assert received.id == sent.id
    assert received.severity == cls.severity
    assert received.summary == sent.summary
    assert received._headers["fedora_messaging_schema"] == get_name(cls)
    assert received._headers["fedora_messaging_schema_package"] == "skyline_messages"
    assert received == sent


@pytest.mark.parametrize("cls", list(EXAMPLES), ids=param_id)
def test_wire_rejects_invalid_body(cls):
    sent = cls(body=mutated(EXAMPLES[cls], "bogus", 1))
    with pytest.raises(exceptions.ValidationError):
        get_message(*over_the_wire(sent))


@pytest.mark.parametrize("cls", list(EXAMPLES), ids=param_id)
def test_wire_rejects_missing_field(cls):
    field = cls.body_schema["required"][0]
    routing_key, props, _ = over_the_wire(cls(body=EXAMPLES[cls]))
    body = json.dumps({k: v for k, v in EXAMPLES[cls].items() if k != field}).encode()
    with pytest.raises(exceptions.ValidationError):
        get_message(routing_key, props, body)


@pytest.mark.parametrize("body", [b"not json", b"\xff\xfe", b"[]"])
def test_wire_rejects_garbage(body):
    cls = next(iter(EXAMPLES))
    routing_key, props, _ = over_the_wire(cls(body=EXAMPLES[cls]))
    with pytest.raises(exceptions.ValidationError):
        get_message(routing_key, props, body)


@pytest.mark.parametrize(
    ("value", "package"),
    [
        ("skyline-hello-1.0-1.src.rpm", "skyline-hello"),
        ("skyline-hello-1.0-1.fc41.src.rpm", "skyline-hello"),
        ("skyline-hello-1.0-1.fc41.x86_64.rpm", "skyline-hello"),
        ("skyline-hello-1.0-1.fc41", "skyline-hello"),
        ("foo-bar-2.3-4.fc41", "foo-bar"),
        ("python3-foo_bar-1.0~rc1-0.1.fc41.noarch.rpm", "python3-foo_bar"),
        ("a-1-1", "a"),
        ("x", "x"),
        ("x-1", "x-1"),
        ("x.src.rpm", "x.src.rpm"),
    ],
)
def test_package_of(value, package):
    assert package_of(value) == package
