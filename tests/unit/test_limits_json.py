"""`limits.check_json_text`: depth and NaN/Infinity found outside strings only, in one linear pass over any input."""
from __future__ import annotations

import json

import pytest

from helpers.localcloud.common.limits import MAX_JSON_DEPTH, LimitError, check_json_text, loads


def kind_of(text: bytes, max_depth: int = MAX_JSON_DEPTH) -> str | None:
    try:
        check_json_text(text, "body", max_depth)
    except LimitError as err:
        return err.kind
    return None


def test_depth_and_non_finite_numbers_are_found_outside_strings_only():
    assert kind_of(b"[" * MAX_JSON_DEPTH + b"]" * MAX_JSON_DEPTH) is None
    assert kind_of(b"[" * (MAX_JSON_DEPTH + 1) + b"]" * (MAX_JSON_DEPTH + 1)) == "json_depth"
    assert kind_of(b'{"a": {"b": [1, 2, {"c": 3}]}}', max_depth=2) == "json_depth"
    for text in (b'{"x": NaN}', b"[1, -Infinity]", b'{"a": "\\\\", "b": Infinity}'):
        assert kind_of(text) == "json_nonfinite", text
    # the same characters inside strings (escaped quotes included) are text, not structure
    inside = json.dumps({"k": "[" * 100 + ' NaN -Infinity "quoted" \\ ' + "{" * 100, "n": [1.5]}).encode()
    assert kind_of(inside) is None
    assert loads(inside)["n"] == [1.5]


@pytest.mark.timeout(60)
def test_unterminated_strings_of_any_length_are_scanned_in_one_pass():
    """`"\\"\\"\\"...` never closes: a pattern that rescans from each quote takes hours on a megabyte of it."""
    for text in (b'["' + b'\\"' * 500_000, b'["' + b'\\"' * 500_000 + b"\\", b'["\\"' * 300_000):
        assert kind_of(text) is None  # malformed, left to the parser
        with pytest.raises(ValueError):
            loads(text)
    deep_then_open = b"[" * 40 + b'"' + b"\\x" * 500_000
    assert kind_of(deep_then_open) == "json_depth"
