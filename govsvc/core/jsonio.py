"""JSON in and out of the app with orjson: the same documents as Flask's default provider (sorted keys, HTTP
dates for datetimes handed to ``jsonify``, a trailing newline), parsed and written several times faster."""

from __future__ import annotations

import json
from typing import Any

import orjson
from flask.json.provider import DefaultJSONProvider

_OPTIONS = orjson.OPT_SORT_KEYS | orjson.OPT_NON_STR_KEYS | orjson.OPT_PASSTHROUGH_DATETIME | orjson.OPT_APPEND_NEWLINE


class OrjsonProvider(DefaultJSONProvider):
    """Flask's JSON provider on orjson; whatever orjson does not serialise itself goes to Flask's default."""

    def dumps(self, obj: Any, **kwargs: Any) -> str:
        return orjson.dumps(obj, default=self.default, option=_OPTIONS & ~orjson.OPT_APPEND_NEWLINE).decode()

    def loads(self, s: str | bytes, **kwargs: Any) -> Any:
        try:
            return orjson.loads(s)
        except orjson.JSONDecodeError:  # what orjson refuses but json accepts (lone surrogates, NaN, huge integers)
            return json.loads(s)  # reads as before, or raises the same error

    def response(self, *args: Any, **kwargs: Any) -> Any:
        obj = self._prepare_response_obj(args, kwargs)
        option = _OPTIONS | (orjson.OPT_INDENT_2 if self._app.debug else 0)
        return self._app.response_class(orjson.dumps(obj, default=self.default, option=option), mimetype=self.mimetype)


def dumps_unsorted(document: Any) -> bytes:
    """A hot path's document as it was built (datetimes in ISO 8601), without sorting its keys."""
    return orjson.dumps(document, option=orjson.OPT_NON_STR_KEYS)
