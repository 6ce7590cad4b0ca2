"""Canonical JSON encoding of audit events.

``canonical_json`` is ``json.dumps`` with sorted keys, no insignificant
whitespace, UTF-8 output and no ASCII escaping. For the values audit events are
restricted to, this is byte-for-byte the RFC 8785 JSON Canonicalization Scheme
(JCS) encoding:

* values are ``str``, ``int``, ``bool``, ``None``, ``list`` and ``dict`` only.
  Floats are rejected, because JCS serialises numbers the ECMAScript way and
  Python's ``repr`` does not always agree; integers must be within the I-JSON
  safe range (|n| <= 2**53 - 1), where both print the same decimal digits;
* object keys must be strings without characters beyond U+FFFF: JCS sorts keys
  by UTF-16 code units and Python by code points, and the two orders only
  differ for such characters;
* strings must be valid Unicode (no lone surrogates); both encoders escape the
  same characters (``"``, ``\\`` and U+0000..U+001F, with the same short forms
  and lowercase ``\\u00xx``) and leave everything else as UTF-8.

Anything else raises ``ValueError``.
"""

from __future__ import annotations

import json
from typing import Any

__all__ = ["MAX_SAFE_INTEGER", "canonical_json", "check_canonical_value"]

MAX_SAFE_INTEGER = 2**53 - 1

_ENCODER = json.JSONEncoder(
    sort_keys=True, separators=(",", ":"), ensure_ascii=False, allow_nan=False, check_circular=False
)


def _check_key(key: object) -> None:
    """Reject object keys that JCS would order differently from Python."""
    if type(key) is not str:
        raise ValueError(f"object keys must be strings, not {type(key).__name__}")
    if not key.isascii() and max(key) > "\uffff":
        raise ValueError(f"object key {key!r} has a character beyond U+FFFF")


def check_canonical_value(obj: Any) -> None:
    """Raise ``ValueError`` unless ``obj`` only holds values allowed in audit events."""
    stack = [obj]
    while stack:
        value = stack.pop()
        kind = type(value)
        if kind is str or kind is bool or value is None:
            continue
        if kind is int:
            if not -MAX_SAFE_INTEGER <= value <= MAX_SAFE_INTEGER:
                raise ValueError(f"integer {value} is outside the I-JSON safe range")
        elif kind is dict:
            for key, item in value.items():
                _check_key(key)
                stack.append(item)
        elif kind is list:
            stack.extend(value)
        elif kind is float:
            raise ValueError("floats are not allowed in audit events")
        else:
            raise ValueError(f"values of type {kind.__name__} are not allowed in audit events")


def canonical_json(obj: Any) -> bytes:
    """Return the canonical (RFC 8785 compatible) UTF-8 JSON encoding of ``obj``."""
    check_canonical_value(obj)
    try:
        return _ENCODER.encode(obj).encode("utf-8")
    except UnicodeEncodeError as exc:  # lone surrogates
        raise ValueError(f"string is not valid Unicode: {exc}") from exc
