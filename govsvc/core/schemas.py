"""Marshmallow building blocks shared by every API: strict fields, problem documents, pagination."""

from __future__ import annotations

from typing import Any

from apiflask import Schema
from apiflask.fields import Boolean, Float, Integer, List, Nested, String
from apiflask.validators import Length, Range
from marshmallow import RAISE


class StrictSchema(Schema):
    """Unknown fields are errors."""

    class Meta:
        unknown = RAISE


def QueryBoolean(**kwargs: Any) -> Boolean:
    """A query-string boolean: exactly ``true`` or ``false``."""
    return Boolean(truthy={"true"}, falsy={"false"}, **kwargs)


class StrictBoolean(Boolean):
    """A JSON boolean: ``true`` or ``false`` only (marshmallow's Boolean also takes "yes", 1, "on"...)."""

    def _deserialize(self, value: Any, attr: str | None, data: Any, **kwargs: Any) -> bool:
        if not isinstance(value, bool):
            raise self.make_error("invalid")
        return value


class StrictFloat(Float):
    """A JSON number, not a numeric string or a boolean."""

    def _deserialize(self, value: Any, attr: str | None, data: Any, **kwargs: Any) -> Any:
        if isinstance(value, bool) or not isinstance(value, int | float):
            raise self.make_error("invalid")
        return super()._deserialize(value, attr, data, **kwargs)


def StrictInteger(**kwargs: Any) -> Integer:
    """An integer field that rejects floats and numeric strings."""
    return Integer(strict=True, **kwargs)


class FieldErrorSchema(Schema):
    location = String(metadata={"description": "json, query, path or header"})
    field = String(allow_none=True, metadata={"description": "dotted path of the offending field"})
    message = String()


class ProblemSchema(Schema):
    """RFC 9457 problem details."""

    type = String(required=True, metadata={"example": "urn:govsvc:problem:validation-error"})
    title = String(required=True)
    status = Integer(required=True)
    detail = String()
    instance = String()
    request_id = String()
    errors = List(Nested(FieldErrorSchema))


class PageQuerySchema(StrictSchema):
    """``?limit=&cursor=`` of every list endpoint."""

    limit = Integer(load_default=50, validate=Range(min=1, max=200))
    cursor = String(load_default=None, validate=Length(max=500))
