"""HTTP layer of field encryption: encrypt/decrypt for apps that keep ciphertext themselves, and key management."""

from __future__ import annotations

import logging
import threading
from typing import Any

from apiflask import APIBlueprint, Schema
from apiflask.fields import AwareDateTime, Dict, Integer, List, Nested, String
from apiflask.validators import Length
from flask import current_app, url_for

from govsvc.audit.service import record
from govsvc.core.access import current_principal, requires
from govsvc.core.db import Database, get_db, get_session
from govsvc.core.errors import PermissionDenied, Undecryptable, ValidationFailed
from govsvc.core.pii_guard import check_justification
from govsvc.core.schemas import StrictBoolean, StrictSchema
from govsvc.crypto import tokens
from govsvc.crypto.keys import KeyStore
from govsvc.crypto.models import KeyRotation
from govsvc.crypto.tokens import TokenError
from govsvc.subjects import service as subjects
from govsvc.taxonomy.api import taxonomy_cache
from govsvc.vault.service import (
    Vault,
    audit_plaintext,
    field_decisions,
    run_rotation,
    start_rotation,
    treatment_of,
)
from govsvc.vault.service import (
    get_rotation as load_rotation,
)

logger = logging.getLogger("govsvc.crypto")
bp = APIBlueprint("crypto", __name__, url_prefix="/v1/crypto", tag="Encryption and keys")
SECURITY = "BearerAuth"
ERRORS = [400, 401, 403, 404, 410, 413, 415, 422]


def key_store() -> KeyStore:
    return current_app.extensions["govsvc.keys"]


class EncryptSchema(StrictSchema):
    subject_id = String(required=True, validate=Length(min=1, max=40))
    field = String(required=True, validate=Length(min=1, max=80), metadata={"description": "a taxonomy field"})
    plaintext = String(required=True, validate=Length(min=1, max=65536))
    deterministic = StrictBoolean(
        load_default=False,
        metadata={"description": "AES-SIV: equal plaintexts give equal tokens (reveals equality; see README)"},
    )


class TokenSchema(Schema):
    token = String(required=True, metadata={"description": "gv1.<base64url>: format, key id, key version, ciphertext"})
    key_version = Integer(required=True)


class RewrapSchema(StrictSchema):
    subject_id = String(required=True, validate=Length(min=1, max=40))
    field = String(required=True, validate=Length(min=1, max=80))
    token = String(required=True, validate=Length(min=8, max=100_000))


class DecryptSchema(StrictSchema):
    subject_id = String(required=True, validate=Length(min=1, max=40))
    field = String(required=True, validate=Length(min=1, max=80))
    token = String(required=True, validate=Length(min=8, max=100_000))
    purpose = String(required=True, validate=Length(min=1, max=80))
    justification = String(load_default=None, validate=Length(max=500))


class DecryptedSchema(Schema):
    value = String(allow_none=True)
    treatment = String(required=True)
    decision_id = String(required=True)


class RootKeySchema(Schema):
    provider = String(required=True)
    current_version = Integer(required=True)
    versions = List(Integer(), required=True)


class TenantKeySchema(Schema):
    version = Integer(required=True)
    status = String(required=True)
    wrapped_by = String(allow_none=True)
    created_at = AwareDateTime(required=True)


class KeyStatusSchema(Schema):
    root = Nested(RootKeySchema, required=True)
    tenant = String(required=True)
    tenant_keys = List(Nested(TenantKeySchema), required=True)
    subject_keys = Dict(keys=String(), values=Integer(), required=True)
    cached_keys = Integer(required=True)


class RotatedSchema(Schema):
    rewrapped = Integer(required=True)


class RotationStartSchema(StrictSchema):
    subject_id = String(load_default=None, validate=Length(min=1, max=40))


class RotationSchema(Schema):
    rotation_id = String(required=True)
    scope = String(required=True)
    status = String(required=True)
    values_done = Integer(required=True)
    started_at = AwareDateTime(required=True)
    finished_at = AwareDateTime(allow_none=True)


def _field_category(field: str) -> str:
    category = taxonomy_cache().current(get_session()).fields.get(field)
    if category is None:
        raise ValidationFailed("Unknown field.", errors=[{"field": "field", "message": "a field of GET /v1/taxonomy"}])
    return category


