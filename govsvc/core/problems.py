"""RFC 9457 problem details: rendering and the app's error handlers.

Every error leaves the service as ``application/problem+json`` with a stable ``type`` URI; a bug becomes a
generic 500 problem (logged with its traceback server-side, never sent to the client).
"""

from __future__ import annotations

import json
import logging
import sqlite3
from typing import Any

import psycopg
from apiflask import APIFlask, HTTPError
from flask import Response, g, request
from sqlalchemy.exc import DBAPIError, OperationalError
from werkzeug.exceptions import HTTPException

from govsvc.core.errors import PROBLEM_TYPES, ServiceError, problem_type_uri

PROBLEM_MIMETYPE = "application/problem+json"
logger = logging.getLogger("govsvc.errors")
# Routes that answer "may I?": any 5xx they send also says "deny" in the body, so a caller that reads only that
# field still fails closed (the client library raises GovsvcUnavailable on 502/503/504, a deny for its callers).
FAIL_CLOSED_PATHS = ("/v1/decisions",)
# What a database failure can be raised as: SQLAlchemy's wrapper, or a driver's own error where a hot path uses
# the driver's cursor directly (decisions, audit inserts).
DATABASE_ERRORS: tuple[type[Exception], ...] = (DBAPIError, psycopg.Error, sqlite3.Error)
_READ_ONLY_SQLSTATES = {"25006"}  # read_only_sql_transaction (hot standby, default_transaction_read_only)
_STORAGE_SQLSTATES = {"53100", "53000"}  # disk_full, insufficient_resources

_STATUS_SLUGS = {
    400: "bad-request",
    401: "unauthenticated",
    403: "forbidden",
    404: "not-found",
    405: "method-not-allowed",
    406: "not-acceptable",
    409: "conflict",
    413: "payload-too-large",
    415: "unsupported-media-type",
    422: "validation-error",
    429: "rate-limited",
    503: "service-unavailable",
}


def problem_body(
    slug: str,
    detail: str | None = None,
    *,
    status: int | None = None,
    errors: list[dict[str, Any]] | None = None,
    **extensions: Any,
) -> dict[str, Any]:
    """The JSON object of a problem document."""
    default_status, title = PROBLEM_TYPES[slug]
    body: dict[str, Any] = {"type": problem_type_uri(slug), "title": title, "status": status or default_status}
    if detail:
        body["detail"] = detail
    try:
        body["instance"] = request.path
        request_id = g.get("request_id")
        if request_id:
            body["request_id"] = request_id
    except RuntimeError:  # outside a request
        pass
    if errors:
        body["errors"] = errors
    body.update(extensions)
    if body["status"] >= 500 and _fail_closed_route():
        body["decision"] = "deny"
    return body


def _fail_closed_route() -> bool:
    try:
        return request.path.startswith(FAIL_CLOSED_PATHS)
    except RuntimeError:  # outside a request
        return False


def database_problem(error: Exception) -> Response | None:
    """The problem for a database failure the operator must act on, or None for a bug: a read-only database
    (503 ``database-read-only``), a full disk (507 ``insufficient-storage``), an unreachable or restarting
    database, or a connection lost mid-request (503 ``service-unavailable``; retry)."""
    if isinstance(error, DBAPIError):
        orig, lost = error.orig, error.connection_invalidated or isinstance(error, OperationalError)
    elif isinstance(error, psycopg.Error | sqlite3.Error):  # raised by a driver cursor used directly (decisions)
        orig, lost = error, isinstance(error, psycopg.OperationalError | sqlite3.OperationalError)
    else:
        return None
    sqlstate = getattr(orig, "sqlstate", None)
    message = str(orig).lower() if orig is not None else ""
    retry = {"Retry-After": "1"}
    if sqlstate in _READ_ONLY_SQLSTATES or "readonly database" in message:
        logger.error("database refuses writes (read-only)")
        return problem_response(
            "database-read-only", "The database is read-only; nothing was saved.", headers={"Retry-After": "30"}
        )
    if sqlstate in _STORAGE_SQLSTATES or "database or disk is full" in message or "no space left" in message:
        logger.error("database out of storage")
        return problem_response("insufficient-storage", "The database is out of storage; nothing was saved.")
    if lost or isinstance(orig, OSError):
        logger.error("database unavailable: %s", type(orig).__name__ if orig is not None else "unknown")
        return problem_response("service-unavailable", "The database is unavailable; retry later.", headers=retry)
    return None


