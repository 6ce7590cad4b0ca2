"""Canonical JSON tests: the RFC 8785 (JCS) compatible subset used for audit events."""

from __future__ import annotations

import pytest

from audit.canonical import MAX_SAFE_INTEGER, canonical_json


def test_sorted_compact_utf8() -> None:
    event = {"seq": 3, "time": "2025-01-01T00:00:00Z", "b": [1, True, None, "x"], "a": {"z": 1, "y": {}}}
    assert canonical_json(event) == (
        b'{"a":{"y":{},"z":1},"b":[1,true,null,"x"],"seq":3,"time":"2025-01-01T00:00:00Z"}'
    )


def test_strings_as_jcs() -> None:
    # JCS: only ", \\ and U+0000..U+001F are escaped (short forms where they exist, else lowercase \\u00xx);
    # everything else, including non-ASCII, "/" and U+007F, is emitted as UTF-8.
    value = '"\\/\b\f\n\r\t\x01\x1f\x7f é €😀'
    expected = '"\\"\\\\/\\b\\f\\n\\r\\t\\u0001\\u001f\x7f é €😀"'.encode()
    assert canonical_json(value) == expected


def test_key_order_is_utf16_compatible() -> None:
    # Keys within the BMP sort identically by code point and by UTF-16 code unit.
    assert canonical_json({"\u00e9": 1, "z": 2, "A": 3, "\u20ac": 4}) == '{"A":3,"z":2,"é":1,"€":4}'.encode()


def test_integers() -> None:
    encoded = canonical_json([0, -1, MAX_SAFE_INTEGER, -MAX_SAFE_INTEGER])
    assert encoded == b"[0,-1,9007199254740991,-9007199254740991]"
    for bad in (MAX_SAFE_INTEGER + 1, -MAX_SAFE_INTEGER - 1, 10**30):
        with pytest.raises(ValueError, match="safe range"):
            canonical_json({"n": bad})


@pytest.mark.parametrize(
    "value",
    [
        1.0,
        {"x": 0.5},
        [float("nan")],
        {"x": float("inf")},
        {1: "non-string key"},
        {"\U0001f600": "key beyond the BMP"},
        {"x": "\ud800"},
        {"x": (1, 2)},
        {"x": b"bytes"},
        {"x": {1, 2}},
    ],
)
def test_rejected_values(value) -> None:
    with pytest.raises(ValueError):
        canonical_json(value)


def test_non_bmp_values_are_fine() -> None:
    assert canonical_json({"x": "\U0001f600"}) == '{"x":"😀"}'.encode()
