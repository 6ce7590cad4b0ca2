"""The admin UI's retention and legal hold pages through the test client (no JavaScript: plain forms and redirects),
on both databases: the rules and history, a dry run approved then executed through the forms purging a real
external table, pause/resume and run now, placing and releasing holds, the roles, CSRF, Chinese pages and the
dashboard's retention panel."""

from __future__ import annotations

import re

import pytest

from tests.support.admin import events, role_clients
from tests.test_retention import hold, keys, make_subject, put_rules, register_source, seed_orders, source_rule

__all__ = ["keys"]  # the API keys fixture of the retention tests


@pytest.fixture
def as_role(app):
    return role_clients(app)


@pytest.fixture
def orders(client, keys, external_db):
    """The retention tests' CRM orders table, registered, with its rule; C-1 under a legal hold."""
    seed_orders(external_db)
    register_source(client, keys, external_db)
    put_rules(client, keys, source_rule())
    hold(client, keys, make_subject(client, keys, "C-1"))
    return external_db


def _forms_work_without_javascript(html: str) -> None:
    """Every form posts (or gets) to a real URL and carries the CSRF token; no action depends on a script."""
    forms = re.findall(r"<form[^>]*>.*?</form>", html, re.S)
    assert forms
    for form in forms:
        assert re.search(r'action="/admin/[^"]+"', form), form[:200]
        if 'method="post"' in form:
            assert 'name="csrf_token"' in form, form[:200]
        assert "hx-post" not in form and "onclick" not in form


def test_dry_run_approve_execute_through_the_forms_purges_the_due_rows(app, as_role, orders) -> None:
    officer = as_role("compliance_officer")
    page = officer.text("/admin/retention")
    assert 'data-rule="old_orders"' in page and "source:crm_orders" in page and "0 4 * * *" in page
    assert 'data-testid="dry-run-form-old_orders"' in page and 'data-testid="execute-form-old_orders"' not in page
    _forms_work_without_javascript(page)

    previewed = officer.post("/admin/retention/rules/old_orders/dry-run")
    assert previewed.status_code == 302
    report = officer.text(previewed.headers["Location"])
    run_id = re.search(r'data-testid="run-id">([^<]+)<', report).group(1)
    assert 'data-testid="run-rows">16<' in report and 'data-testid="run-subjects">4<' in report
    assert 'data-reason="legal_hold"' in report and "psk_" in report and "C-4" not in report
    assert 'data-testid="approve-form"' in report and 'data-testid="execute-form"' not in report
    assert orders.count() == 30  # a dry run changes nothing

    # executing without the approval is refused by the service: the page explains, nothing is purged
    refused = officer.post("/admin/retention/rules/old_orders/execute", {"dry_run_id": run_id})
    assert refused.status_code == 409 and 'data-testid="form-errors"' in refused.get_data(as_text=True)
    assert orders.count() == 30

    approved = officer.post(f"/admin/retention/runs/{run_id}/approve")
    assert approved.status_code == 302 and approved.headers["Location"].endswith("done=approved")
    report = officer.text(approved.headers["Location"])
    assert 'data-testid="run-approved"' in report and 'data-testid="execute-form"' in report
    assert 'data-testid="execute-form-old_orders"' in officer.text("/admin/retention")

    executed = officer.post("/admin/retention/rules/old_orders/execute", {"dry_run_id": run_id})
    assert executed.status_code == 302 and "done=executed" in executed.headers["Location"]
    result = officer.text(executed.headers["Location"])
    assert 'data-testid="run-rows">16<' in result and run_id in result
    assert orders.count() == 14 and orders.count(where="customer_id = 'C-1'") == 6  # the held customer stays
    assert len(events(app, "retention.purged")) == 1

    again = officer.post("/admin/retention/rules/old_orders/execute", {"dry_run_id": run_id})
    assert again.status_code == 409 and orders.count() == 14  # a dry run is used once
    history = officer.text("/admin/retention")
    assert 'data-mode="execute"' in history and 'data-testid="execute-form-old_orders"' not in history
    panel = officer.text("/admin/").split('data-testid="panel-retention"', 1)[1]
    assert 'data-testid="retention-last-runs"' in panel and "16 rows purged" in panel


