"""The consent ledger: giving and withdrawing, separate consent, guardians, GPC, history, and the projection."""

from __future__ import annotations

import hashlib
import uuid
from datetime import date, timedelta

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from sqlalchemy import create_engine, select, text
from sqlalchemy.exc import DatabaseError

from govsvc.consent.models import ConsentEvent, ConsentState
from govsvc.consent.service import (
    ConsentAct,
    ConsentItem,
    ContradictionError,
    fold,
    fold_notice_usage,
    hourly_counts,
    notices_in_use,
    record_act,
)
from govsvc.core.db import utcnow
from govsvc.core.errors import ServiceError
from govsvc.subjects.service import IdentifierInput, create_subject
from tests.support.asserts import assert_problem
from tests.support.plans import StatementCapture, fill, insert_consent_events, only_postgresql

NOTICE = {
    "id": "privacy-notice",
    "version": "2026-11",
    "sha256": hashlib.sha256(b"notice").hexdigest(),
    "language": "zh-CN",
}


@pytest.fixture
def app_key(auth_headers) -> dict[str, str]:
    return auth_headers("app")


def _subject(client, headers, jurisdictions=("pipl",), birth_date=None, email="li.lei@example.cn") -> str:
    body = {"identifiers": [{"kind": "email", "value": email}], "jurisdictions": list(jurisdictions)}
    if birth_date:
        body["birth_date"] = birth_date
    response = client.post("/v1/subjects", json=body, headers=headers)
    assert response.status_code == 201, response.get_json()
    return response.get_json()["subject_id"]


def _act(client, headers, subject_id, event, items, **extra):
    extra_headers = extra.pop("_headers", {})
    body = {"subject": {"subject_id": subject_id}, "event": event, "items": items, "channel": "app"} | extra
    return client.post("/v1/consents", json=body, headers={**headers, **extra_headers})


def _give(client, headers, subject_id, items, consent_type="express", **extra):
    return _act(client, headers, subject_id, "given", items, consent_type=consent_type, notice=NOTICE, **extra)


def _states(client, headers, subject_id) -> dict[tuple[str, str], str]:
    rows = client.get(f"/v1/subjects/{subject_id}/consents", headers=headers).get_json()["consents"]
    return {(row["purpose"], row["scope"]): row["status"] for row in rows}


def test_give_then_withdraw_with_the_same_call_and_no_reason(client, app_key) -> None:
    subject = _subject(client, app_key)
    given_ = _give(client, app_key, subject, [{"purpose": "marketing.communications.email"}])
    assert given_.status_code == 201, given_.get_json()
    event = given_.get_json()["events"][0]
    assert event["event"] == "given" and event["purpose_version"] == 1 and event["notice_version"] == "2026-11"
    withdrawn = _act(client, app_key, subject, "withdrawn", [{"purpose": "marketing.communications.email"}])
    assert withdrawn.status_code == 201, withdrawn.get_json()
    assert _states(client, app_key, subject) == {("marketing.communications.email", ""): "withdrawn"}


def test_the_subject_can_be_named_by_any_identifier(client, app_key) -> None:
    subject = _subject(client, app_key)
    response = client.post(
        "/v1/consents",
        json={
            "subject": {"kind": "email", "value": "LI.LEI@example.cn"},
            "event": "given",
            "consent_type": "express",
            "notice": NOTICE,
            "channel": "web",
            "items": [{"purpose": "marketing.communications.sms"}],
        },
        headers=app_key,
    )
    assert response.status_code == 201 and response.get_json()["subject_id"] == subject


@pytest.mark.parametrize("event", ["withdrawn", "renewed", "expired"])
def test_events_that_contradict_the_ledger_are_refused(client, app_key, event: str) -> None:
    subject = _subject(client, app_key)
    body = assert_problem(
        _act(
            client,
            app_key,
            subject,
            event,
            [{"purpose": "personalize.profiling"}],
            consent_type="express",
            notice=NOTICE,
        ),
        409,
        "conflict",
    )
    assert "nothing was given" in body["detail"] and body["reason"] == "contradicts_ledger"
    assert _states(client, app_key, subject) == {}


