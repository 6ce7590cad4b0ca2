"""The profile vault and the encrypt/decrypt API over HTTP: obligations per role, audited plaintext, history,
blind-index search, crypto-shredding, key management, and clear errors."""

from __future__ import annotations

import json
import logging

import pytest
from sqlalchemy import create_engine, delete, select

from govsvc.audit.models import AuditEvent
from govsvc.crypto.models import CryptoKey
from govsvc.vault.models import VaultField
from tests.conftest import TEST_ROOT_KEYS
from tests.support.asserts import assert_problem

PROFILE = {
    "name": "张伟",
    "email": "Zhang.Wei@Example.cn",
    "mobile": "+8613812345678",
    "id_number": "11010519491231002X",
    "bank_card": "6222021234567890128",
    "preferences": "短信优先",
}


@pytest.fixture
def subject(client, auth_headers) -> str:
    body = {"identifiers": [{"kind": "crm_id", "value": "C-1001", "system": "crm"}], "jurisdictions": ["pipl"]}
    response = client.post("/v1/subjects", json=body, headers=auth_headers("app"))
    assert response.status_code == 201, response.get_json()
    return response.get_json()["subject_id"]


def _events(database, action: str) -> list[AuditEvent]:
    engine = create_engine(database.url)
    with engine.connect() as connection:
        rows = connection.execute(select(AuditEvent).where(AuditEvent.action == action)).all()
    engine.dispose()
    return list(rows)


def _put(client, headers, subject: str, fields: dict, **extra) -> dict:
    response = client.put(f"/v1/vault/subjects/{subject}/profile", json={"fields": fields, **extra}, headers=headers)
    assert response.status_code == 200, response.get_json()
    return response.get_json()


def test_values_are_sealed_by_level_and_read_as_each_role_may(client, auth_headers, subject, database) -> None:
    app_key = auth_headers("app")
    written = _put(client, app_key, subject, PROFILE)
    assert {c["change"] for c in written["changes"]} == {"created"}
    engine = create_engine(database.url)
    with engine.connect() as connection:
        rows = {r.field: r for r in connection.execute(select(VaultField))}
    engine.dispose()
    assert rows["preferences"].value_plain == "短信优先" and rows["preferences"].value_enc is None  # L1
    for field in ("name", "email", "mobile", "id_number", "bank_card"):  # L2 and L3: sealed, no plaintext
        assert rows[field].value_plain is None and PROFILE[field].encode() not in rows[field].value_enc
    read = client.get(f"/v1/vault/subjects/{subject}/profile?purpose=essential.service", headers=app_key)
    assert read.status_code == 200, read.get_json()
    fields = read.get_json()["fields"]
    assert fields["name"] == {**fields["name"], "value": "张伟", "treatment": "show", "level": "L2"}
    assert fields["id_number"] == {**fields["id_number"], "treatment": "withhold", "value": None}
    assert fields["id_number"]["reasons"] == ["category_not_in_purpose"]
    legal = client.get(f"/v1/vault/subjects/{subject}/profile?purpose=essential.legal_obligation", headers=app_key)
    fields = legal.get_json()["fields"]
    # apps get the "default" masking profile (policies/masking.yaml): identity and card numbers fully masked
    assert fields["id_number"]["treatment"] == "mask:default" and set(fields["id_number"]["value"]) == {"*"}
    assert "6222" not in fields["bank_card"]["value"] and "0128" not in fields["bank_card"]["value"]
    agent = client.get(
        f"/v1/vault/subjects/{subject}/profile?purpose=essential.service", headers=auth_headers("support_agent")
    )
    assert agent.get_json()["fields"]["mobile"]["value"] == "+86138****5678"
    assert agent.get_json()["fields"]["name"]["value"] == "张*"
    assert _events(database, "data.unmasked") == []  # nothing L3 was shown in plaintext


def test_plaintext_of_l3_needs_a_justification_and_is_audited(client, auth_headers, subject, database) -> None:
    _put(client, auth_headers("app"), subject, PROFILE)
    dpo = auth_headers("dpo")
    url = f"/v1/vault/subjects/{subject}/profile?purpose=essential.legal_obligation"
    assert_problem(client.get(url, headers=dpo), 422, "validation-error")
    assert_problem(client.get(url + "&justification=call+13812345678", headers=dpo), 422, "validation-error")
    read = client.get(url + "&justification=ticket+DSR42", headers=dpo)
    assert read.status_code == 200
    assert read.get_json()["fields"]["id_number"] == {
        **read.get_json()["fields"]["id_number"],
        "value": PROFILE["id_number"],
    }
    (event,) = _events(database, "data.unmasked")
    assert event.subject_ref == subject and event.purpose == "essential.legal_obligation"
    assert "ticket DSR42" in event.details and "id_number" in event.details
    assert PROFILE["id_number"] not in (event.details or "") + (event.data_categories or "")