@bp.post("/encrypt")
@bp.input(EncryptSchema, arg_name="body")
@bp.output(TokenSchema)
@bp.doc(
    summary="Seal a value under the subject's data key, bound to subject and field",
    security=SECURITY,
    responses=[200, *ERRORS],
)
@requires("crypto", "encrypt")
def encrypt(body: dict[str, Any]) -> dict[str, Any]:
    session = get_session()
    category = _field_category(body["field"])
    subject = subjects.get_subject(session, body["subject_id"])
    sealed = key_store().seal(
        session, subject.subject_id, body["field"], body["plaintext"], deterministic=body["deterministic"]
    )
    record(
        session,
        "data.encrypted",
        subject_ref=subject.subject_id,
        data_categories=[category],
        details={"field": body["field"], "deterministic": body["deterministic"]},
    )
    return {"token": tokens.to_text(sealed), "key_version": tokens.parse_header(sealed).key_version}


@bp.post("/rewrap")
@bp.input(RewrapSchema, arg_name="body")
@bp.output(TokenSchema)
@bp.doc(
    summary="Move a token to the subject's active key version (after a data-key rotation); no plaintext returned",
    security=SECURITY,
    responses=[200, *ERRORS],
)
@requires("crypto", "encrypt")
def rewrap(body: dict[str, Any]) -> dict[str, Any]:
    session = get_session()
    category = _field_category(body["field"])
    subject = subjects.get_subject(session, body["subject_id"])
    try:
        sealed = tokens.from_text(body["token"])
    except TokenError as error:
        raise Undecryptable(str(error)) from None
    rewrapped = key_store().rewrap(session, subject.subject_id, body["field"], sealed)
    record(
        session,
        "data.rewrapped",
        subject_ref=subject.subject_id,
        data_categories=[category],
        details={"field": body["field"], "changed": rewrapped != sealed},
    )
    return {"token": tokens.to_text(rewrapped), "key_version": tokens.parse_header(rewrapped).key_version}


@bp.post("/decrypt")
@bp.input(DecryptSchema, arg_name="body")
@bp.output(DecryptedSchema)
@bp.doc(
    summary="Open a token, if the decision API allows the caller to read that field of that subject for the purpose",
    description="The value is returned as the decision's obligation says (shown, masked, tokenised or withheld). "
    "Every plaintext returned is audited as data.unmasked with the purpose and justification.",
    security=SECURITY,
    responses=[200, *ERRORS],
)
@requires("crypto", "decrypt")
def decrypt(body: dict[str, Any]) -> dict[str, Any]:
    session = get_session()
    category = _field_category(body["field"])
    justification = check_justification(body["justification"], required=True)
    subject = subjects.get_subject(session, body["subject_id"])
    try:
        sealed = tokens.from_text(body["token"])
    except TokenError as error:
        raise Undecryptable(str(error)) from None
    principal = current_principal()
    field = body["field"]
    decision = field_decisions(
        current_app.extensions["govsvc.decisions"],
        session,
        subject.subject_id,
        [field],
        purpose=body["purpose"],
        role=principal.role,
        principal_id=principal.principal_id,
    )[field]
    treatment = treatment_of(decision, field)
    if treatment == "withhold":
        raise PermissionDenied(
            "The decision for this field and purpose does not allow reading it.",
            decision_id=decision.decision_id,
            reasons=sorted({reason.code for reason in decision.reasons}) or ["withheld"],
        )
    plaintext = key_store().open(session, subject.subject_id, field, sealed)
    vault: Vault = current_app.extensions["govsvc.vault"]
    if treatment == "show":
        audit_plaintext(
            session,
            subject.subject_id,
            purpose=body["purpose"],
            categories=[category],
            fields=[field],
            justification=justification,
            via="crypto.decrypt",
        )
    return {
        "value": vault.present(field, category, plaintext, treatment),
        "treatment": treatment,
        "decision_id": decision.decision_id,
    }