def test_unknown_purposes_versions_scopes_and_channels_are_422_listing_what_is_known(client, app_key) -> None:
    subject = _subject(client, app_key)
    body = assert_problem(_give(client, app_key, subject, [{"purpose": "world.domination"}]), 422, "validation-error")
    assert "marketing.communications.email" in body["errors"][0]["message"]
    body = assert_problem(
        _give(client, app_key, subject, [{"purpose": "personalize.profiling", "purpose_version": 9}]),
        422,
        "validation-error",
    )
    assert "current version 1" in body["errors"][0]["message"]
    body = assert_problem(
        _give(client, app_key, subject, [{"purpose": "personalize.profiling", "scope": "xb:US"}]),
        422,
        "validation-error",
    )
    assert "category:user.behavior" in body["errors"][0]["message"]
    body = assert_problem(
        _give(client, app_key, subject, [{"purpose": "personalize.profiling"}], channel="fax"), 422, "validation-error"
    )
    assert "wechat" in body["errors"][0]["message"]
    missing_notice = _act(
        client, app_key, subject, "given", [{"purpose": "personalize.profiling"}], consent_type="express"
    )
    assert assert_problem(missing_notice, 422, "validation-error")["errors"][0]["field"] == "notice"
    unknown_subject = client.post(
        "/v1/consents",
        json={
            "subject": {"kind": "email", "value": "who@x.cn"},
            "event": "withdrawn",
            "items": [{"purpose": "personalize.profiling"}],
            "channel": "app",
        },
        headers=app_key,
    )
    assert_problem(unknown_subject, 404, "not-found")


def test_bundled_separate_consent_is_refused(client, app_key) -> None:
    subject = _subject(client, app_key)
    bundled = _give(
        client,
        app_key,
        subject,
        [{"purpose": "marketing.communications.email"}, {"purpose": "marketing.location_offers"}],
        consent_type="separate",
    )
    assert assert_problem(bundled, 422, "validation-error")["reason"] == "separate_consent_required"
    not_separate = _give(client, app_key, subject, [{"purpose": "marketing.location_offers"}], consent_type="express")
    assert assert_problem(not_separate, 422, "validation-error")["reason"] == "separate_consent_required"
    alone = _give(client, app_key, subject, [{"purpose": "marketing.location_offers"}], consent_type="separate")
    assert alone.status_code == 201
    sensitive = _give(
        client,
        app_key,
        subject,
        [{"purpose": "marketing.location_offers", "scope": "category:user.location.precise"}],
        consent_type="separate",
    )
    assert sensitive.status_code == 201
    several = _give(
        client,
        app_key,
        subject,
        [{"purpose": "marketing.communications.email"}, {"purpose": "marketing.communications.sms"}],
    )
    assert several.status_code == 201  # ordinary purposes may share one act


def test_gdpr_special_categories_need_explicit_consent(client, app_key) -> None:
    subject = _subject(client, app_key, jurisdictions=["gdpr:de"])
    implied = _give(client, app_key, subject, [{"purpose": "third_party_sharing.insurance_referral"}])
    assert assert_problem(implied, 422, "validation-error")["reason"] == "explicit_consent_required"
    explicit = _give(
        client, app_key, subject, [{"purpose": "third_party_sharing.insurance_referral"}], consent_type="explicit"
    )
    assert explicit.status_code == 201


@pytest.mark.parametrize(
    ("jurisdictions", "age", "guardian_needed"),
    [
        (["pipl"], 13, True),
        (["pipl"], 14, False),
        (["gdpr:de"], 15, True),
        (["gdpr:fr"], 15, False),
        (["gdpr"], 15, True),
        (["gdpr:fr", "pipl"], 14, True),
        (["gdpr:fr", "pipl"], 15, False),
        (["gdpr:de", "pipl"], 15, True),
        (["ccpa"], 10, False),
    ],
)
def test_guardian_consent_for_minors_by_jurisdiction(client, app_key, jurisdictions, age, guardian_needed) -> None:
    today = date.today()
    born = today.replace(year=today.year - age) if (today.month, today.day) != (2, 29) else date(today.year - age, 3, 1)
    subject = _subject(client, app_key, jurisdictions=jurisdictions, birth_date=born.isoformat())
    by_child = _give(client, app_key, subject, [{"purpose": "marketing.communications.email"}])
    if guardian_needed:
        assert assert_problem(by_child, 422, "validation-error")["reason"] == "guardian_consent_required"
        by_guardian = _give(
            client,
            app_key,
            subject,
            [{"purpose": "marketing.communications.email"}],
            actor="guardian",
            consent_type="guardian",
        )
        assert by_guardian.status_code == 201, by_guardian.get_json()
    else:
        assert by_child.status_code == 201, by_child.get_json()


