"""The driver specification runner's matching rules (``tests/store/spec/match.py``): a
rule that matched too much would let a store's wrong answer pass the gate."""

from __future__ import annotations

import pytest
from bson import Int64

from tests.store.spec.match import MISSING, Unsupported, mismatch


def test_numbers_match_by_value_whatever_their_type() -> None:
    assert mismatch(1, 1.0, root=False) is None
    assert mismatch(Int64(2), 2, root=False) is None
    assert mismatch(1, 2, root=False) is not None
    assert mismatch(1, True, root=False) is not None
    assert mismatch(1, "1", root=False) is not None


def test_extra_fields_only_in_root_documents() -> None:
    assert mismatch({"a": 1}, {"a": 1, "b": 2}, root=True) is None
    assert mismatch({"d": {"a": 1}}, {"d": {"a": 1, "b": 2}}, root=True) is not None
    assert mismatch({"a": 1}, {"a": 1, "b": 2}, root=False) is not None
    assert mismatch({"a": 1}, {"b": 1}, root=True) is not None


def test_arrays_match_element_by_element_in_order() -> None:
    assert mismatch([1, {"a": 1}], [1, {"a": 1}], root=False) is None
    assert mismatch([1, 2], [2, 1], root=False) is not None
    assert mismatch([1], [1, 2], root=False) is not None


def test_special_operators() -> None:
    assert mismatch({"x": {"$$exists": False}}, {}, root=True) is None
    assert mismatch({"x": {"$$exists": False}}, {"x": 1}, root=True) is not None
    assert mismatch({"$$unsetOrMatches": {"0": 1}}, MISSING, root=False) is None
    assert mismatch({"$$unsetOrMatches": {"0": 1}}, {"0": 2}, root=False) is not None
    assert mismatch({"$$type": ["int", "long"]}, Int64(5), root=False) is None
    assert mismatch({"$$type": "string"}, 5, root=False) is not None
    assert mismatch({"$$lte": 3}, 4, root=False) is not None
    with pytest.raises(Unsupported):
        mismatch({"$$sessionLsid": "session0"}, {}, root=False)