def problem_response(
    slug: str,
    detail: str | None = None,
    *,
    status: int | None = None,
    errors: list[dict[str, Any]] | None = None,
    headers: dict[str, str] | None = None,
    **extensions: Any,
) -> Response:
    """A complete ``application/problem+json`` response."""
    body = problem_body(slug, detail, status=status, errors=errors, **extensions)
    response = Response(json.dumps(body, ensure_ascii=False), status=body["status"], mimetype=PROBLEM_MIMETYPE)
    for name, value in (headers or {}).items():
        response.headers[name] = value
    return response


def _flatten_validation_messages(detail: Any) -> list[dict[str, Any]]:
    """Turn webargs/marshmallow messages ``{location: {field: [msg]}}`` into a flat ``errors`` list."""
    errors: list[dict[str, Any]] = []

    def walk(location: str, path: list[str], node: Any) -> None:
        if isinstance(node, dict):
            for key, value in node.items():
                walk(location, [*path, str(key)], value)
        elif isinstance(node, list) and all(isinstance(item, str) for item in node):
            for message in node:
                errors.append({"location": location, "field": ".".join(path) or None, "message": message})
        elif isinstance(node, list):
            for index, value in enumerate(node):
                walk(location, [*path, str(index)], value)
        else:
            errors.append({"location": location, "field": ".".join(path) or None, "message": str(node)})

    if isinstance(detail, dict):
        for location, messages in detail.items():
            walk(str(location), [], messages)
    return errors


def _is_invalid_json(detail: Any) -> bool:
    if not isinstance(detail, dict):
        return False
    messages = detail.get("json")
    if isinstance(messages, dict):
        messages = messages.get("_schema")
    return isinstance(messages, list) and any("Invalid JSON" in str(m) for m in messages)


def render_http_error(error: HTTPError) -> Response:
    """APIFlask's error processor: every HTTP error (validation, 404, 405, 413...) as a problem."""
    status = error.status_code
    slug = _STATUS_SLUGS.get(status, "bad-request" if status < 500 else "internal-error")
    detail = error.message if isinstance(error.message, str) else None
    errors = None
    if _is_invalid_json(error.detail):
        slug, status, detail, errors = "malformed-json", 400, "The request body is not valid JSON.", None
    elif status in (400, 422) and error.detail:
        errors = _flatten_validation_messages(error.detail)
        slug = "validation-error"
        status = 422
        detail = "The request has invalid fields; see errors."
    extra = error.extra_data if isinstance(error.extra_data, dict) else {}
    return problem_response(slug, detail, status=status, errors=errors, headers=dict(error.headers or {}), **extra)


def register_error_handlers(app: APIFlask) -> None:
    """Route every failure to a problem document."""
    app.error_processor(render_http_error)

    @app.errorhandler(ServiceError)
    def _service_error(error: ServiceError) -> Response:
        return problem_response(error.slug, error.detail, errors=error.errors, **error.extensions)

    @app.errorhandler(HTTPException)
    def _http_exception(error: HTTPException) -> Response:
        status = error.code or 500
        slug = _STATUS_SLUGS.get(status, "bad-request" if status < 500 else "internal-error")
        return problem_response(slug, error.description, status=status)

    @app.errorhandler(Exception)
    def _unexpected(error: Exception) -> Response:
        if (response := database_problem(error)) is not None:
            return response
        logger.exception("unhandled error on %s %s", request.method, request.url_rule or request.path)
        return problem_response("internal-error", "An unexpected error occurred; it has been logged.")