def test_sec_gpc_records_an_opt_out_of_sale_and_share(client, app_key) -> None:
    subject = _subject(client, app_key, jurisdictions=["ccpa"])
    response = _give(
        client, app_key, subject, [{"purpose": "marketing.communications.email"}], _headers={"Sec-GPC": "1"}
    )
    body = response.get_json()
    assert response.status_code == 201 and body["gpc_opt_out"] is True
    opt_out = [e for e in body["events"] if e["source"] == "gpc"]
    assert {e["purpose"] for e in opt_out} == {"third_party_sharing.sale_share", "marketing.location_offers"}
    assert all(e["event"] == "refused" and e["consent_type"] == "opt_out_signal" for e in opt_out)
    assert _states(client, app_key, subject)[("third_party_sharing.sale_share", "")] == "refused"


def test_history_is_append_only_and_paginated(client, app_key, database) -> None:
    subject = _subject(client, app_key)
    for event in ("given", "withdrawn", "given", "withdrawn", "given"):
        extra = {"consent_type": "express", "notice": NOTICE} if event == "given" else {}
        assert (
            _act(client, app_key, subject, event, [{"purpose": "marketing.communications.sms"}], **extra).status_code
            == 201
        )
    first = client.get(f"/v1/subjects/{subject}/consents/history?limit=2", headers=app_key).get_json()
    second = client.get(
        f"/v1/subjects/{subject}/consents/history?limit=10&cursor={first['next_cursor']}", headers=app_key
    ).get_json()
    assert [e["event"] for e in first["items"] + second["items"]] == [
        "given",
        "withdrawn",
        "given",
        "withdrawn",
        "given",
    ]
    engine = create_engine(database.url)
    try:
        for statement in ("UPDATE consent_events SET event_type = 'given'", "DELETE FROM consent_events"):
            with pytest.raises(DatabaseError, match="append-only"), engine.begin() as connection:
                connection.execute(text(statement))
    finally:
        engine.dispose()


def test_consent_events_are_audited_without_personal_data(app, client, app_key) -> None:
    subject = _subject(client, app_key)
    _give(client, app_key, subject, [{"purpose": "marketing.communications.email"}])
    from govsvc.audit.models import AuditEvent

    with app.extensions["govsvc.db"].transaction(write=False) as session:
        event = session.scalar(select(AuditEvent).where(AuditEvent.action == "consent.given"))
    assert event.subject_ref == subject and event.purpose == "marketing.communications.email"
    assert "li.lei" not in str(vars(event))


def test_only_roles_with_consent_rights_write(client, auth_headers) -> None:
    subject = _subject(client, auth_headers("app"))
    denied = _give(client, auth_headers("analyst"), subject, [{"purpose": "personalize.profiling"}])
    assert_problem(denied, 403, "forbidden")


# -- the projection always equals the fold of the events ---------------------------------------------------------

PURPOSES = ["marketing.communications.email", "marketing.communications.sms", "personalize.profiling"]
ACTS = st.lists(
    st.tuples(
        st.sampled_from(["given", "refused", "withdrawn", "expired", "renewed"]),
        st.lists(st.sampled_from(PURPOSES), min_size=1, max_size=3, unique=True),
    ),
    min_size=1,
    max_size=12,
)


