"""The decision API: RBAC over data, consent and lawful basis per regime, restrictions, obligations, audit."""

from __future__ import annotations

import hashlib
from datetime import date

import pytest
from sqlalchemy import create_engine, func, select, text

from govsvc.audit.models import AuditEvent
from tests.support.asserts import assert_problem

NOTICE = {"id": "pn", "version": "1", "sha256": hashlib.sha256(b"n").hexdigest(), "language": "zh-CN"}


@pytest.fixture
def app_key(auth_headers) -> dict[str, str]:
    return auth_headers("app")


def _subject(client, headers, jurisdictions=("pipl",), birth_date=None, email="zhao.min@example.cn") -> str:
    body = {"identifiers": [{"kind": "email", "value": email}], "jurisdictions": list(jurisdictions)}
    if birth_date:
        body["birth_date"] = birth_date
    return client.post("/v1/subjects", json=body, headers=headers).get_json()["subject_id"]


def _consent(client, headers, subject, event, purpose, scope="", consent_type="express", actor="subject", extra=None):
    body = {
        "subject": {"subject_id": subject},
        "event": event,
        "channel": "app",
        "actor": actor,
        "items": [{"purpose": purpose, "scope": scope}],
    }
    if event == "given":
        body |= {"consent_type": consent_type, "notice": NOTICE}
    response = client.post("/v1/consents", json=body, headers={**headers, **(extra or {})})
    assert response.status_code == 201, response.get_json()


def _decide(client, headers, subject, purpose, action="read", **extra) -> dict:
    body = {"subject": {"subject_id": subject}, "action": action, "purpose": purpose} | extra
    if "data_categories" not in extra and "fields" not in extra:
        body["fields"] = ["email"]
    response = client.post("/v1/decisions", json=body, headers=headers)
    assert response.status_code == 200, response.get_json()
    return response.get_json()


def _codes(decision: dict) -> set[str]:
    return {reason["code"] for reason in decision["reasons"]}


def _born(age: int) -> str:
    today = date.today()
    return (
        date(today.year - age, 1, 1).isoformat()
        if today.month > 1 or today.day > 1
        else date(today.year - age - 1, 1, 1).isoformat()
    )


def test_contract_basis_needs_no_consent(client, app_key) -> None:
    subject = _subject(client, app_key)
    decision = _decide(client, app_key, subject, "essential.service", fields=["name", "email", "purchase_history"])
    assert decision["decision"] == "allow" and decision["reasons"] == []
    assert decision["obligations"] == {"name": "show", "email": "show", "purchase_history": "show"}
    assert len(decision["decision_id"]) == 32 and decision["policy_version"] >= 1 and decision["taxonomy_version"] == 1


def test_consent_flips_the_next_decision_both_ways(client, app_key) -> None:
    subject = _subject(client, app_key)
    purpose = "marketing.communications.email"
    assert _codes(_decide(client, app_key, subject, purpose)) == {"no_consent"}
    _consent(client, app_key, subject, "given", purpose)
    assert _decide(client, app_key, subject, purpose)["decision"] == "allow"
    _consent(client, app_key, subject, "withdrawn", purpose)
    assert _codes(_decide(client, app_key, subject, purpose)) == {"consent_withdrawn"}


def test_a_withdrawal_through_one_instance_applies_on_another(app_factory, auth_headers) -> None:
    first, second = app_factory().test_client(), app_factory().test_client()
    key = auth_headers("app")
    subject = _subject(first, key)
    purpose = "marketing.communications.sms"
    _consent(first, key, subject, "given", purpose)
    assert _decide(second, key, subject, purpose, fields=["mobile"])["decision"] == "allow"  # cached on B now
    _consent(first, key, subject, "withdrawn", purpose)
    assert _codes(_decide(second, key, subject, purpose, fields=["mobile"])) == {"consent_withdrawn"}


def test_rbac_over_data_categories_and_obligations_by_role(client, app_key) -> None:
    subject = _subject(client, app_key)
    as_agent = {"acting_for": {"user_ref": "agent-17", "roles": ["support_agent"]}}
    allowed = _decide(
        client, app_key, subject, "essential.service.operations.support", fields=["name", "mobile"], **as_agent
    )
    assert allowed["decision"] == "allow"
    assert allowed["obligations"] == {"name": "mask:partial", "mobile": "mask:partial"}
    denied = _decide(
        client, app_key, subject, "essential.service.operations.support", fields=["name"], action="delete", **as_agent
    )
    assert _codes(denied) == {"no_role"} and denied["obligations"] == {"name": "withhold"}
    outside = _decide(client, app_key, subject, "essential.service", data_categories=["user.health_and_medical"])
    assert _codes(outside) == {"category_not_in_purpose"}


