"""The admin UI's data-subject request pages through the test client (no JavaScript: plain forms and redirects), on
both databases: the queue and its filters, the SLA countdown, the detail page and its timeline, every action (verify,
assign, note, extend, complete, deny, download the export), the roles, bad input, and the dashboard panel."""

from __future__ import annotations

import io
import json
import re
import zipfile
from datetime import timedelta

import pytest
from sqlalchemy import create_engine, update

from govsvc.core.db import utcnow
from govsvc.dsr.models import DsrRequest
from tests.support.admin import events, role_clients

EMAIL = "li.lei@example.cn"
PHONE = "+8613812345678"
PROFILE = {"name": "李雷", "email": EMAIL, "mobile": PHONE}


@pytest.fixture
def as_role(app):
    return role_clients(app)


@pytest.fixture
def subject_id(client, auth_headers) -> str:
    app_key = auth_headers("app")
    body = {
        "identifiers": [{"kind": "email", "value": EMAIL}, {"kind": "phone", "value": PHONE}],
        "jurisdictions": ["gdpr"],
    }
    created = client.post("/v1/subjects", json=body, headers=app_key)
    assert created.status_code == 201, created.get_json()
    subject = created.get_json()["subject_id"]
    put = client.put(f"/v1/vault/subjects/{subject}/profile", json={"fields": PROFILE}, headers=app_key)
    assert put.status_code == 200, put.get_json()
    return subject


def intake(client, auth_headers, subject: str, request_type: str = "access") -> str:
    body = {"type": request_type, "subject": {"subject_id": subject}, "channel": "web"}
    response = client.post("/v1/dsr/requests", json=body, headers=auth_headers("app"))
    assert response.status_code == 201, response.get_json()
    return response.get_json()["request_id"]


def _status(app, request_id: str) -> str:
    with app.extensions["govsvc.db"].transaction(write=False) as session:
        return app.extensions["govsvc.dsr"].service.get(session, request_id).status


def _set_due(database, request_id: str, **values) -> None:
    engine = create_engine(database.url)
    with engine.begin() as connection:
        connection.execute(update(DsrRequest).where(DsrRequest.request_id == request_id).values(**values))
    engine.dispose()


