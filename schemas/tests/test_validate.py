"""SkylineMessage.validate (compiled schemas) agrees with fedora-messaging's own validate."""

from __future__ import annotations

import jsonschema
import pytest
from fedora_messaging import message as fm
from schema_support import EXAMPLES, mutated, param_id

CASES = [
    (cls, body)
    for cls, example in EXAMPLES.items()
    for body in (
        example,
        mutated(example, next(iter(example)), None),  # a wrong type in the first field
        {**example, "unexpected": 1},
        {},
    )
]


def outcome(check) -> str | None:
    try:
        check()
    except jsonschema.ValidationError as exc:
        return exc.message
    return None


@pytest.mark.parametrize(("cls", "body"), CASES, ids=param_id)
def test_same_verdict_and_message_as_fedora_messaging(cls, body) -> None:
    msg = cls(body=body)
    assert outcome(msg.validate) == outcome(lambda: fm.Message.validate(msg))


@pytest.mark.parametrize("cls", list(EXAMPLES), ids=param_id)
def test_headers_are_validated_too(cls) -> None:
    msg = cls(body=EXAMPLES[cls])
    msg._headers["fedora_messaging_severity"] = 25  # not a known severity
    with pytest.raises(jsonschema.ValidationError, match="25 is not one of"):
        msg.validate()