def test_pipl_separate_consent_per_sensitive_item_recipient_and_destination(client, app_key) -> None:
    subject = _subject(client, app_key)
    purpose = "third_party_sharing.insurance_referral"
    share = {"action": "share", "fields": ["name", "health_notes"], "recipient": "insurer", "destination_country": "SG"}
    _consent(client, app_key, subject, "given", purpose, consent_type="separate")
    assert _codes(_decide(client, app_key, subject, purpose, **share)) == {
        "separate_consent_missing",
        "xb_separate_consent_missing",
    }
    for scope in ("category:user.health_and_medical", "recipient:insurer", "xb:SG"):
        _consent(client, app_key, subject, "given", purpose, scope=scope, consent_type="separate")
    decision = _decide(client, app_key, subject, purpose, **share)
    assert decision["decision"] == "allow", decision
    assert decision["obligations"]["health_notes"] == "withhold"  # the app role never sees health data in clear
    assert _codes(_decide(client, app_key, subject, purpose, **{**share, "recipient": "databroker"})) == {
        "recipient_not_disclosed",
        "xb_mechanism_required",
    }
    assert _codes(_decide(client, app_key, subject, purpose, **{**share, "destination_country": "US"})) == {
        "xb_mechanism_required"
    }


def test_gdpr_special_categories_need_explicit_consent(client, app_key) -> None:
    subject = _subject(client, app_key, jurisdictions=["gdpr:de"])
    purpose = "third_party_sharing.insurance_referral"
    _consent(client, app_key, subject, "given", purpose, consent_type="explicit")
    decision = _decide(
        client,
        app_key,
        subject,
        purpose,
        action="share",
        fields=["name"],
        recipient="insurer",
        destination_country="SG",
    )
    assert decision["decision"] == "allow", decision


def test_ccpa_opt_out_and_gpc(client, app_key) -> None:
    subject = _subject(client, app_key, jurisdictions=["ccpa"])
    purpose = "third_party_sharing.sale_share"
    assert _decide(client, app_key, subject, purpose, action="share", recipient="adpartner")["decision"] == "allow"
    _consent(client, app_key, subject, "given", "marketing.communications.email", extra={"Sec-GPC": "1"})
    assert _codes(_decide(client, app_key, subject, purpose, action="share", recipient="adpartner")) == {
        "opted_out_gpc"
    }


@pytest.mark.parametrize(("age", "code"), [(10, "parental_authorization_required"), (14, "minor_opt_in_required")])
def test_ccpa_minors_need_an_opt_in(client, app_key, age: int, code: str) -> None:
    subject = _subject(client, app_key, jurisdictions=["ccpa"], birth_date=_born(age))
    purpose = "third_party_sharing.sale_share"
    assert _codes(_decide(client, app_key, subject, purpose, action="share", recipient="adpartner")) == {code}
    actor = "guardian" if age < 13 else "subject"
    _consent(client, app_key, subject, "given", purpose, actor=actor, consent_type="express")
    assert _decide(client, app_key, subject, purpose, action="share", recipient="adpartner")["decision"] == "allow"


def test_pipl_minors_need_their_guardians_consent(client, app_key, app) -> None:
    subject = _subject(client, app_key, birth_date=_born(12))
    purpose = "marketing.communications.email"
    _consent(client, app_key, subject, "given", purpose, actor="guardian", consent_type="guardian")
    assert _decide(client, app_key, subject, purpose)["decision"] == "allow"
    # an adult's consent on record does not count once the subject turns out to be a minor
    adult = _subject(client, app_key, email="adult@example.cn")
    _consent(client, app_key, adult, "given", purpose)
    assert _decide(client, app_key, adult, purpose)["decision"] == "allow"
    client.patch(f"/v1/subjects/{adult}", json={"birth_date": _born(12)}, headers=app_key)
    assert _codes(_decide(client, app_key, adult, purpose)) == {"guardian_consent_required"}