def test_a_denied_purpose_and_a_role_without_the_vault_are_refused(client, auth_headers, subject) -> None:
    _put(client, auth_headers("app"), subject, {"email": "a@example.cn"})
    url = f"/v1/vault/subjects/{subject}/profile?purpose=marketing.communications.email"
    denied = client.get(url, headers=auth_headers("app")).get_json()["fields"]["email"]
    assert denied["treatment"] == "withhold" and denied["value"] is None and denied["reasons"] == ["no_consent"]
    unknown = client.get(f"/v1/vault/subjects/{subject}/profile?purpose=no.such.purpose", headers=auth_headers("app"))
    assert_problem(unknown, 422, "validation-error")
    assert_problem(
        client.get(f"/v1/vault/subjects/{subject}/profile?purpose=essential.service", headers=auth_headers("analyst")),
        403,
        "forbidden",
    )


def test_rectification_keeps_history_and_search_uses_the_blind_index(client, auth_headers, subject) -> None:
    app_key = auth_headers("app")
    _put(client, app_key, subject, {"email": "old@example.cn", "name": "张伟"})
    patched = client.patch(
        f"/v1/vault/subjects/{subject}/profile",
        json={"fields": {"email": "New@Example.cn", "name": None}, "justification": "ticket 7731"},
        headers=app_key,
    )
    assert {c["field"]: c["change"] for c in patched.get_json()["changes"]} == {"email": "replaced", "name": "deleted"}
    history_url = f"/v1/vault/subjects/{subject}/profile/history"
    assert_problem(client.get(history_url, headers=auth_headers("dpo")), 422, "validation-error")
    history = client.get(history_url + "?justification=ticket+7731", headers=auth_headers("dpo")).get_json()
    assert [(e["field"], e["change"], e["value"]) for e in history["entries"]] == [
        ("email", "replaced", "old@example.cn"),
        ("name", "deleted", "张伟"),
    ]
    found = client.post(
        "/v1/vault/profiles:search", json={"field": "email", "value": "new@EXAMPLE.cn"}, headers=app_key
    )
    assert found.get_json() == {"subject_ids": [subject]}
    stale = client.post(
        "/v1/vault/profiles:search", json={"field": "email", "value": "old@example.cn"}, headers=app_key
    )
    assert stale.get_json() == {"subject_ids": []}
    assert_problem(
        client.post("/v1/vault/profiles:search", json={"field": "name", "value": "x"}, headers=app_key),
        422,
        "validation-error",
    )


def test_erasure_by_crypto_shredding(client, auth_headers, subject, database) -> None:
    app_key, dpo = auth_headers("app"), auth_headers("dpo")
    _put(client, app_key, subject, PROFILE)
    token = client.post(
        "/v1/crypto/encrypt",
        json={"subject_id": subject, "field": "id_number", "plaintext": "11010519491231002X"},
        headers=app_key,
    ).get_json()["token"]
    assert_problem(client.delete(f"/v1/vault/subjects/{subject}/profile", headers=app_key), 403, "forbidden")
    erased = client.delete(f"/v1/vault/subjects/{subject}/profile", headers=dpo)
    assert erased.status_code == 200 and erased.get_json()["key_versions_destroyed"] == 1
    url = f"/v1/vault/subjects/{subject}/profile?purpose=essential.service"
    assert_problem(client.get(url, headers=app_key), 410, "key-destroyed")
    decrypt = {
        "subject_id": subject,
        "field": "id_number",
        "token": token,
        "purpose": "essential.legal_obligation",
        "justification": "support case 12",
    }
    assert_problem(client.post("/v1/crypto/decrypt", json=decrypt, headers=app_key), 410, "key-destroyed")
    assert client.post(
        "/v1/vault/profiles:search", json={"field": "email", "value": PROFILE["email"]}, headers=app_key
    ).get_json() == {"subject_ids": []}
    (event,) = _events(database, "key.destroyed")
    assert event.subject_ref == subject