def test_pause_resume_and_run_now(app, as_role, orders) -> None:
    admin = as_role("admin")  # schedules, but neither runs nor executes
    page = admin.text("/admin/retention")
    assert 'data-testid="pause-form-old_orders"' in page and 'data-testid="run-now-form-old_orders"' not in page
    assert 'data-testid="dry-run-form-old_orders"' not in page
    paused = admin.post("/admin/retention/rules/old_orders/pause")
    assert paused.status_code == 302 and paused.headers["Location"].endswith("done=paused")
    page = admin.text(paused.headers["Location"])
    assert 'data-testid="rule-paused"' in page and 'data-testid="resume-form-old_orders"' in page
    assert len(events(app, "retention.job_paused")) == 1
    assert admin.post("/admin/retention/rules/old_orders/resume").status_code == 302
    assert 'data-testid="rule-paused"' not in admin.text("/admin/retention")
    assert admin.post("/admin/retention/rules/old_orders/run-now").status_code == 403

    officer = as_role("compliance_officer")
    first = officer.post("/admin/retention/rules/old_orders/run-now")  # no approved dry run: makes one to approve
    assert first.status_code == 302 and "outcome=dry_run" in first.headers["Location"]
    assert 'data-testid="approve-form"' in officer.text(first.headers["Location"])
    assert orders.count() == 30
    assert officer.post("/admin/retention/rules/nope/pause").status_code == 404


def test_place_and_release_holds(app, client, keys, as_role) -> None:
    make_subject(client, keys, "C-9")
    legal = as_role("legal")
    page = legal.text("/admin/holds")
    assert 'data-testid="hold-form"' in page
    _forms_work_without_javascript(page)
    form = {"scope": "subject", "subject_kind": "crm_id", "subject_system": "crm", "basis": "case 2026-31"}
    placed = legal.post(
        "/admin/holds", {**form, "subject_value": "C-9", "owner": "legal team", "review_at": "2020-01-31"}
    )
    assert placed.status_code == 302 and placed.headers["Location"].endswith("done=hold_created")
    page = legal.text(placed.headers["Location"])
    hold_id = re.search(r'data-hold="([^"]+)" data-status="active" data-review-overdue="yes"', page).group(1)
    assert 'data-testid="review-overdue"' in page and "C-9" not in page  # the identifier is never echoed
    assert len(events(app, "hold.created")) == 1

    category = {"scope": "category", "categories": "user.financial", "basis": "audit", "owner": "dpo"}
    assert legal.post("/admin/holds", {**category, "review_at": "2099-01-01"}).status_code == 302
    dashboard = as_role("compliance_officer").text("/admin/")
    panel = dashboard.split('data-testid="panel-retention"', 1)[1]
    assert 'data-testid="holds-active-count"><a href="/admin/holds">2<' in panel
    assert 'data-testid="holds-overdue-count"><span class="badge countdown-overdue">1<' in panel

    # bad input is refused with the fields named, nothing saved
    bad = legal.post("/admin/holds", {"scope": "category", "basis": "x", "owner": "", "review_at": "soon"})
    assert bad.status_code == 422 and "<code>review_at</code>" in bad.get_data(as_text=True)
    unknown = legal.post("/admin/holds", {**form, "subject_value": "C-404", "owner": "l", "review_at": "2030-01-01"})
    assert unknown.status_code == 404 and len(events(app, "hold.created")) == 2

    released = legal.post(f"/admin/holds/{hold_id}/release")
    assert released.status_code == 302 and released.headers["Location"].endswith("done=hold_released")
    assert f'data-hold="{hold_id}" data-status="released"' in legal.text("/admin/holds?status=released")
    assert len(events(app, "hold.released")) == 1
    assert legal.post(f"/admin/holds/{hold_id}/release").status_code == 409


