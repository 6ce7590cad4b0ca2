"""Request bodies must be JSON: anything else is refused with 415 before a view parses it."""

from __future__ import annotations

from flask import Flask, Response, request
from werkzeug.exceptions import BadRequest

from govsvc.core.problems import problem_response

BODY_METHODS = frozenset({"POST", "PUT", "PATCH"})


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