def test_a_crypto_shred_is_refused_while_a_legal_hold_keeps_the_data(client, auth_headers, subject, database) -> None:
    """A subject hold, or a category hold covering one of the profile's fields, keeps the data key: the DPO's erasure
    is a 409 naming the hold, and nothing is destroyed. Once the hold is released the erasure goes through."""
    app_key, dpo, legal = auth_headers("app"), auth_headers("dpo"), auth_headers("legal")
    _put(client, app_key, subject, PROFILE)
    url = f"/v1/vault/subjects/{subject}/profile"
    hold = {"basis": "litigation 2026-17", "owner": "legal team", "review_at": "2027-06-30"}
    for scope in (
        {"scope": "subject", "subject": {"subject_id": subject}},
        {"scope": "category", "categories": ["user.contact"]},
    ):
        placed = client.post("/v1/holds", json=hold | scope, headers=legal)
        assert placed.status_code == 201, placed.get_json()
        refused = assert_problem(client.delete(url, headers=dpo), 409, "conflict")
        assert refused["holds"] == [placed.get_json()["hold_id"]]
        assert _events(database, "key.destroyed") == []
        assert client.get(url + "?purpose=essential.service", headers=app_key).status_code == 200  # not 410
        released = client.post(f"/v1/holds/{placed.get_json()['hold_id']}:release", headers=legal)
        assert released.status_code == 200, released.get_json()
    assert client.delete(url, headers=dpo).status_code == 200
    assert len(_events(database, "key.destroyed")) == 1


def test_a_crypto_shred_is_done_again_when_a_backup_is_restored(app, client, auth_headers, subject, database) -> None:
    """The DPO's erasure writes a crypto_shred tombstone in the deletion ledger: when a backup taken before it
    brings the wrapped data key back (and with it every value), replaying the ledger destroys the key again."""
    app_key, dpo = auth_headers("app"), auth_headers("dpo")
    _put(client, app_key, subject, PROFILE)
    url = f"/v1/vault/subjects/{subject}/profile?purpose=essential.service"
    engine = create_engine(database.url)
    keys_table = CryptoKey.__table__
    with engine.connect() as connection:  # the backup
        backup = [dict(row._mapping) for row in connection.execute(select(keys_table))]
    assert client.delete(f"/v1/vault/subjects/{subject}/profile", headers=dpo).status_code == 200
    ledger = client.get("/v1/retention/ledger?store=vault", headers=dpo).get_json()["items"]
    assert [(t["subject_key"], t["action"]) for t in ledger] == [(subject, "crypto_shred")]
    assert_problem(client.get(url, headers=app_key), 410, "key-destroyed")
    with engine.begin() as connection:  # the restore brings the wrapped key back: the values read again
        connection.execute(delete(keys_table))
        connection.execute(keys_table.insert(), backup)
    assert client.get(url, headers=app_key).get_json()["fields"]["mobile"]["value"] is not None
    replayed = app.test_cli_runner().invoke(args=["retention", "replay-ledger", "--store", "vault"])
    assert replayed.exit_code == 0, replayed.output
    assert json.loads(replayed.output)["vault"]["subjects_shredded"] == 1
    assert_problem(client.get(url, headers=app_key), 410, "key-destroyed")
    engine.dispose()


def test_encrypt_and_decrypt_for_apps_gated_by_the_decision(client, auth_headers, subject, database) -> None:
    app_key = auth_headers("app")
    sealed = client.post(
        "/v1/crypto/encrypt",
        json={"subject_id": subject, "field": "email", "plaintext": "wei@example.cn"},
        headers=app_key,
    )
    assert sealed.status_code == 200 and sealed.get_json()["token"].startswith("gv1.")
    token = sealed.get_json()["token"]
    body = {
        "subject_id": subject,
        "field": "email",
        "token": token,
        "purpose": "essential.service",
        "justification": "order 5512",
    }
    opened = client.post("/v1/crypto/decrypt", json=body, headers=app_key)
    assert opened.get_json() == {**opened.get_json(), "value": "wei@example.cn", "treatment": "show"}
    assert len(_events(database, "data.unmasked")) == 1
    assert_problem(
        client.post("/v1/crypto/decrypt", json=body | {"field": "mobile"}, headers=app_key), 422, "undecryptable"
    )
    assert_problem(
        client.post("/v1/crypto/decrypt", json=body | {"token": token[:-3] + "AAA"}, headers=app_key),
        422,
        "undecryptable",
    )
    assert_problem(
        client.post("/v1/crypto/decrypt", json=body | {"token": "nonsense"}, headers=app_key), 422, "undecryptable"
    )
    assert_problem(
        client.post("/v1/crypto/decrypt", json=body | {"purpose": "marketing.communications.email"}, headers=app_key),
        403,
        "forbidden",
    )
    health = client.post(
        "/v1/crypto/encrypt",
        json={"subject_id": subject, "field": "health_notes", "plaintext": "过敏"},
        headers=app_key,
    ).get_json()["token"]
    withheld = client.post(
        "/v1/crypto/decrypt", json=body | {"field": "health_notes", "token": health}, headers=app_key
    )
    assert_problem(withheld, 403, "forbidden")
    same = [
        client.post(
            "/v1/crypto/encrypt",
            json={"subject_id": subject, "field": "email", "plaintext": "x@example.cn", "deterministic": True},
            headers=app_key,
        ).get_json()["token"]
        for _ in range(2)
    ]
    assert same[0] == same[1] != token