@settings(max_examples=25, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(acts=ACTS)
def test_the_projection_always_equals_the_fold_of_the_events(app, acts) -> None:
    database = app.extensions["govsvc.db"]
    keys = app.extensions["govsvc.field_keys"]
    cache = app.extensions["govsvc.taxonomy"]
    with database.transaction() as session:
        subject = create_subject(
            session,
            keys,
            identifiers=[IdentifierInput("device_id", uuid.uuid4().hex)],
            jurisdictions=["gdpr:fr"],
            known_jurisdictions=["gdpr", "pipl", "ccpa"],
        )
    for event_type, purposes in acts:
        act = ConsentAct(
            event_type=event_type,
            items=[ConsentItem(p) for p in purposes],
            channel="web",
            consent_type="express",
            notice_id="n",
            notice_version="1",
            notice_sha256="0" * 64,
            language="fr",
        )
        try:
            with database.transaction() as session:
                record_act(session, keys, cache.current(session), session.merge(subject), act, recorded_by="test")
        except ContradictionError:
            pass  # refused as a whole: nothing of the act is written
        except ServiceError as error:
            raise AssertionError(error.detail) from error
    with database.transaction(write=False) as session:
        events = list(
            session.scalars(select(ConsentEvent).where(ConsentEvent.subject_pk == subject.pk).order_by(ConsentEvent.pk))
        )
        stored = {
            (row.subject_pk, row.purpose_key, row.scope): (row.status, row.last_event_pk)
            for row in session.scalars(select(ConsentState).where(ConsentState.subject_pk == subject.pk))
        }
    expected = {key: (value.status, value.last_event_pk) for key, value in fold(events).items()}
    assert stored == expected


# -- signed receipts ----------------------------------------------------------------------------------------------


def test_receipts_are_signed_verifiable_offline_and_tamper_evident(client, app_key) -> None:
    import base64
    import json as json_

    from govsvc.consent.receipts import ReceiptInvalid, verify_receipt

    subject = _subject(client, app_key)
    response = _give(client, app_key, subject, [{"purpose": "marketing.communications.email"}])
    receipt = response.get_json()["receipts"][0]
    jwks = client.get("/.well-known/govsvc/consent-receipt-keys").get_json()  # public, no credentials
    assert jwks["keys"][0]["kty"] == "OKP" and jwks["keys"][0]["crv"] == "Ed25519"
    claims = verify_receipt(receipt, jwks)
    assert claims["pii_principal_id"] == subject
    assert claims["purposes"][0]["purpose"] == "marketing.communications.email"
    assert claims["privacy_notice"]["sha256"] == NOTICE["sha256"] and claims["event"]["event_type"] == "given"
    assert "li.lei" not in json_.dumps(claims)

    header, payload, signature = receipt.split(".")
    decoded = json_.loads(base64.urlsafe_b64decode(payload + "=" * (-len(payload) % 4)))
    for field, value in (("pii_principal_id", "sub_someoneelse1234"), ("record_id", "0" * 32)):
        forged = dict(decoded, **{field: value})
        forged_payload = base64.urlsafe_b64encode(json_.dumps(forged).encode()).decode().rstrip("=")
        with pytest.raises(ReceiptInvalid):
            verify_receipt(f"{header}.{forged_payload}.{signature}", jwks)
    flipped = signature[:-2] + ("A" if signature[-2] != "A" else "B") + signature[-1]
    with pytest.raises(ReceiptInvalid):
        verify_receipt(f"{header}.{payload}.{flipped}", jwks)
    with pytest.raises(ReceiptInvalid):
        verify_receipt(receipt, {"keys": []})
    event_id = response.get_json()["events"][0]["event_id"]
    again = client.get(f"/v1/consents/{event_id}/receipt", headers=app_key).get_json()["receipt"]
    assert verify_receipt(again, jwks)["record_id"] == event_id
    assert_problem(client.get("/v1/consents/nope/receipt", headers=app_key), 404, "not-found")


def test_the_dashboard_counts_read_the_window_not_the_ledger(app, database) -> None:
    """The consent trend of the last 30 days reads those days' events (the recorded_at index), not every act in
    the ledger: 20,000 acts a year old and 50 of today."""
    only_postgresql(database)

    fill(database.url, lambda connection: insert_consent_events(connection, 20_000, 50, "1 hour"))
    db = app.extensions["govsvc.db"]
    with StatementCapture(db.engine, "FROM consent_events") as captured, db.transaction(write=False) as session:
        counts = hourly_counts(session, utcnow() - timedelta(days=30))
        assert sum(count.count for count in counts) == 50
        assert captured.rows_read(session, {"consent_events"}) <= 500


def _ledger_notices(app) -> list[tuple]:
    """The notices in use as a full scan of the ledger counts them (what the page showed before the fold)."""
    with app.extensions["govsvc.db"].transaction(write=False) as session:
        rows = session.execute(
            select(ConsentEvent.notice_id, ConsentEvent.notice_version, ConsentEvent.notice_sha256, ConsentEvent.pk)
            .where(ConsentEvent.notice_id.is_not(None))
            .order_by(ConsentEvent.pk)
        ).all()
    counted: dict[tuple, int] = {}
    for notice_id, version, sha256, _pk in rows:
        counted[(notice_id, version, sha256)] = counted.get((notice_id, version, sha256), 0) + 1
    return sorted((*key, count) for key, count in counted.items())


def _notices(app) -> list[tuple]:
    with app.extensions["govsvc.db"].transaction(write=False) as session:
        return sorted((n.notice_id, n.version, n.sha256, n.events) for n in notices_in_use(session))


def _fold(app, **kwargs) -> dict[str, int]:
    with app.extensions["govsvc.db"].transaction() as session:
        return fold_notice_usage(session, **kwargs)


def test_the_notices_in_use_are_the_ledgers_whatever_was_folded(app, client, app_key) -> None:
    """The fold's counts plus the events after its mark always equal a full count of the ledger: before any fold,
    after a partial one, after a complete one, with new events after it, and when folded again."""
    other = NOTICE | {"version": "2026-12", "sha256": hashlib.sha256(b"notice v2").hexdigest()}
    for number, notice in enumerate((NOTICE, NOTICE, other, NOTICE, other)):
        subject = _subject(client, app_key, email=f"n{number}@example.cn")
        given_ = _act(
            client,
            app_key,
            subject,
            "given",
            [{"purpose": "marketing.communications.email"}],
            consent_type="express",
            notice=notice,
        )
        assert given_.status_code == 201, given_.get_json()
    expected = _ledger_notices(app)
    assert [count for *_key, count in expected] == [3, 2] and _notices(app) == expected
    assert _fold(app)["notices"] == 0  # everything is younger than the lag: nothing folded, all still counted
    assert _notices(app) == expected
    later = utcnow() + timedelta(hours=1)
    partial = _fold(app, now=later, chunk=2)
    assert partial["notices"] >= 1 and _notices(app) == expected
    assert _fold(app, now=later)["folded_through"] > partial["folded_through"]
    assert _notices(app) == expected
    assert _fold(app, now=later)["notices"] == 0  # folded once only
    subject = _subject(client, app_key, email="late@example.cn")
    assert _give(client, app_key, subject, [{"purpose": "personalize.profiling"}]).status_code == 201
    expected = _ledger_notices(app)
    assert [count for *_key, count in expected] == [4, 2] and _notices(app) == expected
    with app.extensions["govsvc.db"].transaction(write=False) as session:
        usage = {(n.version, n.events): n for n in notices_in_use(session)}
    assert usage["2026-11", 4].first_recorded <= usage["2026-11", 4].last_recorded
    job = app.extensions["govsvc.jobs"].function("consent.notice_usage")
    assert job is not None and job()["notices"] == 0 and _notices(app) == expected  # the periodic job, as run


def test_the_notices_page_reads_the_events_after_the_fold(app, database) -> None:
    """Once folded, the notices in use read the events after the fold's mark: 50 of 20,050."""
    only_postgresql(database)

    fill(database.url, lambda connection: insert_consent_events(connection, 20_000, 50, "1 minute"))
    db = app.extensions["govsvc.db"]
    with StatementCapture(db.engine, "ORDER BY consent_events.pk DESC") as settled:
        assert _fold(app)["folded_through"] >= 20_000
    with db.transaction(write=False) as session:  # the fold finds its end from the top of the primary key
        assert settled.rows_read(session, {"consent_events"}) <= 500
    with StatementCapture(db.engine, "FROM consent_events") as captured, db.transaction(write=False) as session:
        (notice,) = notices_in_use(session)
        assert notice.events == 20_050
        assert captured.rows_read(session, {"consent_events"}) <= 500