@bp.get("/keys")
@bp.output(KeyStatusSchema)
@bp.doc(
    summary="Key hierarchy status (versions and counts; never key material)",
    security=SECURITY,
    responses=[200, *ERRORS],
)
@requires("keys", "read")
def key_status() -> dict[str, Any]:
    return key_store().status(get_session())


@bp.post("/keys:rotate-root")
@bp.output(RotatedSchema)
@bp.doc(
    summary="Re-wrap the tenant keys under the newest root key version (data untouched)",
    security=SECURITY,
    responses=[200, *ERRORS],
)
@requires("keys", "rotate")
def rotate_root() -> dict[str, Any]:
    session = get_session()
    count = key_store().rotate_root(session)
    record(
        session,
        "key.rotated",
        object_ref="key:root",
        details={"rewrapped": count, "root_version": key_store().provider.current_version},
    )
    return {"rewrapped": count}


@bp.post("/keys:rotate-tenant")
@bp.output(RotatedSchema)
@bp.doc(
    summary="A new tenant key version; subject data keys re-wrapped under it (data untouched)",
    security=SECURITY,
    responses=[200, *ERRORS],
)
@requires("keys", "rotate")
def rotate_tenant() -> dict[str, Any]:
    session = get_session()
    count = key_store().rotate_tenant(session)
    record(session, "key.rotated", object_ref="key:tenant", details={"rewrapped": count})
    return {"rewrapped": count}


def _rotation_document(rotation: KeyRotation) -> dict[str, Any]:
    return {
        "rotation_id": rotation.rotation_id,
        "scope": rotation.scope,
        "status": rotation.status,
        "values_done": rotation.values_done,
        "started_at": rotation.started_at,
        "finished_at": rotation.finished_at,
    }


def _run_in_background(database: Database, keys: KeyStore, rotation_id: str) -> None:
    def work() -> None:
        try:
            run_rotation(database, keys, rotation_id)
        except Exception:
            logger.exception("data key rotation %s stopped; resume it", rotation_id)

    threading.Thread(target=work, name=f"rotation-{rotation_id}", daemon=True).start()


@bp.post("/keys:rotate-data-keys")
@bp.input(RotationStartSchema, arg_name="body")
@bp.output(RotationSchema, status_code=202)
@bp.doc(
    summary="New data key versions (one subject, or all) and re-encryption of their values in the background",
    description="Chunked and resumable: POST /v1/crypto/rotations/{id}:resume continues a rotation stopped by a crash.",
    security=SECURITY,
    responses=[202, *ERRORS],
)
@requires("keys", "rotate")
def rotate_data_keys(body: dict[str, Any]) -> tuple[dict[str, Any], int, dict[str, str]]:
    session = get_session()
    subject = subjects.get_subject(session, body["subject_id"]) if body["subject_id"] else None
    rotation = start_rotation(session, key_store(), subject=subject, actor=current_principal().principal_id)
    record(
        session, "key.rotated", object_ref=f"key:data:{rotation.scope}", details={"rotation_id": rotation.rotation_id}
    )
    document = _rotation_document(rotation)
    session.commit()  # the worker must see the rotation and the new key versions
    _run_in_background(get_db(), key_store(), rotation.rotation_id)
    return document, 202, {"Location": url_for("crypto.get_rotation", rotation_id=rotation.rotation_id)}


@bp.get("/rotations/<string:rotation_id>")
@bp.output(RotationSchema)
@bp.doc(summary="Progress of a data key rotation", security=SECURITY, responses=[200, *ERRORS])
@requires("keys", "read")
def get_rotation(rotation_id: str) -> dict[str, Any]:
    return _rotation_document(load_rotation(get_session(), rotation_id))


@bp.post("/rotations/<string:rotation_id>:resume")
@bp.output(RotationSchema, status_code=202)
@bp.doc(
    summary="Continue a rotation that stopped (crash or restart) where it left off",
    security=SECURITY,
    responses=[202, *ERRORS],
)
@requires("keys", "rotate")
def resume_rotation(rotation_id: str) -> tuple[dict[str, Any], int]:
    rotation = load_rotation(get_session(), rotation_id)
    document = _rotation_document(rotation)
    if rotation.status != "done":
        _run_in_background(get_db(), key_store(), rotation.rotation_id)
    return document, 202
