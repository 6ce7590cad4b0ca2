"""Data-key rotation in chunks of many rows (one bulk UPDATE per chunk on PostgreSQL), across subjects, with a
shredded subject in the middle, a crash and a resume; and a one-subject rotation that leaves the others alone."""

from __future__ import annotations

import base64
import os

from sqlalchemy import select

from govsvc.crypto.keys import KeyStore
from govsvc.crypto.models import CryptoKey
from govsvc.subjects.service import IdentifierInput, create_subject, get_subject
from govsvc.taxonomy.service import TaxonomyCache
from govsvc.vault.models import VaultField, VaultFieldHistory
from govsvc.vault.service import Vault, run_rotation, start_rotation

PROFILE = {"name": "李雷", "email": "li.lei@example.cn", "mobile": "+8613812345678", "id_number": "11010519491231002X"}


def _world(app_factory, count: int):
    app = app_factory(root_keys="1:" + base64.b64encode(os.urandom(32)).decode())
    db = app.extensions["govsvc.db"]
    vault: Vault = app.extensions["govsvc.vault"]
    subject_ids = []
    with db.transaction() as session:
        taxonomy = TaxonomyCache().current(session)
        for number in range(count):
            subject = create_subject(
                session,
                app.extensions["govsvc.field_keys"],
                identifiers=[IdentifierInput(kind="crm_id", value=f"C-{number}", system="crm")],
                jurisdictions=["pipl"],
                known_jurisdictions=["pipl"],
            )
            vault.write(session, taxonomy, subject, PROFILE | {"name": f"李雷{number}"}, actor="test")
            vault.write(session, taxonomy, subject, {"mobile": f"+86139000000{number:02d}"}, actor="test")  # history
            subject_ids.append(subject.subject_id)
    return app, db, vault, subject_ids


def _versions(db, table) -> dict[int, int]:
    with db.transaction() as session:
        return dict(session.execute(select(table.pk, table.key_version).where(table.value_enc.is_not(None))).all())


def test_rotation_in_chunks_of_many_rows_resumes_and_skips_a_shredded_subject(app_factory, database) -> None:
    app, db, vault, subject_ids = _world(app_factory, 6)
    keys: KeyStore = app.extensions["govsvc.keys"]
    shredded = subject_ids[2]
    with db.transaction() as session:
        vault.shred(session, get_subject(session, shredded), via="test")
        rotation = start_rotation(session, keys, subject=None, actor="test").rotation_id
    partial = run_rotation(db, keys, rotation, chunk=7, max_chunks=2)  # stops as a crash would, mid-subject
    assert partial.status == "running" and 0 < partial.values_done <= 14
    keys.cache.clear()  # a restarted process
    done = run_rotation(db, keys, rotation, chunk=7)
    # 5 live subjects x (4 sealed fields + 1 history value); the shredded subject's ciphertext stays as it was
    assert done.status == "done" and done.values_done == 25
    with db.transaction() as session:
        shredded_pk = get_subject(session, shredded).pk
        for table in (VaultField, VaultFieldHistory):
            rows = session.execute(
                select(table.subject_pk, table.key_version).where(table.value_enc.is_not(None))
            ).all()
            assert {version for pk, version in rows if pk != shredded_pk} == {2}
            assert {version for pk, version in rows if pk == shredded_pk} == {1}
        for number, subject_id in enumerate(subject_ids):
            if subject_id == shredded:
                continue
            subject = get_subject(session, subject_id)
            expected = PROFILE | {"name": f"李雷{number}", "mobile": f"+86139000000{number:02d}"}
            assert vault.open_all(session, subject) == expected
            history = vault.history(session, subject, justification="ticket number 12")
            assert [entry["value"] for entry in history] == ["+8613812345678"]


def test_a_one_subject_rotation_reencrypts_that_subject_only(app_factory, database) -> None:
    app, db, vault, subject_ids = _world(app_factory, 3)
    keys: KeyStore = app.extensions["govsvc.keys"]
    before = _versions(db, VaultField)
    with db.transaction() as session:
        target = get_subject(session, subject_ids[1])
        target_pk = target.pk
        rotation = start_rotation(session, keys, subject=target, actor="test").rotation_id
    done = run_rotation(db, keys, rotation, chunk=100)
    assert done.status == "done" and done.values_done == 5
    assert set(before.values()) == {1}
    after = _versions(db, VaultField)
    with db.transaction() as session:
        owners = dict(session.execute(select(VaultField.pk, VaultField.subject_pk)).all())
        assert after == {pk: 2 if owners[pk] == target_pk else 1 for pk in before}
        statuses = dict(
            session.execute(
                select(CryptoKey.key_id, CryptoKey.status).where(CryptoKey.kind == "subject", CryptoKey.version == 1)
            ).all()
        )
        assert statuses[f"subject:{subject_ids[1]}"] == "retired"
        assert {statuses[f"subject:{subject_ids[0]}"], statuses[f"subject:{subject_ids[2]}"]} == {"active"}
        assert vault.open_all(session, get_subject(session, subject_ids[1]))["id_number"] == PROFILE["id_number"]