def test_work_an_access_request_from_intake_to_a_downloaded_export(app, client, auth_headers, as_role, subject_id):
    request_id = intake(client, auth_headers, subject_id)
    officer = as_role("compliance_officer")
    queue = officer.text("/admin/requests")
    assert f'data-request="{request_id}"' in queue and 'data-status="pending_verification"' in queue
    assert 'data-countdown="ok"' in queue and "days left" in queue
    detail = officer.text(f"/admin/requests/{request_id}")
    assert 'data-testid="dsr-verify-form"' in detail and 'data-testid="dsr-complete-form"' not in detail
    assert 'data-kind="received"' in detail

    # one data point is not enough for "reasonable": the failed attempt is kept, the request still waits
    failed = officer.post(f"/admin/requests/{request_id}/verify", {"method": "data_points", "point_value_0": EMAIL})
    assert failed.status_code == 302 and failed.headers["Location"].endswith("done=verification_failed")
    assert 'data-kind="verification_failed"' in officer.text(failed.headers["Location"])
    assert _status(app, request_id) == "pending_verification"
    verified = officer.post(
        f"/admin/requests/{request_id}/verify",
        {
            "method": "data_points",
            "point_kind_0": "email",
            "point_value_0": EMAIL.upper(),
            "point_kind_1": "phone",
            "point_value_1": "138 1234 5678",
        },
    )
    assert verified.status_code == 302 and _status(app, request_id) == "verified"
    page = officer.text(verified.headers["Location"])
    assert 'data-done="verified"' in page and EMAIL not in page and "138 1234 5678" not in page

    assignee_select = detail.split('data-testid="dsr-assignee-select"', 1)[1].split("</select>", 1)[0]
    # unassigned, then the enabled users whose role may work requests (dsr:manage); the officer's own preselected
    assert re.findall(r'<option value="([^"]*)"', assignee_select) == ["", "compliance-officer", "dpo"]
    assert '<option value="compliance-officer" selected>' in assignee_select
    not_assignable = officer.post(f"/admin/requests/{request_id}/assign", {"assignee": "auditor"})
    assert not_assignable.status_code == 422 and events(app, "dsr.assigned") == []
    assigned = officer.post(f"/admin/requests/{request_id}/assign", {"assignee": "compliance-officer"})
    assert assigned.status_code == 302
    assert 'data-testid="dsr-assignee">compliance-officer<' in officer.text(assigned.headers["Location"])
    extended = officer.post(f"/admin/requests/{request_id}/extend", {"reason": "records in many systems"})
    assert extended.status_code == 302
    page = officer.text(extended.headers["Location"])
    assert "records in many systems" in page and 'data-testid="dsr-extend"' not in page  # once only

    completed = officer.post(f"/admin/requests/{request_id}/complete", {})
    body = completed.get_data(as_text=True)
    assert completed.status_code == 200 and 'data-testid="dsr-download"' in body
    assert completed.headers["Cache-Control"] == "no-store"
    assert _status(app, request_id) == "completed"
    token = re.search(r'name="token" value="([^"]+)"', body).group(1)
    assert token not in officer.text(f"/admin/requests/{request_id}")  # shown once
    download = officer.post(f"/admin/requests/{request_id}/export", {"token": token})
    assert download.status_code == 200 and download.mimetype == "application/zip"
    archive = zipfile.ZipFile(io.BytesIO(download.data))
    assert json.loads(archive.read("manifest.json"))["request_id"] == request_id
    vault = json.loads(archive.read("data/vault.json"))
    assert any(r["fields"].get("value") == EMAIL for r in vault["records"])  # the subject's own, unmasked copy
    again = officer.post(f"/admin/requests/{request_id}/export", {"token": token})
    assert again.status_code == 410 and 'data-testid="error-410"' in again.get_data(as_text=True)  # works once

    page = officer.text(f"/admin/requests/{request_id}")
    steps = re.findall(r'data-kind="status" data-to="([a-z_]+)"', page)
    assert steps == ["completed", "in_progress", "verified", "pending_verification"]  # newest first
    assert 'data-testid="dsr-run-vault"' in page and 'data-countdown="closed"' in page
    actors = {e.actor_principal for e in events(app, "dsr.assigned")}
    assert actors == {"admin:compliance-officer"}
    assert [e.object_ref for e in events(app, "dsr.completed")] == [f"dsr:{request_id}"]


def test_deny_with_a_reason_and_bad_input_saves_nothing(app, client, auth_headers, as_role, subject_id) -> None:
    request_id = intake(client, auth_headers, subject_id, "erasure")
    dpo = as_role("dpo")
    no_basis = dpo.post(f"/admin/requests/{request_id}/deny", {"reason": "no_match", "legal_basis": ""})
    assert no_basis.status_code == 422 and 'data-testid="form-errors"' in no_basis.get_data(as_text=True)
    unknown = dpo.post(f"/admin/requests/{request_id}/deny", {"reason": "bored", "legal_basis": "GDPR 12(5)"})
    assert unknown.status_code == 422 and "Unknown denial reason." in unknown.get_data(as_text=True)
    personal = dpo.post(f"/admin/requests/{request_id}/extend", {"reason": f"call {PHONE}"})
    assert personal.status_code == 422 and "personal data" in personal.get_data(as_text=True)
    early = dpo.post(f"/admin/requests/{request_id}/complete", {})
    assert early.status_code == 409 and "verify it first" in early.get_data(as_text=True)
    no_method = dpo.post(f"/admin/requests/{request_id}/verify", {"method": ""})
    assert no_method.status_code == 422
    assert _status(app, request_id) == "pending_verification" and events(app, "dsr.extended") == []
    denied = dpo.post(
        f"/admin/requests/{request_id}/deny",
        {"reason": "insuf_verification", "legal_basis": "GDPR Art 12(6)", "note": "no reply after two reminders"},
    )
    assert denied.status_code == 302 and _status(app, request_id) == "denied"
    page = dpo.text(denied.headers["Location"])
    assert "Identity not verified" in page and "GDPR Art 12(6)" in page and "no reply after two reminders" in page
    assert 'data-testid="dsr-deny-form"' not in page  # closed: no more actions
    again = dpo.post(f"/admin/requests/{request_id}/verify", {"method": "data_points", "point_value_0": EMAIL})
    assert again.status_code == 409


