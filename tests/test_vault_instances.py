"""Two instances on one database: a profile read on one instance (its data key cached there) no longer decrypts
once the other instance crypto-shreds the subject; the key epoch comes with the read's own query."""

from __future__ import annotations

import base64
import os

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
        first.extensions["govsvc.vault"].shred(session, get_subject(session, subject_id))
    with pytest.raises(KeyDestroyed):
        _read(second, subject_id)
    assert second.extensions["govsvc.keys"].cache.get(f"subject:{subject_id}", 1) is None  # dropped there too