def test_read_only_roles_get_the_403_page_on_actions_and_csrf_is_required(app, client, keys, as_role, orders) -> None:
    auditor = as_role("auditor")
    page = auditor.text("/admin/retention")
    assert 'data-rule="old_orders"' in page and "/admin/retention/rules/" not in page  # no action form
    holds_page = auditor.text("/admin/holds")
    assert 'data-status="active"' in holds_page and 'data-testid="hold-form"' not in holds_page
    hold_id = re.search(r'data-hold="([^"]+)"', holds_page).group(1)
    for path in (
        "/admin/retention/rules/old_orders/dry-run",
        "/admin/retention/rules/old_orders/execute",
        "/admin/retention/rules/old_orders/run-now",
        "/admin/retention/rules/old_orders/pause",
        "/admin/retention/runs/rrun_x/approve",
        "/admin/holds",
        f"/admin/holds/{hold_id}/release",
    ):
        response = auditor.post(path, {"scope": "dataset", "dataset": "vault", "basis": "abc", "owner": "a"})
        assert response.status_code == 403, path
        assert 'data-testid="error-403"' in response.get_data(as_text=True)
    assert as_role("compliance_officer").post(f"/admin/holds/{hold_id}/release").status_code == 403  # reads holds
    assert as_role("admin").get("/admin/holds").status_code == 403

    officer = as_role("compliance_officer")
    assert officer.post("/admin/retention/rules/old_orders/dry-run", csrf=False).status_code == 400
    assert events(app, "retention.dry_run") == []
    assert as_role("legal").post(f"/admin/holds/{hold_id}/release", csrf=False).status_code == 400
    assert events(app, "hold.released") == []


def test_the_pages_in_chinese(app, as_role, orders) -> None:
    dpo = as_role("dpo")
    assert dpo.post("/admin/preferences/language", {"language": "zh", "next": "/admin/"}).status_code == 302
    page = dpo.text("/admin/retention")
    assert "数据保留" in page and "试运行" in page and "运行记录" in page
    report = dpo.text(dpo.post("/admin/retention/rules/old_orders/dry-run").headers["Location"])
    assert "批准" in report and "法律保全" in report
    holds_page = dpo.text("/admin/holds")
    assert "法律保全" in holds_page and "设置法律保全" in holds_page and "生效" in holds_page
    assert "保留" in dpo.text("/admin/").split('data-testid="panel-retention"', 1)[1]


def test_next_run_is_shown_in_the_users_time_zone(app, as_role, orders) -> None:
    """The rule's cron schedule is UTC (04:00); its next run is shown in the reader's zone: 12:00 in Shanghai."""
    dpo = as_role("dpo")
    in_utc = re.search(r"next: ([^<]+)</small>", dpo.text("/admin/retention")).group(1)
    assert "4:00:00\u202fAM" in in_utc or "4:00:00 AM" in in_utc, in_utc
    saved = dpo.post("/admin/preferences", {"language": "en", "time_zone": "Asia/Shanghai"})
    assert saved.status_code == 302
    in_shanghai = re.search(r"next: ([^<]+)</small>", dpo.text("/admin/retention")).group(1)
    assert "12:00:00\u202fPM" in in_shanghai or "12:00:00 PM" in in_shanghai, in_shanghai


def test_holds_and_run_history_are_paged(app, as_role, orders, monkeypatch) -> None:
    """Long lists come in pages, newest first, each hold and run on exactly one page."""
    from govsvc.admin import retention_views

    monkeypatch.setattr(retention_views, "HOLDS_PAGE", 2)
    monkeypatch.setattr(retention_views, "HISTORY_SIZE", 2)
    legal = as_role("legal")
    category = {"scope": "category", "basis": "audit", "owner": "dpo", "review_at": "2099-01-01"}
    for name in ("user.financial", "user.contact", "user.behavior"):
        assert legal.post("/admin/holds", {**category, "categories": name}).status_code == 302
    seen: list[str] = []
    url = "/admin/holds?status=all"
    while url:
        page = legal.text(url)
        seen += re.findall(r'data-hold="([^"]+)"', page)
        found = re.search(r'href="([^"]+)" data-testid="holds-next"', page)
        url = found.group(1).replace("&amp;", "&") if found else None
    assert len(seen) == 4 and len(set(seen)) == 4  # the fixture's subject hold and the three category holds

    officer = as_role("compliance_officer")
    for _ in range(3):
        assert officer.post("/admin/retention/rules/old_orders/dry-run").status_code == 302
    runs: list[str] = []
    url = "/admin/retention"
    while url:
        page = officer.text(url)
        runs += re.findall(r'<tr data-run="([^"]+)"', page)
        found = re.search(r'href="([^"]+)" data-testid="runs-next"', page)
        url = found.group(1).replace("&amp;", "&") if found else None
    assert len(runs) == 3 and len(set(runs)) == 3