@pytest.mark.parametrize("role", ["auditor", "legal"])
def test_read_only_roles_see_the_queue_and_get_a_403_page_on_every_action(
    app, client, auth_headers, as_role, subject_id, role
) -> None:
    request_id = intake(client, auth_headers, subject_id)
    reader = as_role(role)
    assert f'data-request="{request_id}"' in reader.text("/admin/requests")
    page = reader.text(f"/admin/requests/{request_id}")
    assert 'id="actions"' not in page and "<form" not in page.split("<main", 1)[1].split("</main>", 1)[0]
    for action, form in [
        ("verify", {"method": "data_points", "point_value_0": EMAIL, "point_value_1": PHONE}),
        ("assign", {"assignee": role}),
        ("notes", {"text": "a note"}),
        ("extend", {"reason": "busy"}),
        ("deny", {"reason": "other", "legal_basis": "none"}),
        ("acknowledge", {}),
        ("pause", {"reason": "awaiting_identity"}),
        ("resume", {}),
        ("cancel", {"reason": "withdrawn by the requester"}),
        ("complete", {}),
        ("export", {"token": "exp_x.y"}),
    ]:
        response = reader.post(f"/admin/requests/{request_id}/{action}", form)
        assert response.status_code == 403, action
        assert 'data-testid="error-403"' in response.get_data(as_text=True)
    assert _status(app, request_id) == "pending_verification"
    assert {e.object_ref for e in events(app, "access.denied")} >= {
        "dsr:verify",
        "dsr:manage",
        "dsr:fulfil",
        "dsr:cancel",
    }


def test_acknowledge_pause_resume_and_cancel_through_the_forms(app, client, auth_headers, as_role, subject_id) -> None:
    """The clock and closing actions the API has are on the request page too: each audited, each refused clearly
    when the request's state does not allow it."""
    request_id = intake(client, auth_headers, subject_id, "erasure")
    officer = as_role("compliance_officer")
    page = officer.text(f"/admin/requests/{request_id}")
    for form in ("dsr-acknowledge-form", "dsr-pause-form", "dsr-cancel-form"):
        assert f'data-testid="{form}"' in page, form
    assert 'data-testid="dsr-resume-form"' not in page

    acknowledged = officer.post(f"/admin/requests/{request_id}/acknowledge", {})
    assert acknowledged.status_code == 302 and acknowledged.headers["Location"].endswith("done=acknowledged")
    assert 'data-testid="dsr-acknowledge-form"' not in officer.text(acknowledged.headers["Location"])
    assert officer.post(f"/admin/requests/{request_id}/acknowledge", {}).status_code == 409

    unknown = officer.post(f"/admin/requests/{request_id}/pause", {"reason": "lunch"})
    assert unknown.status_code == 422 and events(app, "dsr.paused") == []
    paused = officer.post(f"/admin/requests/{request_id}/pause", {"reason": "awaiting_identity", "note": "letter 2"})
    assert paused.status_code == 302 and paused.headers["Location"].endswith("done=paused")
    page = officer.text(paused.headers["Location"])
    assert "clock paused" in page and 'data-testid="dsr-resume-form"' in page
    assert 'data-testid="dsr-pause-form"' not in page
    assert officer.post(f"/admin/requests/{request_id}/pause", {"reason": "awaiting_identity"}).status_code == 409
    resumed = officer.post(f"/admin/requests/{request_id}/resume", {})
    assert resumed.status_code == 302 and "clock paused" not in officer.text(resumed.headers["Location"])
    assert officer.post(f"/admin/requests/{request_id}/resume", {}).status_code == 409
    assert [len(events(app, name)) for name in ("dsr.acknowledged", "dsr.paused", "dsr.resumed")] == [1, 1, 1]

    personal = officer.post(f"/admin/requests/{request_id}/cancel", {"reason": f"call {PHONE}"})
    assert personal.status_code == 422 and _status(app, request_id) == "pending_verification"
    cancelled = officer.post(f"/admin/requests/{request_id}/cancel", {"reason": "withdrawn by the requester"})
    assert cancelled.status_code == 302 and _status(app, request_id) == "cancelled"
    page = officer.text(cancelled.headers["Location"])
    assert "Request cancelled." in page and 'data-testid="dsr-cancel-form"' not in page
    assert officer.post(f"/admin/requests/{request_id}/cancel", {}).status_code == 409


