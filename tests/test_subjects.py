"""Data subjects: one person across channels, identifiers stored only as blind indexes and ciphertext."""

from __future__ import annotations

import os

import pytest
from sqlalchemy import create_engine, select, text

from govsvc.core.errors import Undecryptable
from govsvc.subjects.models import Subject, SubjectIdentifier
from govsvc.subjects.service import birth_date_of, identifier_name
from tests.conftest import TEST_SECRET_KEY
from tests.support.asserts import assert_problem

EMAIL, PHONE, CRM = "Wang.Fang@Example.CN", "+86 138 1234 5678", "CRM-0042"


@pytest.fixture
def app_key(auth_headers) -> dict[str, str]:
    return auth_headers("app")


def _create(client, headers, **overrides) -> dict:
    body = {
        "identifiers": [
            {"kind": "email", "value": EMAIL},
            {"kind": "phone", "value": PHONE},
            {"kind": "crm_id", "value": CRM, "system": "crm"},
        ],
        "jurisdictions": ["pipl"],
    } | overrides
    response = client.post("/v1/subjects", json=body, headers=headers)
    assert response.status_code == 201, response.get_json()
    return response.get_json()


def test_a_subject_is_found_by_any_identifier_in_any_normal_form(client, app_key) -> None:
    created = _create(client, app_key)
    assert created["subject_id"].startswith("sub_")
    assert {i["kind"] for i in created["identifiers"]} == {"email", "phone", "crm_id"}
    for reference in (
        {"kind": "email", "value": "wang.fang@example.cn"},
        {"kind": "phone", "value": "13812345678"},
        {"kind": "phone", "value": "+8613812345678"},
        {"kind": "crm_id", "value": CRM, "system": "crm"},
        {"subject_id": created["subject_id"]},
    ):
        found = client.post("/v1/subjects:lookup", json=reference, headers=app_key)
        assert found.status_code == 200, (reference, found.get_json())
        assert found.get_json()["subject_id"] == created["subject_id"]
    assert_problem(
        client.post("/v1/subjects:lookup", json={"kind": "crm_id", "value": CRM}, headers=app_key), 404, "not-found"
    )  # the system is part of the identifier
    assert_problem(
        client.post("/v1/subjects:lookup", json={"kind": "email", "value": "x@y.cn"}, headers=app_key), 404, "not-found"
    )


def test_identifiers_are_never_stored_in_plaintext(client, app_key, database) -> None:
    _create(client, app_key)
    engine = create_engine(database.url)
    try:
        with engine.connect() as connection:
            dumped = " ".join(
                str(row)
                for table in ("subjects", "subject_identifiers")
                for row in connection.execute(text(f"SELECT * FROM {table}"))
            )
    finally:
        engine.dispose()
    for value in ("wang.fang", "Wang.Fang", "13812345678", "8613812345678", "CRM-0042"):
        assert value not in dumped


def test_an_identifier_belongs_to_one_subject(client, app_key) -> None:
    first = _create(client, app_key)
    response = client.post(
        "/v1/subjects",
        json={"identifiers": [{"kind": "email", "value": "WANG.FANG@example.cn"}], "jurisdictions": ["gdpr:de"]},
        headers=app_key,
    )
    body = assert_problem(response, 409, "conflict")
    assert body["subject_id"] == first["subject_id"]


def test_ciphertext_is_bound_to_its_subject_and_kind(app, client, app_key) -> None:
    created = _create(client, app_key)
    keys = app.extensions["govsvc.field_keys"]
    subject_id = created["subject_id"]
    with app.extensions["govsvc.db"].transaction(write=False) as session:
        rows = list(session.scalars(select(SubjectIdentifier)))
        email = next(row for row in rows if row.kind == "email")
        assert keys.is_sealed_for(subject_id, email.value_enc)  # under the subject's own data key
        assert keys.open(session, subject_id, identifier_name("email", ""), email.value_enc) == "wang.fang@example.cn"
        with pytest.raises(Undecryptable):
            keys.open(session, subject_id, identifier_name("phone", ""), email.value_enc)  # moved to another field
        with pytest.raises(Undecryptable):
            keys.open(session, "sub_aaaaaaaaaaaaaaaa", identifier_name("email", ""), email.value_enc)  # another subject


