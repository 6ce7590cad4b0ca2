"""JSON-lines logging with request ids, and a filter that scrubs credentials from every record.

Log lines never carry request bodies, query strings or headers: only the route template, status, timing and
pseudonymous ids. As a second line of defence, :class:`RedactingFilter` removes API keys, bearer tokens and any
registered secret value from messages and their arguments.
"""

from __future__ import annotations

import json
import logging
import re
import sys
import threading
from datetime import UTC, datetime
from typing import Any

from flask import Flask, g, has_request_context, request

from govsvc.core.pii_guard import pii_kind, random_reference

REQUEST_ID_HEADER = "X-Request-Id"
_REQUEST_ID_RE = re.compile(r"^[A-Za-z0-9._:-]{1,128}$")
_CREDENTIAL_PATTERNS = [
    re.compile(r"gsk_[A-Za-z0-9]+_[A-Za-z0-9_-]+"),  # our API keys
    re.compile(r"(?i)(bearer\s+)[^\s\"']+"),
    re.compile(r"\$argon2id\$[^\s\"']+"),
]
_STANDARD_ATTRS = set(vars(logging.LogRecord("", 0, "", 0, "", (), None))) | {"message", "asctime"}


class RedactingFilter(logging.Filter):
    """Replace credentials and registered secret values in a record with ``[REDACTED]``."""

    _secrets: set[str] = set()
    _lock = threading.Lock()

    @classmethod
    def register_secret(cls, value: str) -> None:
        """Never let this exact value reach a log line (e.g. the app's secret key)."""
        if value and len(value) >= 8:
            with cls._lock:
                cls._secrets = cls._secrets | {value}

    @classmethod
    def scrub(cls, text: str) -> str:
        for pattern in _CREDENTIAL_PATTERNS:
            text = pattern.sub(lambda m: (m.group(1) if m.groups() else "") + "[REDACTED]", text)
        for secret in cls._secrets:
            if secret in text:
                text = text.replace(secret, "[REDACTED]")
        return text

    def filter(self, record: logging.LogRecord) -> bool:
        message = record.getMessage()
        scrubbed = self.scrub(message)
        if scrubbed != message or record.args:
            record.msg, record.args = scrubbed, None
        if record.exc_info and record.exc_info[1] is not None:
            record.exc_text = self.scrub(logging.Formatter().formatException(record.exc_info))
            record.exc_info = None
        return True


class JsonFormatter(logging.Formatter):
    """One JSON object per line: time, level, logger, message, request id and any ``extra`` fields."""

    def format(self, record: logging.LogRecord) -> str:
        entry: dict[str, Any] = {
            "time": datetime.fromtimestamp(record.created, UTC).isoformat(timespec="milliseconds"),
            "level": record.levelname,
            "logger": record.name,
            "message": record.getMessage(),
        }
        if has_request_context():
            request_id = g.get("request_id")
            if request_id:
                entry["request_id"] = request_id
        for key, value in record.__dict__.items():
            if key not in _STANDARD_ATTRS and not key.startswith("_"):
                entry[key] = value
        if record.exc_text:
            entry["exception"] = record.exc_text
        elif record.exc_info:
            entry["exception"] = RedactingFilter.scrub(self.formatException(record.exc_info))
        return json.dumps(entry, default=str, ensure_ascii=False)


def configure_logging(level: str) -> None:
    """Send the root logger's records to stderr as JSON lines, through the redacting filter."""
    root = logging.getLogger()
    for handler in root.handlers:
        if getattr(handler, "_govsvc", False):
            handler.setLevel(level)
            root.setLevel(level)
            return
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(JsonFormatter())
    handler.addFilter(RedactingFilter())
    handler._govsvc = True  # type: ignore[attr-defined]
    handler.setLevel(level)
    root.addHandler(handler)
    root.setLevel(level)
    # Werkzeug's own access log repeats the raw URL (query strings may hold identifiers): ours replaces it.
    logging.getLogger("werkzeug").setLevel(logging.WARNING)
    # casbin logs every policy line it loads at INFO: policy is data, not a log message.
    logging.getLogger("casbin").setLevel(logging.WARNING)


def new_request_id() -> str:
    """A random request id (never one that could be mistaken for a phone number)."""
    return random_reference("", 16)


def init_request_logging(app: Flask) -> None:
    """Assign a request id (accepted from X-Request-Id when well-formed) and write one access line per request."""
    access_log = logging.getLogger("govsvc.access")

    @app.before_request
    def _assign_request_id() -> None:
        incoming = request.headers.get(REQUEST_ID_HEADER, "")
        acceptable = _REQUEST_ID_RE.match(incoming) and pii_kind(incoming) is None
        g.request_id = incoming if acceptable else new_request_id()
        g.request_started = datetime.now(UTC)

    @app.after_request
    def _log_request(response: Any) -> Any:
        request_id = g.get("request_id") or new_request_id()
        response.headers[REQUEST_ID_HEADER] = request_id
        if not access_log.isEnabledFor(logging.INFO):
            return response  # nothing would be written (the level is cached by the logging module)
        started = g.get("request_started")
        duration_ms = (datetime.now(UTC) - started).total_seconds() * 1000 if started else None
        principal = g.get("principal")
        access_log.info(
            "request",
            extra={
                "method": request.method,
                "route": request.url_rule.rule if request.url_rule else None,
                "status": response.status_code,
                "duration_ms": round(duration_ms, 2) if duration_ms is not None else None,
                "principal": principal.principal_id if principal else None,
            },
        )
        return response