def test_admins_have_no_request_pages(as_role) -> None:
    admin = as_role("admin")
    assert admin.get("/admin/requests").status_code == 403
    assert 'href="/admin/requests"' not in admin.text("/admin/")
    assert 'data-testid="panel-dsr"' not in admin.text("/admin/")


def test_an_action_without_its_csrf_token_changes_nothing(app, client, auth_headers, as_role, subject_id) -> None:
    request_id = intake(client, auth_headers, subject_id)
    response = as_role("dpo").post(f"/admin/requests/{request_id}/assign", {"assignee": "dpo"}, csrf=False)
    assert response.status_code == 400 and events(app, "dsr.assigned") == []


def test_queue_filters_overdue_badge_and_the_dashboard_panel(
    app, client, auth_headers, as_role, subject_id, database
) -> None:
    access = intake(client, auth_headers, subject_id, "access")
    erasure = intake(client, auth_headers, subject_id, "erasure")
    _set_due(database, erasure, due_at=utcnow() - timedelta(days=2, hours=1))
    dpo = as_role("dpo")
    overdue = dpo.text("/admin/requests?overdue=yes")
    assert f'data-request="{erasure}"' in overdue and f'data-request="{access}"' not in overdue
    assert 'data-countdown="overdue" data-days="-3"' in overdue and "overdue by 3 days" in overdue
    by_type = dpo.text("/admin/requests?type=access")
    assert f'data-request="{access}"' in by_type and f'data-request="{erasure}"' not in by_type
    assert 'data-testid="dsr-empty"' in dpo.text("/admin/requests?status=completed")
    both = dpo.text("/admin/requests?status=all&overdue=")
    assert both.index(erasure) < both.index(access)  # most urgent first
    for bad in ("status=lost", "type=gossip", "overdue=maybe", "page=0"):
        assert dpo.get(f"/admin/requests?{bad}").status_code == 422, bad
    partial = dpo.get("/admin/requests?type=erasure", headers={"HX-Request": "true"}).get_data(as_text=True)
    assert partial.lstrip().startswith("<") and "<html" not in partial and erasure in partial
    dashboard = dpo.text("/admin/")
    panel = dashboard.split('data-testid="panel-dsr"', 1)[1].split("</article>", 1)[0]
    assert re.search(r'data-testid="dsr-open-count"><a [^>]+>2<', panel)
    assert re.search(r'data-testid="dsr-overdue-count">.*>1<', panel)
    assert panel.index(erasure) < panel.index(access)
    assert 'data-slot="requests"' in dashboard


def test_the_request_pages_in_chinese(app, client, auth_headers, as_role, subject_id) -> None:
    request_id = intake(client, auth_headers, subject_id)
    dpo = as_role("dpo")
    assert dpo.post("/admin/preferences/language", {"language": "zh", "next": "/admin/"}).status_code == 302
    queue = dpo.text("/admin/requests")
    assert "数据主体请求" in queue and "待验证" in queue and "天" in queue
    detail = dpo.text(f"/admin/requests/{request_id}")
    assert "时间线" in detail and "验证请求者" in detail
    assert "请求" in dpo.text("/admin/").split('data-testid="panel-dsr"', 1)[1]


def test_a_rectification_is_completed_with_corrected_values(app, client, auth_headers, as_role, subject_id) -> None:
    request_id = intake(client, auth_headers, subject_id, "rectification")
    officer = as_role("compliance_officer")
    officer.post(
        f"/admin/requests/{request_id}/verify",
        {
            "method": "data_points",
            "point_kind_0": "email",
            "point_value_0": EMAIL,
            "point_kind_1": "phone",
            "point_value_1": PHONE,
        },
    )
    assert _status(app, request_id) == "verified"
    page = officer.text(f"/admin/requests/{request_id}")
    assert 'name="corrections"' in page
    missing = officer.post(f"/admin/requests/{request_id}/complete", {"corrections": ""})
    assert missing.status_code == 422 and _status(app, request_id) == "verified"
    bad = officer.post(f"/admin/requests/{request_id}/complete", {"corrections": "no separator"})
    assert bad.status_code == 422
    done = officer.post(f"/admin/requests/{request_id}/complete", {"corrections": "name: 李磊"})
    assert done.status_code == 302 and _status(app, request_id) == "completed"


