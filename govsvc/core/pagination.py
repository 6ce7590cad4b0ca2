"""Opaque cursors for keyset pagination: ``?limit=&cursor=`` in, ``next_cursor`` out."""

from __future__ import annotations

import base64
import json
from collections.abc import Callable, Sequence
from typing import Any, TypeVar

from govsvc.core.errors import ServiceError

T = TypeVar("T")


class InvalidCursor(ServiceError):
    slug = "invalid-cursor"


def encode_cursor(position: dict[str, Any]) -> str:
    raw = json.dumps(position, separators=(",", ":"), sort_keys=True).encode()
    return base64.urlsafe_b64encode(raw).decode().rstrip("=")


def decode_cursor(cursor: str | None) -> dict[str, Any] | None:
    """The position a cursor encodes; InvalidCursor (400) when it was not issued by us."""
    if not cursor:
        return None
    try:
        raw = base64.urlsafe_b64decode(cursor + "=" * (-len(cursor) % 4))
        position = json.loads(raw)
    except (ValueError, UnicodeDecodeError):
        raise InvalidCursor("The cursor is not valid; use the next_cursor of a previous page.") from None
    if not isinstance(position, dict):
        raise InvalidCursor("The cursor is not valid; use the next_cursor of a previous page.")
    return position


def cursor_int(cursor: str | None, key: str = "after") -> int | None:
    """The integer position stored under ``key`` in a cursor."""
    position = decode_cursor(cursor)
    if position is None:
        return None
    value = position.get(key)
    if not isinstance(value, int) or isinstance(value, bool) or value < 0:
        raise InvalidCursor("The cursor is not valid; use the next_cursor of a previous page.")
    return value


def page(rows: Sequence[T], limit: int, position_of: Callable[[T], dict[str, Any]]) -> tuple[list[T], str | None]:
    """Split ``limit + 1`` fetched rows into a page and the cursor of the next one."""
    items = list(rows[:limit])
    next_cursor = encode_cursor(position_of(items[-1])) if len(rows) > limit and items else None
    return items, next_cursor