def test_a_wider_purpose_version_requires_reconsent(client, app_key, auth_headers) -> None:
    subject = _subject(client, app_key)
    purpose = "personalize.profiling"
    _consent(client, app_key, subject, "given", purpose)
    assert _decide(client, app_key, subject, purpose, fields=["purchase_history"])["decision"] == "allow"
    officer = auth_headers("compliance_officer")
    current = client.get(f"/v1/taxonomy/purposes/{purpose}", headers=officer).get_json()["purpose"]
    wider = {k: v for k, v in current.items() if k != "key"} | {
        "version": 2,
        "data_categories": [*current["data_categories"], "user.contact.email"],
    }
    assert client.put(f"/v1/taxonomy/purposes/{purpose}", json={"purpose": wider}, headers=officer).status_code == 200
    assert _codes(_decide(client, app_key, subject, purpose, fields=["purchase_history"])) == {"reconsent_required"}
    old = _decide(client, app_key, subject, purpose, fields=["purchase_history"], purpose_version=1)
    assert old["decision"] == "allow" and old["purpose_version"] == 1  # a caller still on v1 is covered
    _consent(client, app_key, subject, "given", purpose)
    assert _decide(client, app_key, subject, purpose, fields=["purchase_history"])["decision"] == "allow"


def test_legal_hold_and_restriction(client, app_key, database, auth_headers) -> None:
    subject = _subject(client, app_key)
    engine = create_engine(database.url)
    try:
        with engine.begin() as connection:
            connection.execute(text("UPDATE subjects SET legal_hold = true WHERE subject_id = :s"), {"s": subject})
        assert _codes(_decide(client, app_key, subject, "essential.service")) == {"legal_hold"}
        as_legal = {"acting_for": {"roles": ["legal"]}}
        assert _decide(client, app_key, subject, "essential.service", **as_legal)["decision"] == "allow"
        with engine.begin() as connection:
            connection.execute(
                text("UPDATE subjects SET legal_hold = false, restricted = true WHERE subject_id = :s"), {"s": subject}
            )
        assert _codes(_decide(client, app_key, subject, "essential.service", action="use")) == {"restricted"}
    finally:
        engine.dispose()


def test_every_deny_and_every_allow_on_sensitive_data_is_audited(app, client, app_key) -> None:
    subject = _subject(client, app_key)

    def count(action: str) -> int:
        with app.extensions["govsvc.db"].transaction(write=False) as session:
            return session.scalar(select(func.count()).where(AuditEvent.action == action))

    _decide(client, app_key, subject, "essential.service", fields=["email"])
    assert (count("policy.allow"), count("policy.deny")) == (0, 0)  # L2 allow: not audited
    denied = _decide(client, app_key, subject, "marketing.communications.email")
    assert count("policy.deny") == 1
    with app.extensions["govsvc.db"].transaction(write=False) as session:
        event = session.scalar(select(AuditEvent).where(AuditEvent.action == "policy.deny"))
    assert event.event_id == denied["decision_id"] and event.reason_code == "no_consent"
    assert event.subject_ref == subject and "zhao" not in str(vars(event))
    _decide(client, app_key, subject, "essential.legal_obligation", fields=["id_number"])
    assert count("policy.allow") == 1


@pytest.mark.parametrize(
    ("body", "status", "slug"),
    [
        ({"purpose": "world.domination"}, 422, "validation-error"),
        ({"purpose": "essential.service", "purpose_version": 7}, 422, "validation-error"),
        ({"purpose": "essential.service", "fields": ["shoe_size"]}, 422, "validation-error"),
        ({"purpose": "essential.service", "data_categories": ["user.secrets"]}, 422, "validation-error"),
        ({"purpose": "essential.service", "fields": []}, 422, "validation-error"),
        ({"purpose": "essential.service", "action": "sell"}, 422, "validation-error"),
        ({"purpose": "essential.service", "subject": {"subject_id": "sub_nobodynobodynobo"}}, 404, "not-found"),
        ({"purpose": "essential.service", "subject": {"kind": "email", "value": "ghost@x.cn"}}, 404, "not-found"),
        ({"purpose": "essential.service", "acting_for": {"roles": ["wizard"]}}, 422, "validation-error"),
        ({"purpose": "essential.service", "destination_country": "sg"}, 422, "validation-error"),
    ],
)
def test_bad_decision_requests(client, app_key, body: dict, status: int, slug: str) -> None:
    subject = _subject(client, app_key)
    request = {"subject": {"subject_id": subject}, "action": "read", "fields": ["email"]} | body
    problem = assert_problem(client.post("/v1/decisions", json=request, headers=app_key), status, slug)
    if body.get("purpose") == "world.domination":
        assert "essential.service" in problem["errors"][0]["message"]


