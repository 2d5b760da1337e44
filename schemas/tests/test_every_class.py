"""Checks every schema class must pass, whatever its family."""

from __future__ import annotations

import pytest
from schema_support import (
    DROP,
    EXAMPLES,
    assert_invalid,
    assert_valid,
    example,
    missing_params,
    mutated,
    param_id,
    required_only,
)

CLASSES = list(EXAMPLES)


@pytest.mark.parametrize(("cls", "field"), missing_params(CLASSES))
def test_missing_required_field(cls, field):
    assert_invalid(cls, mutated(example(cls), field, DROP))


@pytest.mark.parametrize("cls", CLASSES, ids=param_id)
def test_unknown_field(cls):
    assert_invalid(cls, mutated(example(cls), "bogus", 1))


@pytest.mark.parametrize("cls", CLASSES, ids=param_id)
def test_required_fields_suffice(cls):
    assert_valid(cls, required_only(cls))
