"""The purpose and data taxonomy: policy as code, validated at load, versioned and audited through the API."""

from __future__ import annotations

import copy

import pytest
from sqlalchemy import select

from govsvc.audit.models import AuditEvent
from govsvc.core.errors import ValidationFailed
from govsvc.taxonomy.service import load_files, parse_document
from tests.conftest import POLICY_DIR
from tests.support.asserts import assert_problem

DOCUMENT = load_files(POLICY_DIR)


def test_the_shipped_taxonomy_is_valid_and_has_the_crm_categories() -> None:
    taxonomy = parse_document(DOCUMENT)
    for key in (
        "user.name",
        "user.contact",
        "user.government_id.national_identification_number",
        "user.financial.bank_account",
        "user.behavior.purchase_history",
        "user.privacy_preferences",
        "user.location.precise",
        "user.health_and_medical",
        "user.biometric",
        "user.childrens",
    ):
        assert key in taxonomy.categories, key
    assert taxonomy.categories["user.health_and_medical"].level == "L3"
    assert {"pipl_sensitive", "gdpr_art9", "ccpa_spi"} <= taxonomy.categories["user.biometric"].flags
    assert "pipl_sensitive" not in taxonomy.categories["user.government_id.national_identification_number"].flags
    assert taxonomy.category("user.contact.email.work").key == "user.contact.email"  # nearest defined ancestor
    assert taxonomy.category("nothing.like.it") is None
    assert {"web", "app", "store", "call_centre", "email", "wechat"} <= set(taxonomy.channels)
    assert taxonomy.jurisdictions["pipl"]["guardian_consent_below_age"] == 14
    for category in taxonomy.categories.values():
        assert category.name["en"] and category.name["zh"]


def _broken(mutate) -> list[dict]:
    document = copy.deepcopy(DOCUMENT)
    mutate(document)
    with pytest.raises(ValidationFailed) as caught:
        parse_document(document)
    return caught.value.errors or []


@pytest.mark.parametrize(
    ("mutate", "field", "message"),
    [
        (lambda d: d["categories"][0].update(level="L9"), "categories[0].level", "L1"),
        (lambda d: d["categories"][0].update(flags=["secret"]), "categories[0].flags", "known flags"),
        (lambda d: d["categories"].append(dict(d["categories"][0])), "categories", "duplicate"),
        (lambda d: d["categories"][0].update(name={"en": "x"}), "categories[0].name", "Simplified Chinese"),
        (lambda d: d["purposes"][0].update(data_categories=["user.nope"]), "purposes[0].data_categories", "unknown"),
        (lambda d: d["purposes"][0]["lawful_basis"].update(pipl="vibes"), "purposes[0].lawful_basis.pipl", "one of"),
        (lambda d: d["purposes"][0].update(version=0), "purposes[0].version", "positive"),
        (lambda d: d["purposes"][3].update(optional=False), "purposes[3].optional", "must be optional"),
        (
            lambda d: d["purposes"][8]["cross_border"][0].update(recipient="nobody"),
            "purposes[8].cross_border[0]",
            "recipients",
        ),
        (lambda d: d["purposes"][8]["cross_border"][0].update(country="sgp"), "purposes[8].cross_border[0]", "ISO"),
        (lambda d: d["purposes"][0].update(colour="blue"), "purposes[0]", "unknown fields"),
        (lambda d: d.pop("jurisdictions"), "jurisdictions", "required"),
    ],
)
def test_invalid_taxonomies_are_refused_with_clear_errors(mutate, field: str, message: str) -> None:
    errors = _broken(mutate)
    assert any(error["field"].startswith(field) and message in error["message"] for error in errors), errors


@pytest.fixture
def officer(auth_headers) -> dict[str, str]:
    return auth_headers("compliance_officer")


def test_the_api_serves_the_taxonomy(client, auth_headers) -> None:
    app_key = auth_headers("app")
    body = client.get("/v1/taxonomy", headers=app_key).get_json()
    assert body["version"] == 1 and body["document"]["purposes"]
    purpose = client.get("/v1/taxonomy/purposes/marketing.communications.email", headers=app_key).get_json()
    assert purpose["purpose"]["lawful_basis"]["pipl"] == "consent"
    missing = assert_problem(client.get("/v1/taxonomy/purposes/nope", headers=app_key), 404, "not-found")
    assert "essential.service" in missing["detail"]  # lists what is known
    assert len(client.get("/v1/taxonomy/categories", headers=app_key).get_json()["categories"]) >= 20


def test_changing_a_purpose_is_validated_versioned_and_audited(app, client, officer) -> None:
    purpose = client.get("/v1/taxonomy/purposes/personalize.profiling", headers=officer).get_json()["purpose"]
    wider = {**purpose, "data_categories": [*purpose["data_categories"], "user.location.precise"]}
    wider.pop("key")
    same_version = client.put("/v1/taxonomy/purposes/personalize.profiling", json={"purpose": wider}, headers=officer)
    body = assert_problem(same_version, 422, "validation-error")
    assert "higher version" in body["errors"][0]["message"]
    changed = client.put(
        "/v1/taxonomy/purposes/personalize.profiling",
        json={"purpose": {**wider, "version": 2}, "comment": "add precise location"},
        headers=officer,
    )
    assert changed.status_code == 200 and changed.get_json()["version"] == 2
    now = client.get("/v1/taxonomy/purposes/personalize.profiling", headers=officer).get_json()
    assert now["version"] == 2 and now["purpose"]["version"] == 2
    bad = client.put("/v1/taxonomy/purposes/new.thing", json={"purpose": {"version": 1}}, headers=officer)
    assert_problem(bad, 422, "validation-error")
    assert_problem(
        client.put("/v1/taxonomy/purposes/x", json={"purpose": []}, headers=officer), 422, "validation-error"
    )
    with app.extensions["govsvc.db"].transaction(write=False) as session:
        events = list(session.scalars(select(AuditEvent).where(AuditEvent.object_ref.like("taxonomy%"))))
    assert [event.object_ref for event in events] == ["taxonomy", "taxonomy:purpose:personalize.profiling"]


def test_only_officers_change_the_taxonomy(client, auth_headers) -> None:
    assert_problem(
        client.put("/v1/taxonomy", json={"document": DOCUMENT}, headers=auth_headers("app")), 403, "forbidden"
    )
    replaced = client.put("/v1/taxonomy", json={"document": DOCUMENT}, headers=auth_headers("dpo"))
    assert replaced.status_code == 200 and replaced.get_json()["version"] == 2


def test_a_change_through_one_instance_is_seen_by_another(app_factory, officer) -> None:
    first, second = app_factory().test_client(), app_factory().test_client()
    assert second.get("/v1/taxonomy", headers=officer).get_json()["version"] == 1
    document = copy.deepcopy(DOCUMENT)
    document["channels"].append({"key": "kiosk", "name": {"en": "Kiosk", "zh": "自助终端"}})
    assert first.put("/v1/taxonomy", json={"document": document}, headers=officer).status_code == 200
    channels = second.get("/v1/taxonomy", headers=officer).get_json()["document"]["channels"]
    assert "kiosk" in {channel["key"] for channel in channels}