def test_every_request_page_works_without_javascript(client, auth_headers, as_role, subject_id) -> None:
    """No page needs a script: each form names its method and action (htmx only enhances the queue's filter)."""
    request_id = intake(client, auth_headers, subject_id)
    dpo = as_role("dpo")
    for path in (
        "/admin/requests",
        "/admin/requests?status=all&type=access&overdue=no",
        f"/admin/requests/{request_id}",
        "/admin/",
    ):
        page = dpo.text(path)
        main = page.split("<main", 1)[1].split("</main>", 1)[0]
        forms = re.findall(r"<form\b[^>]*>", main)
        assert forms or path == "/admin/", path
        for form in forms:
            assert re.search(r'method="(get|post)"', form) and 'action="/admin/' in form, (path, form)
        assert "<script" not in main and "onclick" not in main


def test_record_a_request_received_by_phone(app, as_role, subject_id) -> None:
    officer = as_role("compliance_officer")
    form = {"type": "erasure", "channel": "call_centre", "language": "zh", "subject_kind": "email"}
    page = officer.text("/admin/requests/new")
    assert 'data-testid="dsr-new-form"' in page
    stranger = officer.post("/admin/requests", {**form, "subject_value": "nobody@example.com"})
    assert stranger.status_code == 422 and "name the jurisdictions" in stranger.get_data(as_text=True)
    assert "nobody@example.com" not in stranger.get_data(as_text=True)  # the identifier is not shown back
    agent = officer.post(
        "/admin/requests", {**form, "subject_value": EMAIL, "requester_kind": "authorized_agent", "evidence": ""}
    )
    assert agent.status_code == 422 and "proof of authority" in agent.get_data(as_text=True)
    created = officer.post("/admin/requests", {**form, "subject_value": EMAIL.upper()})
    assert created.status_code == 302 and created.headers["Location"].endswith("done=received")
    detail = officer.text(created.headers["Location"])
    assert subject_id in detail and 'data-status="pending_verification"' in detail
    received = events(app, "dsr.received")[-1]
    assert received.subject_ref == subject_id and json.loads(received.details)["source"] == "admin_ui"
    assert EMAIL not in (received.details or "")
    duplicate = officer.post("/admin/requests", {**form, "subject_value": subject_id, "subject_kind": "subject_id"})
    body = duplicate.get_data(as_text=True)
    assert duplicate.status_code == 409 and 'data-testid="dsr-existing"' in body
    unknown_id = officer.post("/admin/requests", {**form, "subject_value": "sub_nope", "subject_kind": "subject_id"})
    assert unknown_id.status_code == 404
    assert len(events(app, "dsr.received")) == 1
    assert as_role("auditor").post("/admin/requests", {**form, "subject_value": EMAIL}).status_code == 403
    assert 'data-testid="dsr-new"' not in as_role("auditor").text("/admin/requests")


def test_response_letters_in_both_languages(app, client, auth_headers, as_role, subject_id) -> None:
    request_id = intake(client, auth_headers, subject_id, "erasure")
    legal = as_role("legal")
    page = legal.text(f"/admin/requests/{request_id}")
    assert 'data-letter="acknowledgement"' in page and 'data-letter="denied"' not in page
    english = legal.text(f"/admin/requests/{request_id}/letters/acknowledgement")
    assert request_id in english and 'data-testid="dsr-letter"' in english
    chinese = legal.text(f"/admin/requests/{request_id}/letters/acknowledgement?language=zh")
    assert 'data-testid="dsr-letter" lang="zh-Hans"' in chinese and "我们已收到您的" in chinese
    assert "我们已收到您的" not in english
    assert legal.get(f"/admin/requests/{request_id}/letters/denied").status_code == 409
    assert legal.get(f"/admin/requests/{request_id}/letters/poem").status_code == 422
    assert legal.get(f"/admin/requests/{request_id}/letters/acknowledgement?language=fr").status_code == 422
