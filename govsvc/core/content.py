"""Request bodies must be JSON: anything else is refused with 415 before a view parses it.

A view that takes another media type (a CSV upload) declares it with ``@accepts("text/csv")``; its body is then
left unread for the view to stream, and other media types are refused.
"""

from __future__ import annotations

import functools
from collections.abc import Callable
from typing import Any, TypeVar

from flask import Flask, Response, request
from werkzeug.exceptions import BadRequest

from govsvc.core.problems import problem_response

BODY_METHODS = frozenset({"POST", "PUT", "PATCH"})
_ACCEPTS_ATTR = "_govsvc_accepts"
F = TypeVar("F", bound=Callable[..., Any])


def accepts(*mimetypes: str) -> Callable[[F], F]:
    """Declare the (non-JSON) media types a view's body may have; the view reads the body itself."""

    def mark(view: F) -> F:
        setattr(view, _ACCEPTS_ATTR, frozenset(mimetypes))
        return view

    return mark


@functools.lru_cache(maxsize=4096)  # per view function: read on every request with a body
def _accepted(view: Any) -> frozenset[str] | None:
    while view is not None:
        if hasattr(view, _ACCEPTS_ATTR):
            return getattr(view, _ACCEPTS_ATTR)
        view = getattr(view, "__wrapped__", None)
    return None


def _is_json(mimetype: str) -> bool:
    return mimetype == "application/json" or (mimetype.startswith("application/") and mimetype.endswith("+json"))


def init_content_checks(app: Flask) -> None:
    """Refuse non-JSON request bodies on the API."""

    @app.before_request
    def _require_json_body() -> Response | None:
        if request.method not in BODY_METHODS or request.url_rule is None:
            return None
        has_body = bool(request.content_length) or "chunked" in request.headers.get("Transfer-Encoding", "")
        if not has_body:
            return None
        accepted = _accepted(app.view_functions.get(request.endpoint or ""))
        if accepted is not None:
            if request.mimetype in accepted:
                return None
            return problem_response(
                "unsupported-media-type",
                f"Send the body as {' or '.join(sorted(accepted))}, not {request.mimetype or 'an unlabelled body'}.",
            )
        if not _is_json(request.mimetype):
            return problem_response(
                "unsupported-media-type",
                f"Send the body as application/json, not {request.mimetype or 'an unlabelled body'}.",
            )
        try:
            request.get_json(force=True)  # parsed once here, cached for the view
        except BadRequest:
            return problem_response("malformed-json", "The request body is not valid JSON.")
        return None