def test_only_apps_may_act_for_end_users(client, auth_headers) -> None:
    dpo = auth_headers("dpo")
    subject = _subject(client, auth_headers("app"))
    response = client.post(
        "/v1/decisions",
        json={
            "subject": {"subject_id": subject},
            "action": "read",
            "purpose": "essential.service",
            "fields": ["email"],
            "acting_for": {"roles": ["admin"]},
        },
        headers=dpo,
    )
    assert_problem(response, 403, "forbidden")
    assert_problem(client.post("/v1/decisions", json={}, headers=auth_headers("auditor")), 403, "forbidden")


def test_batch_decisions_with_per_check_errors(client, app_key) -> None:
    first = _subject(client, app_key, email="a@example.cn")
    second = _subject(client, app_key, email="b@example.cn")
    _consent(client, app_key, second, "given", "marketing.communications.email")
    checks = [
        {
            "subject": {"subject_id": first},
            "action": "read",
            "purpose": "marketing.communications.email",
            "fields": ["email"],
        },
        {
            "subject": {"kind": "email", "value": "B@example.cn"},
            "action": "read",
            "purpose": "marketing.communications.email",
            "fields": ["email"],
        },
        {"subject": {"subject_id": first}, "action": "read", "purpose": "nope", "fields": ["email"]},
        {
            "subject": {"kind": "email", "value": "nobody@example.cn"},
            "action": "read",
            "purpose": "essential.service",
            "fields": ["email"],
        },
    ]
    response = client.post("/v1/decisions:batch", json={"checks": checks}, headers=app_key)
    assert response.status_code == 200, response.get_json()
    results = response.get_json()["results"]
    assert [r["index"] for r in results] == [0, 1, 2, 3]
    assert results[0]["decision"]["decision"] == "deny" and results[1]["decision"]["decision"] == "allow"
    assert results[2]["error"]["type"].endswith("validation-error")
    assert results[3]["error"]["type"].endswith("not-found")
    too_many = client.post("/v1/decisions:batch", json={"checks": checks[:1] * 1001}, headers=app_key)
    assert_problem(too_many, 422, "validation-error")


def test_a_malformed_check_fails_alone_in_a_batch(client, app_key) -> None:
    subject = _subject(client, app_key)
    good = {"subject": {"subject_id": subject}, "action": "read", "purpose": "essential.service", "fields": ["email"]}
    checks = [
        good,
        {**good, "action": "sell", "purpose_version": 1.5, "colour": "red"},
        {**good, "subject": "not an object", "fields": "email", "acting_for": {"roles": []}},
        "not an object",
        {**good, "destination_country": "sg", "purpose_version": True},
    ]
    response = client.post("/v1/decisions:batch", json={"checks": checks}, headers=app_key)
    assert response.status_code == 200, response.get_json()
    results = response.get_json()["results"]
    assert results[0]["decision"]["decision"] == "allow"
    assert {e["field"] for e in results[1]["error"]["errors"]} == {"action", "purpose_version", "colour"}
    assert {e["field"] for e in results[2]["error"]["errors"]} == {"subject", "fields", "acting_for"}
    assert results[3]["error"]["type"].endswith("validation-error")
    assert {e["field"] for e in results[4]["error"]["errors"]} == {"destination_country", "purpose_version"}
    for body in ({"checks": []}, {"checks": "x"}, {"checks": [good], "more": 1}, [good]):
        assert_problem(client.post("/v1/decisions:batch", json=body, headers=app_key), 422, "validation-error")


def _audited(database, action: str) -> list[str | None]:
    engine = create_engine(database.url)
    with engine.connect() as connection:
        rows = connection.execute(select(AuditEvent.reason_code).where(AuditEvent.action == action)).scalars().all()
    engine.dispose()
    return list(rows)


@pytest.mark.parametrize("path", ["/v1/decisions", "/v1/decisions:batch"])
def test_a_key_revoked_on_another_instance_is_refused_by_the_next_decision(
    app_factory, database, issue_key, auth_headers, path: str
) -> None:
    """The decision route recognises a known key without a round trip but reads its revocation with the subject."""
    deciding, revoking = app_factory().test_client(), app_factory().test_client()
    admin = auth_headers("admin")
    key = issue_key("app", name="revoked-soon")
    headers = {"Authorization": f"Bearer {key}"}
    subject = _subject(deciding, headers)
    check = {"subject": {"subject_id": subject}, "action": "read", "purpose": "essential.service", "fields": ["email"]}
    body = {"checks": [check]} if path.endswith(":batch") else check
    assert deciding.post(path, json=body, headers=headers).status_code == 200  # the key is now known to `deciding`
    client_id = revoking.get("/v1/clients", headers=admin).get_json()["items"][-1]["client_id"]
    assert revoking.post(f"/v1/clients/{client_id}:revoke", headers=admin).status_code == 200
    refused = deciding.post(path, json=body, headers=headers)
    assert_problem(refused, 401, "invalid-credentials")
    assert "revoked" in refused.get_json()["detail"]
    assert refused.headers["WWW-Authenticate"].startswith("Bearer")
    assert "key_revoked" in _audited(database, "auth.failed")
    assert _audited(database, "policy.deny") == [] and _audited(database, "policy.allow") == []