@pytest.mark.parametrize(
    ("fields", "status", "slug"),
    [
        ({"no_such_field": "x"}, 422, "validation-error"),
        ({"name": 42}, 422, "validation-error"),
        ({"name": ""}, 422, "validation-error"),
        ({"mobile": "not a phone"}, 422, "validation-error"),
    ],
)
def test_bad_profiles_are_refused_and_nothing_is_written(client, auth_headers, subject, fields, status, slug) -> None:
    app_key = auth_headers("app")
    response = client.put(
        f"/v1/vault/subjects/{subject}/profile", json={"fields": {"email": "ok@example.cn", **fields}}, headers=app_key
    )
    assert_problem(response, status, slug)
    read = client.get(f"/v1/vault/subjects/{subject}/profile?purpose=essential.service", headers=app_key)
    assert read.get_json()["fields"] == {}
    assert_problem(
        client.put("/v1/vault/subjects/sub_unknown/profile", json={"fields": {}}, headers=app_key), 404, "not-found"
    )


def test_key_management_is_audited_and_shows_no_key_material(client, auth_headers, subject, database, caplog) -> None:
    caplog.set_level(logging.DEBUG)
    admin = auth_headers("admin")
    _put(client, auth_headers("app"), subject, PROFILE)
    status = client.get("/v1/crypto/keys", headers=admin)
    assert status.status_code == 200
    document = status.get_json()
    assert document["subject_keys"] == {"active": 1} and document["tenant_keys"][0]["status"] == "active"
    assert "wrapped" not in str(document).replace("wrapped_by", "")
    assert client.post("/v1/crypto/keys:rotate-tenant", headers=admin).get_json() == {"rewrapped": 1}
    assert client.post("/v1/crypto/keys:rotate-root", headers=admin).get_json() == {"rewrapped": 0}
    started = client.post("/v1/crypto/keys:rotate-data-keys", json={"subject_id": subject}, headers=admin)
    assert started.status_code == 202
    rotation = started.get_json()["rotation_id"]
    import time

    for _ in range(100):
        progress = client.get(f"/v1/crypto/rotations/{rotation}", headers=admin).get_json()
        if progress["status"] == "done":
            break
        time.sleep(0.05)
    assert progress["status"] == "done" and progress["values_done"] == 5
    assert (
        client.get(
            f"/v1/vault/subjects/{subject}/profile?purpose=essential.service", headers=auth_headers("app")
        ).status_code
        == 200
    )
    assert len(_events(database, "key.rotated")) == 3
    assert_problem(client.post("/v1/crypto/keys:rotate-root", headers=auth_headers("dpo")), 403, "forbidden")
    assert_problem(client.get("/v1/crypto/rotations/rot_nope", headers=admin), 404, "not-found")
    logged = caplog.text
    for secret in (TEST_ROOT_KEYS.split(":", 1)[1], PROFILE["id_number"], PROFILE["bank_card"]):
        assert secret not in logged


def test_tokenize_gives_the_pii_apis_stable_pseudonym(app) -> None:
    vault = app.extensions["govsvc.vault"]
    category = "user.contact.phone_number"
    first = vault.present("mobile", category, "+86 138 1234 5678", "tokenize")
    assert first == vault.present("mobile", category, "13812345678", "tokenize")  # same person, other writing
    assert first != vault.present("mobile", category, "13812345679", "tokenize") and "5678" not in first
    keys = app.extensions["govsvc.pii"].masker.keys
    assert first == "tok_" + keys.pseudonym(category, "13812345678")
    assert vault.present("mobile", category, "13812345678", "withhold") is None


