"""The OpenDSR v2 facade (reference §9): controllers that speak OpenDSR submit access, portability and erasure
requests, read their status, cancel them while pending, and receive signed status callbacks.

Status mapping: received and pending_verification -> pending; verified, in_progress and extended ->
in_progress; completed, partially_completed and denied -> completed (our outcome and denial reason in
``extensions.<processor domain>``); cancelled and expired -> cancelled.

Callbacks are an outbox (``dsr_callbacks``): written in the transaction of the status change, delivered at least
once by the maintenance job with back-off, each signed: ``X-OpenDSR-Signature`` is the base64 ECDSA P-256 /
SHA-256 signature of the raw body under the processor key whose certificate is published at
``processor_certificate``. The certificate is self-signed (this service cannot obtain a CA-issued one by itself;
the spec asks for a CA-issued certificate: see README).
"""

from __future__ import annotations

import base64
import json
import uuid
from collections.abc import Mapping
from datetime import UTC, datetime, timedelta
from typing import Any

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID
from sqlalchemy import select, update
from sqlalchemy.orm import Session

from govsvc.core.db import Database, utcnow
from govsvc.crypto.service import KeyWrapper
from govsvc.dsr import webhooks
from govsvc.dsr.models import DsrCallback, DsrProcessorKey, DsrRequest

API_VERSION = "2.0"
REQUEST_TYPES = ("access", "portability", "erasure")
IDENTITY_KINDS = {"email": "email", "controller_customer_id": "crm_id", "phone_number": "phone"}
STATUS_MAP = {
    "received": "pending",
    "pending_verification": "pending",
    "verified": "in_progress",
    "in_progress": "in_progress",
    "extended": "in_progress",
    "completed": "completed",
    "partially_completed": "completed",
    "denied": "completed",
    "cancelled": "cancelled",
    "expired": "cancelled",
}
KEY_LABEL = "govsvc opendsr processor key v1"
CALLBACK_BACKOFF = (10, 30, 120, 600, 1800, 3600)  # seconds before attempts 2..7; then failed
CALLBACK_LEASE = timedelta(minutes=2)


class OpenDsrError(Exception):
    """An OpenDSR error document (400): ``{"error": {"code", "message", "errors": [...]}}``."""

    def __init__(self, message: str, errors: list[dict[str, str]] | None = None, code: int = 400) -> None:
        super().__init__(message)
        self.code = code
        self.document = {
            "error": {
                "code": code,
                "message": message,
                "errors": errors or [{"domain": "OpenDSR", "reason": "invalid", "message": message}],
            }
        }


def processor_key(session: Session, wrapper: KeyWrapper, domain: str) -> tuple[ec.EllipticCurvePrivateKey, str]:
    """The signing key and its PEM certificate, created at first use."""
    row = session.scalar(select(DsrProcessorKey).order_by(DsrProcessorKey.pk.desc()).limit(1))
    if row is not None:
        pem = wrapper.unwrap(row.wrapped_private_key, KEY_LABEL)
        key = serialization.load_pem_private_key(pem.encode(), password=None)
        assert isinstance(key, ec.EllipticCurvePrivateKey)
        return key, row.certificate_pem
    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, domain)])
    now = datetime.now(UTC)
    certificate = (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(name)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - timedelta(minutes=5))
        .not_valid_after(now + timedelta(days=825))
        .add_extension(x509.SubjectAlternativeName([x509.DNSName(domain)]), critical=False)
        .sign(key, hashes.SHA256())
    )
    pem = key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption())
    certificate_pem = certificate.public_bytes(serialization.Encoding.PEM).decode()
    session.add(
        DsrProcessorKey(
            certificate_pem=certificate_pem,
            wrapped_private_key=wrapper.wrap(pem.decode(), KEY_LABEL),
            created_at=utcnow(),
        )
    )
    session.flush()
    return key, certificate_pem


def sign(key: ec.EllipticCurvePrivateKey, data: bytes) -> str:
    return base64.b64encode(key.sign(data, ec.ECDSA(hashes.SHA256()))).decode()


def verify(certificate_pem: str, data: bytes, signature: str) -> bool:
    """What a controller does with a callback: verify the signature over the raw body before parsing it."""
    from cryptography.exceptions import InvalidSignature

    public = x509.load_pem_x509_certificate(certificate_pem.encode()).public_key()
    assert isinstance(public, ec.EllipticCurvePublicKey)
    try:
        public.verify(base64.b64decode(signature), data, ec.ECDSA(hashes.SHA256()))
    except (InvalidSignature, ValueError):
        return False
    return True


def discovery(base_url: str) -> dict[str, Any]:
    return {
        "api_version": API_VERSION,
        "supported_identities": [{"identity_type": kind, "identity_format": "raw"} for kind in sorted(IDENTITY_KINDS)],
        "supported_subject_request_types": list(REQUEST_TYPES),
        "processor_certificate": base_url + "/opendsr/v2/processor-certificate.pem",
    }


