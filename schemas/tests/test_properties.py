"""The typed properties services read message bodies through: every one, on every class."""

from __future__ import annotations

import types
import typing
from typing import Any

import pytest
from fedora_messaging import message
from schema_support import EXAMPLES, TASK, example, param_id, required_only
from skyline_messages import (
    BuildFailedV1,
    BuildStoredV1,
    HostEnrolledV1,
    HostHeartbeatV1,
    TaskFinishedV1,
    TaskMismatchV1,
    TaskVerifiedV1,
)


def field_properties(cls: type) -> dict[str, Any]:
    """{name: return type} of each property named like a field of the class's body (but
    fedora-messaging's own, e.g. `priority`, the AMQP message's)."""
    fields = cls.body_schema["properties"]
    found = {}
    for name in fields.keys() - vars(message.Message).keys():
        prop = getattr(cls, name, None)
        if isinstance(prop, property):
            found[name] = typing.get_type_hints(prop.fget)["return"]
    return found


def conforms(value: Any, hint: Any) -> bool:
    origin, args = typing.get_origin(hint), typing.get_args(hint)
    if origin in (typing.Union, types.UnionType):
        return any(conforms(value, a) for a in args)
    if hint is None or hint is type(None):
        return value is None
    if origin is list:
        return isinstance(value, list) and all(conforms(v, args[0]) for v in value)
    if origin is dict:
        return isinstance(value, dict)
    if hint is float:
        return isinstance(value, int | float) and not isinstance(value, bool)
    if hint is int:
        return isinstance(value, int) and not isinstance(value, bool)
    return isinstance(value, hint)


CLASSES = [cls for cls in EXAMPLES if field_properties(cls)]


@pytest.mark.parametrize("cls", CLASSES, ids=param_id)
def test_field_properties_read_the_full_body(cls):
    body = example(cls)
    msg = cls(body=body)
    for name, hint in field_properties(cls).items():
        value = getattr(msg, name)
        assert conforms(value, hint), (name, value, hint)
        if name in body:
            assert value == body[name], name


@pytest.mark.parametrize("cls", CLASSES, ids=param_id)
def test_field_properties_of_absent_optional_fields(cls):
    """A body with only its required fields still gives every property a value of its type:
    None, or the default the schema's comment names."""
    body = required_only(cls)
    msg = cls(body=body)
    for name, hint in field_properties(cls).items():
        value = getattr(msg, name)
        assert conforms(value, hint), (name, value, hint)


def test_task_fields():
    msg = TaskFinishedV1(body=example(TaskFinishedV1))
    assert msg.task_fields() == TASK
    assert TaskVerifiedV1(body=example(TaskVerifiedV1)).task_fields() == TASK
    verified = TaskVerifiedV1(body=example(TaskVerifiedV1))
    assert set(msg.result_fields()) == set(TaskVerifiedV1.body_schema["required"])
    assert verified.result_fields() == {k: verified.body[k] for k in verified.result_fields()}


def test_absent_optional_fields():
    mismatch = TaskMismatchV1(body=required_only(TaskMismatchV1))
    assert (mismatch.build_id, mismatch.arch) == (None, None)
    verified = TaskVerifiedV1(body=required_only(TaskVerifiedV1))
    assert (verified.comparison_key, verified.failure, verified.rule) == (None, None, None)
    assert (verified.agreeing, verified.odd_ones_out, verified.not_reproducible) == ([], [], False)
    enrolled = HostEnrolledV1(body=required_only(HostEnrolledV1))
    assert (enrolled.cpus, enrolled.mock_configs, enrolled.sandbox) == (None, None, None)
    assert HostHeartbeatV1(body=required_only(HostHeartbeatV1)).running == 0
    # Messages whose schema has no `scratch` are no scratch builds.
    assert BuildFailedV1(body=example(BuildFailedV1)).scratch is False
    assert BuildStoredV1(body=example(BuildStoredV1)).scratch is False