def _rotate_all(client, admin) -> None:
    import time

    rotation = client.post("/v1/crypto/keys:rotate-data-keys", json={}, headers=admin).get_json()["rotation_id"]
    for _ in range(100):
        if client.get(f"/v1/crypto/rotations/{rotation}", headers=admin).get_json()["status"] == "done":
            return
        time.sleep(0.05)
    raise AssertionError("the rotation did not finish")


def test_tokens_kept_by_apps_survive_a_rotation_and_rewrap_to_the_new_key(client, auth_headers, subject) -> None:
    app_key, dpo, admin = auth_headers("app"), auth_headers("dpo"), auth_headers("admin")
    old = client.post(
        "/v1/crypto/encrypt",
        json={"subject_id": subject, "field": "email", "plaintext": "na@example.cn"},
        headers=app_key,
    ).get_json()
    _rotate_all(client, admin)
    read = {"subject_id": subject, "field": "email", "purpose": "essential.service", "justification": "support case 12"}
    assert client.post("/v1/crypto/decrypt", json=read | {"token": old["token"]}, headers=dpo).get_json()["value"] == (
        "na@example.cn"
    )
    rewrap = {"subject_id": subject, "field": "email", "token": old["token"]}
    new = client.post("/v1/crypto/rewrap", json=rewrap, headers=app_key).get_json()
    assert old["key_version"] == 1 and new["key_version"] == 2 and new["token"] != old["token"]
    assert client.post("/v1/crypto/decrypt", json=read | {"token": new["token"]}, headers=dpo).get_json()["value"] == (
        "na@example.cn"
    )
    again = client.post("/v1/crypto/rewrap", json=rewrap | {"token": new["token"]}, headers=app_key).get_json()
    assert again == new  # already under the active version
    moved = client.post("/v1/crypto/rewrap", json=rewrap | {"field": "mobile"}, headers=app_key)
    assert_problem(moved, 422, "undecryptable")
    assert_problem(client.post("/v1/crypto/rewrap", json=rewrap, headers=dpo), 403, "forbidden")


def test_key_status_and_flags_are_strict(client, auth_headers, subject) -> None:
    body = {"subject_id": subject, "field": "email", "plaintext": "x@example.cn", "deterministic": "yes"}
    assert_problem(client.post("/v1/crypto/encrypt", json=body, headers=auth_headers("app")), 422, "validation-error")
    client.post("/v1/crypto/encrypt", json=body | {"deterministic": False}, headers=auth_headers("app"))
    created = client.get("/v1/crypto/keys", headers=auth_headers("admin")).get_json()["tenant_keys"][0]["created_at"]
    assert "T" in created and created.endswith("+00:00")  # ISO 8601 like every other time of the API


def test_one_justification_rule_for_every_plaintext_read(client, auth_headers, subject) -> None:
    """Vault, decrypt and PII deanonymize share core.pii_guard.check_justification: a reason of 10+ characters."""
    dpo = auth_headers("dpo")
    _put(client, auth_headers("app"), subject, PROFILE)
    history = f"/v1/vault/subjects/{subject}/profile/history?justification="
    for short in ("case 1", "+" * 12):
        assert_problem(client.get(history + short, headers=dpo), 422, "validation-error")
    assert client.get(history + "++ticket+4431++", headers=dpo).status_code == 200  # trimmed, long enough
    deanonymize = {"text": "x", "justification": "case 1"}
    assert_problem(client.post("/v1/pii/deanonymize", json=deanonymize, headers=dpo), 422, "validation-error")


def test_fields_of_one_category_share_one_decision(client, auth_headers, subject) -> None:
    _put(client, auth_headers("app"), subject, {"mobile": "+8613812345678", "landline": "+861062345678"})
    url = f"/v1/vault/subjects/{subject}/profile?purpose=essential.service"
    fields = client.get(url, headers=auth_headers("support_agent")).get_json()["fields"]
    assert fields["mobile"]["decision_id"] == fields["landline"]["decision_id"]
    assert fields["mobile"]["treatment"] == fields["landline"]["treatment"] == "mask:partial"
    assert fields["landline"]["value"] not in (None, "+861062345678")