def parse_create(body: Any) -> dict[str, Any]:
    """Validate an OpenDSR create body; OpenDsrError (400) naming each problem."""
    if not isinstance(body, dict):
        raise OpenDsrError("The body must be a JSON object.")
    errors = []

    def bad(field: str, message: str) -> None:
        errors.append({"domain": "OpenDSR", "reason": "invalid_" + field, "message": message})

    request_id = body.get("subject_request_id")
    try:
        uuid.UUID(str(request_id), version=4)
    except ValueError:
        bad("subject_request_id", "subject_request_id must be a UUID v4")
    if body.get("subject_request_type") not in REQUEST_TYPES:
        bad("subject_request_type", f"subject_request_type must be one of {', '.join(REQUEST_TYPES)}")
    if body.get("regulation", "gdpr") not in ("gdpr", "ccpa"):
        bad("regulation", "regulation must be gdpr or ccpa")
    submitted = body.get("submitted_time")
    try:
        submitted_at = datetime.fromisoformat(str(submitted).replace("Z", "+00:00"))
        if submitted_at.tzinfo is None:
            raise ValueError
    except ValueError:
        bad("submitted_time", "submitted_time must be an RFC 3339 time")
        submitted_at = utcnow()
    identities = body.get("subject_identities")
    references = []
    if not isinstance(identities, list) or not identities:
        bad("subject_identities", "at least one subject identity is required")
        identities = []
    for identity in identities:
        if not isinstance(identity, dict):
            bad("subject_identities", "each identity is an object")
            continue
        kind = IDENTITY_KINDS.get(str(identity.get("identity_type")))
        if kind is None:
            bad("identity_type", f"supported identity types: {', '.join(sorted(IDENTITY_KINDS))}")
            continue
        if identity.get("identity_format", "raw") != "raw":
            bad("identity_format", "only raw identities can be matched")
            continue
        references.append({"kind": kind, "value": str(identity.get("identity_value", "")), "system": ""})
    callbacks = body.get("status_callback_urls") or []
    if not isinstance(callbacks, list) or len(callbacks) > 5:
        bad("status_callback_urls", "a list of at most 5 URLs")
        callbacks = []
    for url in callbacks:
        try:
            webhooks.check_url(str(url))
        except Exception:
            bad("status_callback_urls", "each callback URL must be http(s)")
    if errors:
        raise OpenDsrError("The request is invalid.", errors)
    return {
        "external_id": str(request_id),
        "type": body["subject_request_type"],
        "regulation": body.get("regulation", "gdpr"),
        "submitted_at": submitted_at,
        "identities": references,
        "callbacks": [str(url) for url in callbacks],
    }


def status_document(request: DsrRequest, controller_id: str | None, domain: str) -> dict[str, Any]:
    outcome = json.loads(request.outcome) if request.outcome else {}
    document: dict[str, Any] = {
        "controller_id": controller_id,
        "expected_completion_time": request.due_at.isoformat(),
        "subject_request_id": request.external_id,
        "request_status": STATUS_MAP[request.status],
        "api_version": API_VERSION,
        "extensions": {
            domain: {
                "govsvc_request_id": request.request_id,
                "status": request.status,
                "denial_reason": request.denial_reason,
                "kept": len(outcome.get("kept", [])),
            }
        },
    }
    runs = outcome.get("runs", [])
    if any(run.get("operation") == "collect" for run in runs):
        document["results_count"] = sum(int(run.get("records", 0)) for run in runs)
    return document


def enqueue_callbacks(
    session: Session, request: DsrRequest, urls: list[str], controller_id: str | None, domain: str
) -> None:
    """A callback per URL for the request's current status (delivered by ``deliver_callbacks``)."""
    document = status_document(request, controller_id, domain)
    for url in urls:
        body = json.dumps({**document, "status_callback_url": url}, separators=(",", ":"))
        session.add(DsrCallback(request_pk=request.pk, url=url, body=body, status="pending", next_attempt_at=utcnow()))


def deliver_callbacks(
    database: Database, wrapper: KeyWrapper, domain: str, *, now: datetime | None = None, limit: int = 100
) -> dict[str, int]:
    """Send due callbacks once each (claimed with a lease, so concurrent runners do not both send one);
    retried with back-off, ``failed`` after the last attempt."""
    now = now or utcnow()
    delivered = failed = retried = 0
    with database.transaction() as session:
        due = session.scalars(
            select(DsrCallback.pk)
            .where(DsrCallback.status == "pending", DsrCallback.next_attempt_at <= now)
            .order_by(DsrCallback.pk)
            .limit(limit)
        ).all()
        claimed = []
        for pk in due:
            if session.execute(
                update(DsrCallback)
                .where(DsrCallback.pk == pk, DsrCallback.status == "pending", DsrCallback.next_attempt_at <= now)
                .values(next_attempt_at=now + CALLBACK_LEASE)
            ).rowcount:
                claimed.append(pk)
        key, _certificate = processor_key(session, wrapper, domain)
        rows = [
            (c.pk, c.url, c.body, c.attempts)
            for c in session.scalars(select(DsrCallback).where(DsrCallback.pk.in_(claimed)))
        ]
    for pk, url, body, attempts in rows:
        raw = body.encode()
        error = None
        try:
            webhooks.post_json(
                url,
                json.loads(body),
                headers={"X-OpenDSR-Processor-Domain": domain},
                sign_body=lambda data: {"X-OpenDSR-Signature": sign(key, data)},
                policy=webhooks.RetryPolicy(max_attempts=1, timeout=10),
            )
        except webhooks.WebhookError as failure:
            error = str(failure)
        del raw
        with database.transaction() as session:
            callback = session.get(DsrCallback, pk)
            assert callback is not None
            callback.attempts = attempts + 1
            if error is None:
                callback.status, callback.delivered_at = "delivered", utcnow()
                delivered += 1
            elif callback.attempts > len(CALLBACK_BACKOFF):
                callback.status, callback.last_error = "failed", error[:300]
                failed += 1
            else:
                callback.last_error = error[:300]
                callback.next_attempt_at = utcnow() + timedelta(seconds=CALLBACK_BACKOFF[callback.attempts - 1])
                retried += 1
    return {"delivered": delivered, "retried": retried, "failed": failed}


def callback_urls(session: Session, request: DsrRequest) -> list[str]:
    """The callback URLs given when the request was created (kept in its parameters)."""
    parameters: Mapping[str, Any] = json.loads(request.parameters) if request.parameters else {}
    return list(parameters.get("status_callback_urls", []))
