"""``Idempotency-Key`` on creating POSTs: a repeated request replays the first response instead of acting twice.

The stored response is written in the same transaction as the change it describes, so either both exist or
neither does. Fields that carry secrets (e.g. a new API key) are stored as ``null``: the secret is shown once.
A key reused with a different request body is rejected (422).
"""

from __future__ import annotations

import hashlib
import json
import re
from collections.abc import Callable
from datetime import datetime, timedelta
from typing import Any, TypeVar

from flask import Flask, Response, current_app, g, request
from sqlalchemy import delete, select
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session

from govsvc.core.db import get_session, utcnow
from govsvc.core.models import IdempotencyRecord
from govsvc.core.problems import problem_response

F = TypeVar("F", bound=Callable[..., Any])
HEADER = "Idempotency-Key"
REPLAYED_HEADER = "Idempotent-Replayed"
_KEY_RE = re.compile(r"^[\x21-\x7e]{1,255}$")
_ATTR = "_govsvc_idempotent"


def idempotent(*, redact: tuple[str, ...] = ()) -> Callable[[F], F]:
    """Honour Idempotency-Key on this POST; ``redact`` names top-level response fields never stored."""

    def mark(view: F) -> F:
        setattr(view, _ATTR, redact)
        return view

    return mark


def _redaction_of(view: Any) -> tuple[str, ...] | None:
    while view is not None:
        if hasattr(view, _ATTR):
            return getattr(view, _ATTR)
        view = getattr(view, "__wrapped__", None)
    return None


def _fingerprint() -> str:
    digest = hashlib.sha256()
    digest.update(f"{request.method} {request.path}\n".encode())
    digest.update(request.get_data(cache=True))
    return digest.hexdigest()


def _replay(record: IdempotencyRecord) -> Response:
    response = Response(record.response_body, status=record.status_code, mimetype="application/json")
    if record.response_location:
        response.headers["Location"] = record.response_location
    response.headers[REPLAYED_HEADER] = "true"
    return response


def _find(principal_id: str, key: str) -> IdempotencyRecord | None:
    return get_session().scalar(
        select(IdempotencyRecord).where(
            IdempotencyRecord.principal_id == principal_id, IdempotencyRecord.idempotency_key == key
        )
    )


def purge_expired(session: Session, ttl_hours: int, *, now: datetime | None = None, limit: int = 10_000) -> int:
    """Delete up to ``limit`` stored responses older than the TTL, oldest first; returns how many. A key is
    replayed only within the TTL, so an older response is never used again: kept, it would only grow the table
    and hold the responses (subject ids, references) longer than their purpose needs."""
    cutoff = (now or utcnow()) - timedelta(hours=ttl_hours)
    expired = (
        select(IdempotencyRecord.pk)
        .where(IdempotencyRecord.created_at < cutoff)
        .order_by(IdempotencyRecord.created_at)
        .limit(limit)
    )
    pks = list(session.scalars(expired))
    if pks:
        session.execute(delete(IdempotencyRecord).where(IdempotencyRecord.pk.in_(pks)))
    return len(pks)


def init_idempotency(app: Flask) -> None:
    """Register the hooks; call after access control and after the transaction hooks."""

    @app.before_request
    def _check_replay() -> Response | None:
        if request.method != "POST" or HEADER not in request.headers:
            return None
        view = app.view_functions.get(request.endpoint or "")
        if _redaction_of(view) is None or g.get("principal") is None:
            return None
        key = request.headers[HEADER]
        if not _KEY_RE.match(key):
            return problem_response("bad-request", "Idempotency-Key must be 1-255 visible ASCII characters.")
        fingerprint = _fingerprint()
        record = _find(g.principal.principal_id, key)
        ttl = timedelta(hours=current_app.config["GOVSVC_SETTINGS"].idempotency_ttl_hours)
        if record is not None and record.created_at < utcnow() - ttl:
            get_session().execute(delete(IdempotencyRecord).where(IdempotencyRecord.pk == record.pk))
            record = None
        if record is not None:
            if record.request_fingerprint != fingerprint:
                return problem_response(
                    "idempotency-key-reused", "This Idempotency-Key was used with a different request."
                )
            return _replay(record)
        g.idempotency = (key, fingerprint, _redaction_of(view))
        return None

    @app.after_request
    def _store_response(response: Response) -> Response:
        pending = g.pop("idempotency", None)
        if pending is None or not 200 <= response.status_code < 300:
            return response
        key, fingerprint, redact = pending
        body = response.get_data(as_text=True)
        if redact:
            document = json.loads(body)
            for field in redact:
                if field in document:
                    document[field] = None
            body = json.dumps(document, ensure_ascii=False)
        session = get_session()
        session.add(
            IdempotencyRecord(
                principal_id=g.principal.principal_id,
                idempotency_key=key,
                request_fingerprint=fingerprint,
                status_code=response.status_code,
                response_body=body,
                response_location=response.headers.get("Location"),
                created_at=utcnow(),
            )
        )
        try:
            session.flush()
        except IntegrityError:
            # A concurrent request with the same key committed first: undo ours, answer with theirs.
            session.rollback()
            record = _find(g.principal.principal_id, key)
            if record is None or record.request_fingerprint != fingerprint:
                return problem_response("idempotency-key-in-use", "Retry this request in a moment.")
            return _replay(record)
        return response
