"""Signed consent receipts: JSON with ISO/IEC TS 27560-style field names, as a JWS (EdDSA / Ed25519).

A receipt is verifiable offline with the keys published at ``/.well-known/govsvc/consent-receipt-keys`` (a JWKS);
changing any byte of it breaks the signature. ``verify_receipt`` is the reference verifier (standard library and
``cryptography`` only), also used by ``govsvc.client``.
"""

from __future__ import annotations

import base64
import json
import uuid
from collections.abc import Iterable, Mapping, Sequence
from datetime import datetime
from typing import Any

from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey, Ed25519PublicKey
from sqlalchemy import select
from sqlalchemy.orm import Session

from govsvc.consent.models import ConsentEvent, ReceiptSigningKey
from govsvc.core.db import utcnow
from govsvc.core.pii_guard import random_reference
from govsvc.crypto.service import KeyWrapper
from govsvc.subjects.models import Subject
from govsvc.subjects.service import jurisdictions_of
from govsvc.taxonomy.service import Taxonomy, TaxonomyCache

SCHEMA_VERSION = "govsvc-consent-receipt/1 (ISO/IEC TS 27560:2023 field names)"
JWS_TYPE = "consent-receipt+jws"
_WRAP_LABEL = "govsvc consent receipt key wrap v1"


class ReceiptInvalid(ValueError):
    """The receipt is malformed, signed by an unknown key, or altered."""


def _b64url(raw: bytes) -> str:
    return base64.urlsafe_b64encode(raw).decode().rstrip("=")


def _unb64url(text: str) -> bytes:
    try:
        return base64.urlsafe_b64decode(text + "=" * (-len(text) % 4))
    except (ValueError, TypeError):
        raise ReceiptInvalid("not base64url") from None


def ensure_key(session: Session, secret_key: str) -> ReceiptSigningKey:
    """The active receipt key, created at first use."""
    key = session.scalar(
        select(ReceiptSigningKey).where(ReceiptSigningKey.retired_at.is_(None)).order_by(ReceiptSigningKey.pk.desc())
    )
    if key is not None:
        return key
    private = Ed25519PrivateKey.generate()
    kid = random_reference("rk_")
    public = _b64url(private.public_key().public_bytes_raw())
    seed = _b64url(private.private_bytes_raw())
    key = ReceiptSigningKey(
        kid=kid,
        public_key=public,
        wrapped_private_key=KeyWrapper(secret_key, _WRAP_LABEL).wrap(seed, kid),
        created_at=utcnow(),
    )
    session.add(key)
    session.flush()
    return key


def jwks(session: Session) -> dict[str, Any]:
    """Every receipt key, current and retired, as a JSON Web Key Set (OKP / Ed25519)."""
    keys = session.scalars(select(ReceiptSigningKey).order_by(ReceiptSigningKey.pk))
    return {
        "keys": [
            {"kty": "OKP", "crv": "Ed25519", "alg": "EdDSA", "use": "sig", "kid": key.kid, "x": key.public_key}
            for key in keys
        ]
    }


def _time(value: datetime | None) -> str | None:
    return value.strftime("%Y-%m-%dT%H:%M:%SZ") if value else None


def receipt_claims(
    taxonomy: Taxonomy, cache: TaxonomyCache, subject: Subject, events: Sequence[ConsentEvent], controller: str
) -> dict[str, Any]:
    """The receipt of one consent act (one or more events of the same act)."""
    first = events[0]
    purposes = []
    for event in events:
        purpose = (
            cache.purpose_version(event.purpose_key, event.purpose_version) or taxonomy.purposes[event.purpose_key]
        )
        purposes.append(
            {
                "purpose": purpose.key,
                "purpose_version": purpose.version,
                "scope": event.scope,
                "purpose_description": dict(purpose.name),
                "lawful_basis": dict(purpose.lawful_basis),
                "consent_type": event.consent_type,
                "pii_categories": list(purpose.data_categories),
                "sensitive": any(taxonomy.level(c) == "L3" for c in purpose.data_categories),
                "third_party_disclosure": [{"name": dict(r.name), "contact": r.contact} for r in purpose.recipients],
                "cross_border": [{"country": x.country, "mechanism": x.mechanism} for x in purpose.cross_border],
                "event_id": event.event_id,
            }
        )
    return {
        "schema_version": SCHEMA_VERSION,
        "receipt_id": uuid.uuid4().hex,
        "record_id": first.event_id,
        "pii_principal_id": subject.subject_id,
        "jurisdiction": jurisdictions_of(subject),
        "pii_controllers": [{"name": controller}],
        "privacy_notice": {
            "id": first.notice_id,
            "version": first.notice_version,
            "sha256": first.notice_sha256,
            "language": first.language,
        },
        "purposes": purposes,
        "event": {
            "event_type": first.event_type,
            "event_time": _time(first.recorded_at),
            "entity": first.actor,
            "channel": first.channel,
            "collection_method": first.source,
            "evidence_ref": first.evidence_ref,
        },
        "validity": {"valid_until": _time(first.valid_until)},
        "withdrawal_method": "POST /v1/consents with event=withdrawn (same call, same credentials, no reason)",
        "iat": int(utcnow().timestamp()),
    }


def sign(session: Session, secret_key: str, claims: Mapping[str, Any]) -> str:
    """A compact JWS (EdDSA) of the claims, signed with the active receipt key."""
    key = ensure_key(session, secret_key)
    seed = _unb64url(KeyWrapper(secret_key, _WRAP_LABEL).unwrap(key.wrapped_private_key, key.kid))
    header = _b64url(json.dumps({"alg": "EdDSA", "kid": key.kid, "typ": JWS_TYPE}, separators=(",", ":")).encode())
    payload = _b64url(json.dumps(claims, separators=(",", ":"), ensure_ascii=False, sort_keys=True).encode())
    signature = Ed25519PrivateKey.from_private_bytes(seed).sign(f"{header}.{payload}".encode())
    return f"{header}.{payload}.{_b64url(signature)}"


def verify_receipt(token: str, keys: Mapping[str, Any] | Iterable[Mapping[str, Any]]) -> dict[str, Any]:
    """Check a receipt against a JWKS (or a list of JWKs) and return its claims; ReceiptInvalid otherwise."""
    jwk_list = keys.get("keys", []) if isinstance(keys, Mapping) else list(keys)
    parts = token.split(".") if isinstance(token, str) else []
    if len(parts) != 3:
        raise ReceiptInvalid("a compact JWS has three parts")
    try:
        header = json.loads(_unb64url(parts[0]))
    except ValueError:
        raise ReceiptInvalid("the JWS header is not JSON") from None
    if header.get("alg") != "EdDSA" or header.get("typ") != JWS_TYPE:
        raise ReceiptInvalid("not an EdDSA consent receipt")
    jwk = next((k for k in jwk_list if k.get("kid") == header.get("kid") and k.get("crv") == "Ed25519"), None)
    if jwk is None:
        raise ReceiptInvalid(f"unknown key {header.get('kid')!r}")
    try:
        Ed25519PublicKey.from_public_bytes(_unb64url(jwk["x"])).verify(
            _unb64url(parts[2]), f"{parts[0]}.{parts[1]}".encode()
        )
    except (InvalidSignature, ValueError):
        raise ReceiptInvalid("the signature does not match: the receipt was altered or signed by another key") from None
    try:
        return json.loads(_unb64url(parts[1]))
    except ValueError:
        raise ReceiptInvalid("the payload is not JSON") from None