def test_a_decrypt_refused_by_policy_keeps_its_deny_event(client, auth_headers, subject, database) -> None:
    """The 403 rolls back the request's transaction, but not the policy.deny event of the refusal."""
    app_key = auth_headers("app")
    token = client.post(
        "/v1/crypto/encrypt",
        json={"subject_id": subject, "field": "email", "plaintext": "wei@example.cn"},
        headers=app_key,
    ).get_json()["token"]
    body = {
        "subject_id": subject,
        "field": "email",
        "token": token,
        "purpose": "marketing.communications.email",
        "justification": "campaign 7",
    }
    refused = assert_problem(client.post("/v1/crypto/decrypt", json=body, headers=app_key), 403, "forbidden")
    (event,) = _events(database, "policy.deny")
    assert event.event_id == refused["decision_id"]
    assert (event.outcome, event.subject_ref, event.reason_code) == ("deny", subject, "no_consent")
    assert event.purpose == "marketing.communications.email" and event.actor_role == "app"
    assert _events(database, "data.unmasked") == []  # nothing else of the failed request was kept
    assert_problem(client.post("/v1/crypto/decrypt", json=body, headers=app_key), 403, "forbidden")
    assert len(_events(database, "policy.deny")) == 2
    opened = client.post("/v1/crypto/decrypt", json=body | {"purpose": "essential.service"}, headers=app_key)
    assert opened.status_code == 200 and len(_events(database, "policy.deny")) == 2  # an allow adds no deny


def test_a_vault_read_that_fails_after_its_decisions_keeps_their_deny_events(
    client, auth_headers, subject, database
) -> None:
    """A read whose decisions deny some categories and show L3 plaintext of others fails without a justification
    (422): the deny events stay, the allow events of the failed read do not."""
    _put(client, auth_headers("app"), subject, PROFILE | {"health_notes": "青霉素过敏", "preferences": "短信优先"})
    dpo = auth_headers("dpo")
    url = f"/v1/vault/subjects/{subject}/profile?purpose=essential.legal_obligation"
    complete = client.get(url + "&justification=ticket+DSR42", headers=dpo)
    assert complete.status_code == 200
    denied = {name for name, view in complete.get_json()["fields"].items() if view["treatment"] == "withhold"}
    shown_l3 = {
        name
        for name, view in complete.get_json()["fields"].items()
        if view["level"] == "L3" and view["treatment"] == "show"
    }
    assert denied and shown_l3, complete.get_json()
    before = {event.event_id for event in _events(database, "policy.deny")}
    allows_before = len(_events(database, "policy.allow"))
    assert_problem(client.get(url, headers=dpo), 422, "validation-error")
    kept = [event for event in _events(database, "policy.deny") if event.event_id not in before]
    assert len(kept) == len(before) > 0 and {event.subject_ref for event in kept} == {subject}
    assert len(_events(database, "policy.allow")) == allows_before


def test_a_vault_read_audits_its_decisions_as_one_event_per_outcome(client, auth_headers, subject, database) -> None:
    """The decisions of one read share one policy.deny event (every withheld category and its reasons) and one
    policy.allow event (the L3 categories shown), rather than an event per category."""
    _put(client, auth_headers("app"), subject, PROFILE | {"health_notes": "青霉素过敏"})
    url = f"/v1/vault/subjects/{subject}/profile?purpose=essential.legal_obligation&justification=ticket+DSR42"
    fields = client.get(url, headers=auth_headers("dpo")).get_json()["fields"]
    withheld = {name: view for name, view in fields.items() if view["treatment"] == "withhold"}
    shown_l3 = {name: view for name, view in fields.items() if view["level"] == "L3" and view["treatment"] == "show"}
    assert len({view["category"] for view in withheld.values()}) > 1 and shown_l3, fields
    (deny,) = _events(database, "policy.deny")
    assert {view["decision_id"] for view in withheld.values()} == {deny.event_id}
    assert sorted(json.loads(deny.data_categories)) == sorted({view["category"] for view in withheld.values()})
    details = json.loads(deny.details)
    assert details["decisions"] == len({view["category"] for view in withheld.values()})
    assert set(details["by_category"]) == {view["category"] for view in withheld.values()}
    for view in withheld.values():
        assert details["by_category"][view["category"]] == view["reasons"]
    (allow,) = _events(database, "policy.allow")
    assert {view["decision_id"] for view in shown_l3.values()} == {allow.event_id}
    assert set(json.loads(allow.data_categories)) == {view["category"] for view in shown_l3.values()}
