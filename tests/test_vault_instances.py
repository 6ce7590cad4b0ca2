"""Two instances on one database: a profile read on one instance (its data key cached there) no longer decrypts
once the other instance crypto-shreds the subject; the key epoch comes with the read's own query."""

from __future__ import annotations

import base64
import os
from datetime import date, timedelta

import pytest

from govsvc.core.errors import KeyDestroyed
from govsvc.subjects.service import IdentifierInput, create_subject, get_subject
from govsvc.taxonomy.service import TaxonomyCache
from govsvc.vault.service import Vault

PROFILE = {"name": "李雷", "mobile": "+8613812345678", "id_number": "11010519491231002X", "city": "北京"}


def _read(app, subject_id: str) -> dict[str, str | None]:
    database = app.extensions["govsvc.db"]
    vault: Vault = app.extensions["govsvc.vault"]
    session = database.new_session(write=True)
    try:
        views = vault.read_for_purpose(
            session,
            app.extensions["govsvc.decisions"],
            get_subject(session, subject_id),
            purpose="essential.legal_obligation",
            role="dpo",
            principal_id="client:test",
            justification="ticket number 12",
        )
        session.commit()
        return {field: view.value for field, view in views.items()}
    finally:
        session.close()


def test_a_key_destroyed_on_one_instance_never_decrypts_on_another(app_factory, database) -> None:
    keyring = "1:" + base64.b64encode(os.urandom(32)).decode()
    first, second = app_factory(root_keys=keyring), app_factory(root_keys=keyring)
    with first.extensions["govsvc.db"].transaction() as session:
        subject = create_subject(
            session,
            first.extensions["govsvc.field_keys"],
            identifiers=[IdentifierInput(kind="crm_id", value="C-1", system="crm")],
            jurisdictions=["pipl"],
            known_jurisdictions=["pipl"],
        )
        first.extensions["govsvc.vault"].write(
            session, TaxonomyCache().current(session), subject, PROFILE, actor="test"
        )
        subject_id = subject.subject_id
    shown = _read(second, subject_id)
    assert shown["id_number"] == PROFILE["id_number"]  # opened on the second instance: its key is cached there
    assert len(second.extensions["govsvc.keys"].cache) > 0
    with first.extensions["govsvc.db"].transaction() as session:
        first.extensions["govsvc.vault"].shred(session, get_subject(session, subject_id), via="test")
    with pytest.raises(KeyDestroyed):
        _read(second, subject_id)
    assert second.extensions["govsvc.keys"].cache.get(f"subject:{subject_id}", 1) is None  # dropped there too


def test_a_birth_date_decrypted_before_a_shredding_is_forgotten_on_every_instance(
    app_factory, database, auth_headers
) -> None:
    """The decision engine keeps the birth dates it decrypted (a subject's age decides whether a guardian must
    consent). Once any instance destroys a subject's data key, the others drop them at their next decision: even
    a restored copy of the subject's row cannot be read through memory."""
    keyring = "1:" + base64.b64encode(os.urandom(32)).decode()
    first, second = app_factory(root_keys=keyring), app_factory(root_keys=keyring)
    key = auth_headers("app")
    minor = (date.today() - timedelta(days=12 * 366)).isoformat()
    body = {"identifiers": [{"kind": "email", "value": "xiao.ming@example.cn"}], "jurisdictions": ["pipl"]}
    subject_id = first.test_client().post("/v1/subjects", json=body, headers=key).get_json()["subject_id"]
    purpose = "marketing.communications.email"
    consent = {
        "subject": {"subject_id": subject_id},
        "event": "given",
        "channel": "app",
        "actor": "subject",
        "items": [{"purpose": purpose, "scope": ""}],
        "consent_type": "express",
        "notice": {"id": "pn-2026", "version": "3", "sha256": "a" * 64, "language": "zh-CN"},
    }
    assert first.test_client().post("/v1/consents", json=consent, headers=key).status_code == 201
    # the subject then turns out to be a minor: the adult consent on record no longer counts
    patched = first.test_client().patch(f"/v1/subjects/{subject_id}", json={"birth_date": minor}, headers=key)
    assert patched.status_code == 200, patched.get_json()
    decide = {"subject": {"subject_id": subject_id}, "action": "read", "purpose": purpose, "fields": ["email"]}
    before = second.test_client().post("/v1/decisions", json=decide, headers=key).get_json()
    assert {reason["code"] for reason in before["reasons"]} == {"guardian_consent_required"}  # age read on B
    engine = second.extensions["govsvc.decisions"]
    assert len(engine._births) == 1
    with first.extensions["govsvc.db"].transaction() as session:
        subject = get_subject(session, subject_id)
        sealed_birth_date = subject.birth_date_enc
        first.extensions["govsvc.vault"].shred(session, subject, via="test")
    with first.extensions["govsvc.db"].transaction() as session:  # a backup of the row is restored
        get_subject(session, subject_id).birth_date_enc = sealed_birth_date
    after = second.test_client().post("/v1/decisions", json=decide, headers=key).get_json()
    assert "guardian_consent_required" not in {reason["code"] for reason in after["reasons"]}  # age unknown now
    assert engine._births == {}