def test_a_permission_withdrawn_on_another_instance_applies_to_the_next_decision(
    app_factory, database, auth_headers
) -> None:
    deciding, editing = app_factory().test_client(), app_factory().test_client()
    app_key, admin = auth_headers("app"), auth_headers("admin")
    subject = _subject(deciding, app_key)
    check = {"subject": {"subject_id": subject}, "action": "read", "purpose": "essential.service", "fields": ["email"]}
    assert deciding.post("/v1/decisions", json=check, headers=app_key).status_code == 200
    engine = create_engine(database.url)
    with engine.begin() as connection:
        connection.execute(
            text("DELETE FROM casbin_rule WHERE ptype = 'p' AND v0 = 'app' AND v1 = 'decisions' AND v2 = 'create'")
        )
    engine.dispose()
    assert editing.post("/v1/policy:reload", headers=admin).status_code == 200
    for path, body in (("/v1/decisions", check), ("/v1/decisions:batch", {"checks": [check]})):
        refused = deciding.post(path, json=body, headers=app_key)
        assert_problem(refused, 403, "forbidden")
        assert refused.get_json()["required"] == "decisions:create"
    assert _audited(database, "access.denied").count("no_role") == 2


def test_an_expired_known_key_is_refused(app, client, issue_key) -> None:
    from datetime import timedelta

    from govsvc.core.db import utcnow

    key = issue_key("app", expires_at=utcnow() + timedelta(minutes=10))  # not seconds: a slow request outlives them
    headers = {"Authorization": f"Bearer {key}"}
    subject = _subject(client, headers, email="expiring@example.cn")
    check = {"subject": {"subject_id": subject}, "action": "read", "purpose": "essential.service", "fields": ["email"]}
    assert client.post("/v1/decisions", json=check, headers=headers).status_code == 200
    known = app.extensions["govsvc.known_keys"]
    assert known.recall(key) is not None
    assert known.recall(key, now=utcnow() + timedelta(minutes=9)) is not None
    assert known.recall(key, now=utcnow() + timedelta(minutes=11)) is None  # expiry is checked without the database


def test_a_batch_of_only_malformed_checks_still_confirms_the_key(client, app_key) -> None:
    response = client.post("/v1/decisions:batch", json={"checks": [{"action": "read"}, 7]}, headers=app_key)
    assert response.status_code == 200
    assert [item["error"]["status"] for item in response.get_json()["results"]] == [422, 422]


def test_a_policy_load_lost_with_the_database_is_a_503_then_retried_never_a_403(app, client, app_key, monkeypatch):
    """The database goes away after a key is checked but before the worker's first policy load: that request is a
    503, and the next one with the same (now known) key loads the policy instead of being refused for want of it."""
    from sqlalchemy.exc import OperationalError

    from govsvc.config import PROJECT_ROOT
    from govsvc.policy import service as policy_service
    from govsvc.policy.service import PolicyEngine

    fresh = PolicyEngine(PROJECT_ROOT / "policies")
    monkeypatch.setitem(app.extensions, "govsvc.policy", fresh)  # a worker that has not loaded the policy yet
    monkeypatch.setattr(app.extensions["govsvc.decisions"], "policy", fresh)
    loaded = policy_service.current_lines
    failures = iter([OperationalError("SELECT casbin_rule", None, ConnectionResetError("connection lost"))])

    def lines_of_a_database_that_goes_away(session):
        for failure in failures:
            raise failure
        return loaded(session)

    monkeypatch.setattr(policy_service, "current_lines", lines_of_a_database_that_goes_away)
    body = {"subject": {"subject_id": "sub_aaaaaaaaaaaaaaaa"}, "action": "read", "purpose": "essential.service"}
    body["fields"] = ["email"]
    assert_problem(client.post("/v1/decisions", json=body, headers=app_key), 503, "service-unavailable")
    assert not fresh.loaded
    assert_problem(client.post("/v1/decisions", json=body, headers=app_key), 404, "not-found")  # past the guard
    assert fresh.loaded