def test_values_written_before_data_keys_are_resealed_by_init(app, client, app_key) -> None:
    """A database from before the key hierarchy: its identifier values and birth dates were sealed under a key
    derived from the secret; `govsvc init` re-seals them under each subject's data key."""
    from cryptography.hazmat.primitives.ciphers.aead import AESGCM

    from govsvc.crypto.kdf import derive_key

    created = _create(client, app_key)
    subject_id = created["subject_id"]
    legacy = AESGCM(derive_key(TEST_SECRET_KEY, "govsvc identifier encryption v1"))

    def old_format(value: str, associated: str) -> bytes:
        nonce = os.urandom(12)
        return b"\x01" + nonce + legacy.encrypt(nonce, value.encode(), associated.encode())

    database = app.extensions["govsvc.db"]
    with database.transaction() as session:
        email = session.scalar(select(SubjectIdentifier).where(SubjectIdentifier.kind == "email"))
        email.value_enc = old_format("wang.fang@example.cn", f"{subject_id}|email|")
        subject = session.scalar(select(Subject).where(Subject.subject_id == subject_id))
        subject.birth_date_enc = old_format("1990-03-07", f"{subject_id}|birth_date")
    result = app.test_cli_runner().invoke(args=["init"])
    assert result.exit_code == 0 and "re-sealed 2 identifier values and birth dates" in result.output
    assert "re-sealed" not in app.test_cli_runner().invoke(args=["init"]).output  # nothing left to do
    keys = app.extensions["govsvc.field_keys"]
    with database.transaction(write=False) as session:
        email = session.scalar(select(SubjectIdentifier).where(SubjectIdentifier.kind == "email"))
        assert keys.open(session, subject_id, identifier_name("email", ""), email.value_enc) == "wang.fang@example.cn"
        subject = session.scalar(select(Subject).where(Subject.subject_id == subject_id))
        assert birth_date_of(session, keys, subject).isoformat() == "1990-03-07"


@pytest.mark.parametrize(
    ("body", "field"),
    [
        ({"identifiers": [{"kind": "email", "value": "not-an-email"}], "jurisdictions": ["pipl"]}, "value"),
        ({"identifiers": [{"kind": "phone", "value": "12"}], "jurisdictions": ["pipl"]}, "value"),
        ({"identifiers": [{"kind": "passport_scan", "value": "x"}], "jurisdictions": ["pipl"]}, "kind"),
        ({"identifiers": [{"kind": "crm_id", "value": "1", "system": "CRM!"}], "jurisdictions": ["pipl"]}, "system"),
        ({"identifiers": [{"kind": "crm_id", "value": "1"}], "jurisdictions": ["mars"]}, "jurisdictions"),
        ({"identifiers": [{"kind": "crm_id", "value": "1"}], "jurisdictions": []}, "jurisdictions"),
        ({"identifiers": [], "jurisdictions": ["pipl"]}, "identifiers"),
        (
            {"identifiers": [{"kind": "crm_id", "value": "1"}], "jurisdictions": ["pipl"], "birth_date": "2999-01-01"},
            "birth_date",
        ),
    ],
)
def test_bad_subjects_are_refused_field_by_field(client, app_key, body: dict, field: str) -> None:
    problem = assert_problem(client.post("/v1/subjects", json=body, headers=app_key), 422, "validation-error")
    assert any(field in (error["field"] or "") for error in problem["errors"]), problem


def test_guardian_identifiers_and_changes(client, app_key) -> None:
    parent = _create(client, app_key)
    child = client.post(
        "/v1/subjects",
        json={
            "identifiers": [{"kind": "member_no", "value": "M-7"}],
            "jurisdictions": ["pipl"],
            "birth_date": "2016-05-01",
            "guardian": {"subject_id": parent["subject_id"]},
        },
        headers=app_key,
    ).get_json()
    assert child["guardian"] == parent["subject_id"] and child["has_birth_date"] is True
    added = client.post(
        f"/v1/subjects/{child['subject_id']}/identifiers",
        json={"kind": "wechat_openid", "value": "oXyz123", "system": "wechat"},
        headers=app_key,
    )
    assert {"kind": "wechat_openid", "system": "wechat"} in added.get_json()["identifiers"]
    patched = client.patch(
        f"/v1/subjects/{child['subject_id']}", json={"jurisdictions": ["pipl", "gdpr:fr"]}, headers=app_key
    )
    assert patched.get_json()["jurisdictions"] == ["pipl", "gdpr:fr"]
    assert_problem(client.get("/v1/subjects/sub_nobody", headers=app_key), 404, "not-found")
    assert_problem(
        client.patch(
            f"/v1/subjects/{child['subject_id']}",
            json={"guardian": {"subject_id": child["subject_id"]}},
            headers=app_key,
        ),
        422,
        "validation-error",
    )
