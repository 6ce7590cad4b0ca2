"""The admin UI in a real browser: Debian's Chromium, headless, driven by Playwright, against the service running
under gunicorn on 127.0.0.1 (on each database). Screenshots go to ``test-artifacts/screenshots/<backend>/``.

Never skipped: without Chromium (``make chromium`` installs it) or Playwright the run fails.
"""

from __future__ import annotations

import io
import json
import re
import shutil
import time
import zipfile
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
from playwright.sync_api import expect

from audit.verify import verify_bundle
from govsvc.config import PROJECT_ROOT
from tests.conftest import KNOWN_ROLES, TEST_AUDIT_ORIGIN, TEST_SECRET_KEY, Template
from tests.support.browser import CHROMIUM, NOTICE, PASSWORD, PROFILE, chromium, seed_subject, seed_users
from tests.support.server import GunicornServer, http

ARTIFACTS = PROJECT_ROOT / "test-artifacts" / "screenshots"

if not CHROMIUM.exists():
    pytest.fail(f"Chromium is missing at {CHROMIUM}: run `make chromium` (the browser tests are never skipped)")


@dataclass
class Live:
    url: str
    subject_id: str
    shots: Path
    app_key: str


@pytest.fixture(scope="module")
def live(
    db_template: Template, tmp_path_factory: pytest.TempPathFactory, request: pytest.FixtureRequest
) -> Iterator[Live]:
    """The service under gunicorn on its own copy of the seeded database, with an admin user per role."""
    workdir = tmp_path_factory.mktemp(f"browser-{db_template.backend}")
    if db_template.backend == "sqlite":
        assert db_template.path is not None
        shutil.copyfile(db_template.path, workdir / "govsvc.db")
        url = f"sqlite:///{workdir / 'govsvc.db'}"
    else:
        cluster = request.getfixturevalue("postgres_cluster")
        cluster.admin_execute("CREATE DATABASE govsvc_browser TEMPLATE govsvc_template")
        url = cluster.url("govsvc_browser")
    keys = seed_users(url, KNOWN_ROLES)
    env = {
        "GOVSVC_ENV": "testing",
        "GOVSVC_DATABASE_URL": url,
        "GOVSVC_SECRET_KEY": TEST_SECRET_KEY,
        "GOVSVC_INSTANCE_DIR": str(workdir),
        "GOVSVC_AUDIT_ORIGIN": TEST_AUDIT_ORIGIN,
        "GOVSVC_AUDIT_CHECKPOINT_SECONDS": "1",
        "GOVSVC_PII_NLP": "pattern",
    }
    shots = ARTIFACTS / db_template.backend
    shutil.rmtree(shots, ignore_errors=True)
    shots.mkdir(parents=True)
    with GunicornServer(env, log_path=workdir / "gunicorn.log") as server:
        yield Live(server.url, seed_subject(server.url, keys["app_key"]), shots, keys["app_key"])
    if db_template.backend == "postgresql":
        request.getfixturevalue("postgres_cluster").admin_execute("DROP DATABASE govsvc_browser WITH (FORCE)")


@pytest.fixture(scope="module")
def browser() -> Iterator[Any]:
    with chromium() as launched:
        yield launched


@pytest.fixture
def page(browser: Any) -> Iterator[Any]:
    context = browser.new_context(viewport={"width": 1280, "height": 900}, locale="en-GB", accept_downloads=True)
    context.set_default_timeout(15_000)
    opened = context.new_page()
    yield opened
    context.close()


def sign_in(page: Any, live: Live, username: str, *, lang: str = "en") -> None:
    response = page.goto(f"{live.url}/admin/login?lang={lang}")
    assert response.status == 200
    page.fill("input[name=username]", username)
    page.fill("input[name=password]", PASSWORD)
    with page.expect_navigation():
        page.click("form button[type=submit]")
    assert page.url.endswith("/admin/"), page.url


def shot(page: Any, live: Live, name: str) -> None:
    page.screenshot(path=str(live.shots / f"{name}.png"), full_page=True)


def goto(page: Any, live: Live, path: str, status: int = 200) -> None:
    response = page.goto(live.url + path)
    assert response.status == status, (path, response.status)


def test_sign_in_and_see_the_dashboard(page, live) -> None:
    goto(page, live, "/admin/")
    assert "/admin/login" in page.url  # not signed in: the sign-in page
    shot(page, live, "login-en")
    page.fill("input[name=username]", "dpo")
    page.fill("input[name=password]", "wrong password here")
    page.click("form button[type=submit]")
    assert page.get_by_test_id("login-error").inner_text() == "Invalid username or password."
    sign_in(page, live, "dpo")
    expect(page.get_by_test_id("panel-consent")).to_be_visible()
    expect(page.get_by_test_id("panel-audit")).to_be_visible()
    assert "marketing.communications.email" in page.get_by_test_id("consent-table").inner_text()
    shot(page, live, "dashboard-en")


def test_create_a_purpose(page, live) -> None:
    sign_in(page, live, "compliance-officer")
    page.click("text=Purposes")
    page.get_by_test_id("new-purpose").click()
    form = page.get_by_test_id("purpose-form")
    form.locator("input[name=key]").fill("marketing.newsletter")
    form.locator("input[name=name_en]").fill("Monthly newsletter")
    form.locator("input[name=name_zh]").fill("每月电子报")
    form.locator("select[name=basis_gdpr]").select_option("contract")  # a consent basis needs "optional" kept
    form.locator("select[name=basis_pipl]").select_option("consent")
    form.locator("select[name=basis_ccpa]").select_option("notice")
    form.locator("input[name=data_categories][value='user.contact.email']").check()
    form.locator("input[name=data_categories][value='user.name']").check()
    form.locator("input[name=optional]").uncheck()
    with page.expect_response(lambda r: r.url.endswith("/admin/taxonomy/purposes")) as answer:
        form.locator("button[type=submit]").click()
    assert answer.value.status == 422  # PIPL consent basis on a non-optional purpose
    assert "must be optional" in page.get_by_test_id("form-errors").inner_text()
    shot(page, live, "purpose-form-error-en")
    form.locator("input[name=optional]").check()
    form.locator("input[name=comment]").fill("newsletter launch")
    with page.expect_navigation():
        form.locator("button[type=submit]").click()
    expect(page.get_by_test_id("taxonomy-saved")).to_be_visible()
    row = page.get_by_test_id("purpose-marketing.newsletter")
    assert "Monthly newsletter" in row.inner_text()
    assert "newsletter launch" in page.get_by_test_id("taxonomy-history").inner_text()
    shot(page, live, "taxonomy-en")


def test_record_and_withdraw_a_consent(page, live) -> None:
    sign_in(page, live, "dpo")
    page.click("text=Subjects")
    page.get_by_test_id("subject-search").fill(PROFILE["email"].upper())
    page.click("form.search button[type=submit]")
    page.get_by_test_id("subject-results").locator(f"text={live.subject_id}").click()  # results came by htmx
    page.wait_for_url(f"**/admin/subjects/{live.subject_id}")
    form = page.get_by_test_id("consent-form")
    form.locator("select[name=event]").select_option("given")
    form.locator("select[name=purpose]").select_option("marketing.communications.sms")
    form.locator("select[name=channel]").select_option("paper")
    form.locator("select[name=consent_type]").select_option("written")
    form.locator("input[name=notice_id]").fill(NOTICE["id"])
    form.locator("input[name=notice_version]").fill(NOTICE["version"])
    form.locator("input[name=notice_language]").fill(NOTICE["language"])
    form.locator("input[name=notice_sha256]").fill(NOTICE["sha256"])
    with page.expect_navigation():
        form.locator("button[type=submit]").click()
    expect(page.get_by_test_id("consent-recorded")).to_be_visible()
    state = page.get_by_test_id("state-marketing.communications.sms")
    assert state.locator("[data-status]").get_attribute("data-status") == "given"
    form = page.get_by_test_id("consent-form")
    form.locator("select[name=event]").select_option("withdrawn")
    form.locator("select[name=purpose]").select_option("marketing.communications.sms")
    form.locator("select[name=channel]").select_option("call_centre")
    with page.expect_navigation():
        form.locator("button[type=submit]").click()
    state = page.get_by_test_id("state-marketing.communications.sms")
    assert state.locator("[data-status]").get_attribute("data-status") == "withdrawn"
    timeline = page.get_by_test_id("timeline").inner_text()
    assert timeline.count("marketing.communications.sms") == 2
    shot(page, live, "subject-en")


def test_export_and_verify_an_audit_bundle(page, live, tmp_path: Path) -> None:
    sign_in(page, live, "auditor")
    page.click("text=Audit log")
    page.get_by_test_id("audit-action").fill("subject.*")
    deadline = time.monotonic() + 20  # events are sequenced within a second or two
    while True:
        page.get_by_test_id("audit-search").click()
        page.wait_for_load_state("networkidle")
        if page.get_by_test_id("audit-table").count() or time.monotonic() > deadline:
            break
        time.sleep(0.5)
    assert "subject.created" in page.get_by_test_id("audit-table").inner_text()
    assert "action=subject" in page.url  # htmx pushed the filters into the address: the search is shareable
    with page.expect_download() as download:
        page.get_by_test_id("export-jsonl").click()
    bundle = tmp_path / "bundle.jsonl"
    download.value.save_as(bundle)
    report = verify_bundle(io.BytesIO(bundle.read_bytes()))
    assert report.ok and report.event_count >= 1, report.findings
    with page.expect_download() as csv_download:
        page.get_by_test_id("export-csv").click()
    assert csv_download.value.suggested_filename.endswith(".csv")
    with page.expect_response(lambda r: "/admin/audit/verify" in r.url) as answer:
        page.get_by_test_id("verify").click()
    assert answer.value.status == 200
    result = page.get_by_test_id("verify-result")
    result.wait_for()
    assert result.inner_text().startswith("Verified")
    shot(page, live, "audit-en")


def test_reveal_a_masked_field_as_a_dpo_and_find_the_audit_entry(page, live) -> None:
    sign_in(page, live, "dpo")
    goto(page, live, f"/admin/subjects/{live.subject_id}?purpose=essential.legal_obligation")
    value = page.get_by_test_id("value-id_number")
    assert value.inner_text().strip() == "110***********002X"
    page.get_by_test_id("reveal-id_number").locator("summary").click()
    page.get_by_test_id("justification-id_number").fill("ticket SEC-42 identity check")
    with page.expect_response(lambda r: r.url.endswith("/reveal")) as answer:
        page.get_by_test_id("reveal-id_number").locator("button[type=submit]").click()
    assert answer.value.status == 200
    page.get_by_test_id("revealed-id_number").wait_for()
    assert value.inner_text().strip() == PROFILE["id_number"]
    shot(page, live, "reveal-en")
    deadline = time.monotonic() + 20
    while True:
        goto(page, live, f"/admin/audit?action=data.unmasked&subject={live.subject_id}")
        rows = page.locator("[data-testid=audit-row][data-action='data.unmasked']")
        if rows.count() or time.monotonic() > deadline:
            break
        time.sleep(0.5)
    entry = rows.first.inner_text()
    assert "admin:dpo" in entry and "ticket SEC-42 identity check" in entry and "id_number" in entry
    assert PROFILE["id_number"] not in page.content()  # the audit entry holds the reason, never the value


def test_an_auditor_is_refused(page, live) -> None:
    sign_in(page, live, "auditor")
    menu = page.locator("header .menu").inner_text()
    assert "Subjects" not in menu and "Audit log" in menu
    goto(page, live, f"/admin/subjects/{live.subject_id}", status=403)
    expect(page.get_by_test_id("error-403")).to_be_visible()
    assert "auditor" in page.get_by_test_id("error-403").inner_text()
    shot(page, live, "forbidden-en")
    goto(page, live, "/admin/policy")
    assert page.get_by_test_id("policy-text").get_attribute("readonly") is not None
    assert page.get_by_test_id("policy-preview").count() == 0  # read-only: no way to change it


MAIN_PAGES = [
    ("dashboard", "/admin/"),
    ("subject", "/admin/subjects/{subject}?purpose=essential.legal_obligation"),
    ("taxonomy", "/admin/taxonomy"),
    ("policy", "/admin/policy"),
    ("audit", "/admin/audit"),
    ("clients", "/admin/clients"),
    ("notices", "/admin/notices"),
]


def test_switch_language_and_screenshot_the_main_pages(page, live) -> None:
    goto(page, live, "/admin/login?lang=zh")
    assert page.locator("h1").inner_text() == "登录"
    shot(page, live, "login-zh")
    sign_in(page, live, "admin", lang="en")
    assert page.locator("h1").inner_text() == "Dashboard"
    with page.expect_navigation():
        page.get_by_test_id("lang-zh").click()
    assert page.locator("h1").inner_text() == "仪表板"
    assert page.locator("html").get_attribute("lang") == "zh-Hans"
    for name, path in MAIN_PAGES[:1] + MAIN_PAGES[2:]:  # the admin role may not read profiles
        goto(page, live, path.format(subject=live.subject_id), status=403 if name == "notices" else 200)
        shot(page, live, f"{name}-zh")
    goto(page, live, "/admin/")
    with page.expect_navigation():
        page.get_by_test_id("lang-en").click()
    assert page.locator("h1").inner_text() == "Dashboard"
    for name, path in MAIN_PAGES:
        if name in ("clients", "dashboard"):
            goto(page, live, path)
            shot(page, live, f"{name}-en")


def test_main_pages_of_a_dpo_in_both_languages(page, live) -> None:
    sign_in(page, live, "dpo", lang="zh")
    for language in ("zh", "en"):
        with page.expect_navigation():
            page.get_by_test_id(f"lang-{language}").click()
        for name, path in [*MAIN_PAGES[:2], ("notices", "/admin/notices"), ("pii", "/admin/pii")]:
            goto(page, live, path.format(subject=live.subject_id))
            if name == "pii":
                page.get_by_test_id("pii-text").fill(
                    "客户王秀英来电，手机138 1234 5678，邮箱wangxy@163.com，身份证11010519491231002X"
                )
                page.get_by_test_id("pii-analyze").click()
                page.get_by_test_id("pii-result").wait_for()
                assert page.locator("mark[data-entity=CN_MOBILE]").count() == 1
                assert "138 **** 5678" in page.get_by_test_id("pii-masked").inner_text()
            shot(page, live, f"dpo-{name}-{language}")
    heading = re.sub(r"\s+", " ", page.locator("h1").inner_text())
    assert heading == "PII playground"


def _dsr_subject(live: Live, number: int) -> tuple[str, str, str]:
    """A subject known by e-mail and phone, registered through the API."""
    email, phone = f"dsr.{number}@example.cn", f"+86139{number:04d}5678"
    headers = {"Authorization": f"Bearer {live.app_key}"}
    body = {
        "identifiers": [{"kind": "email", "value": email}, {"kind": "phone", "value": phone}],
        "jurisdictions": ["pipl"],
    }
    created = http("POST", live.url + "/v1/subjects", body=body, headers=headers)
    assert created.status == 201, created.body
    subject = created.json()["subject_id"]
    profile = {"name": "韩梅梅", "email": email, "mobile": phone}
    stored = http("PUT", live.url + f"/v1/vault/subjects/{subject}/profile", body={"fields": profile}, headers=headers)
    assert stored.status == 200, stored.body
    return subject, email, phone


def _dsr_intake(live: Live, subject: str, language: str = "en") -> str:
    """An access request about ``subject`` received through the API (as a privacy portal sends it)."""
    headers = {"Authorization": f"Bearer {live.app_key}"}
    request = {"type": "access", "subject": {"subject_id": subject}, "channel": "web", "language": language}
    received = http("POST", live.url + "/v1/dsr/requests", body=request, headers=headers)
    assert received.status == 201, received.body
    return received.json()["request_id"]


def _no_horizontal_scroll(page: Any) -> bool:
    return page.evaluate("document.documentElement.scrollWidth <= window.innerWidth + 1")


@pytest.mark.parametrize(("language", "javascript"), [("en", True), ("zh", False)])
def test_work_a_dsr_from_intake_to_a_downloaded_export(browser, live, tmp_path: Path, language, javascript) -> None:
    """Intake (in English through the API, in Chinese on the UI's form for a request received by phone), then as a
    compliance officer: the dashboard's panel, the queue, the request, verification with two data points,
    assignment, completion, the one-time export download and the completion letter. In Chinese the browser runs
    with JavaScript disabled: every step is a plain form."""
    subject, email, phone = _dsr_subject(live, 1 if language == "en" else 2)
    request_id = _dsr_intake(live, subject, language) if language == "en" else None
    context = browser.new_context(
        viewport={"width": 1280, "height": 900}, locale="en-GB", accept_downloads=True, java_script_enabled=javascript
    )
    context.set_default_timeout(15_000)
    page = context.new_page()
    try:
        sign_in(page, live, "compliance-officer", lang=language)
        with page.expect_navigation():
            page.get_by_test_id(f"lang-{language}").click()
        if request_id is None:  # received by phone: recorded on the UI's form
            goto(page, live, "/admin/requests/new")
            form = page.get_by_test_id("dsr-new-form")
            form.locator("select[name=type]").select_option("access")
            form.locator("select[name=channel]").select_option("call_centre")
            form.locator("select[name=language]").select_option(language)
            form.locator("select[name=subject_kind]").select_option("phone")
            form.locator("input[name=subject_value]").fill(phone)
            shot(page, live, f"dsr-new-{language}")
            with page.expect_navigation():
                page.get_by_test_id("dsr-new-button").click()
            assert page.get_by_test_id("dsr-done").get_attribute("data-done") == "received"
            request_id = page.get_by_test_id("dsr-id").inner_text()
            assert subject in page.get_by_test_id("dsr-facts").inner_text()
            goto(page, live, "/admin/")
        panel = page.get_by_test_id("panel-dsr")
        expect(panel).to_be_visible()
        assert int(panel.get_by_test_id("dsr-open-count").inner_text()) >= 1
        assert request_id in panel.get_by_test_id("dsr-next-due").inner_text()
        shot(page, live, f"dsr-dashboard-{language}")
        with page.expect_navigation():
            page.locator("header .menu a[href='/admin/requests']").click()
        row = page.locator(f"[data-testid=dsr-row][data-request='{request_id}']")
        assert row.get_attribute("data-status") == "pending_verification"
        assert row.locator("[data-countdown]").get_attribute("data-countdown") in ("ok", "soon", "today")
        shot(page, live, f"dsr-queue-{language}")
        with page.expect_navigation():
            row.locator("a").first.click()
        assert page.get_by_test_id("dsr-id").inner_text() == request_id
        shot(page, live, f"dsr-detail-{language}")

        form = page.get_by_test_id("dsr-verify-form")
        form.locator("select[name=point_kind_0]").select_option("email")
        form.locator("input[name=point_value_0]").fill(email.upper())
        form.locator("select[name=point_kind_1]").select_option("phone")
        form.locator("input[name=point_value_1]").fill(phone)
        with page.expect_navigation():
            page.get_by_test_id("dsr-verify-button").click()
        assert page.get_by_test_id("dsr-done").get_attribute("data-done") == "verified"
        assert email not in page.content() and phone not in page.content()  # evidence is never shown back

        with page.expect_navigation():
            page.get_by_test_id("dsr-assign-button").click()
        assert page.get_by_test_id("dsr-assignee").inner_text() == "compliance-officer"

        with page.expect_navigation():
            page.get_by_test_id("dsr-complete-button").click()
        expect(page.get_by_test_id("dsr-download")).to_be_visible()
        assert "/v1/dsr/downloads/exp_" in page.get_by_test_id("dsr-download-link").inner_text()
        shot(page, live, f"dsr-completed-{language}")
        with page.expect_download() as download:
            page.get_by_test_id("dsr-download-button").click()
        bundle = tmp_path / "bundle.zip"
        download.value.save_as(bundle)
        archive = zipfile.ZipFile(bundle)
        assert json.loads(archive.read("manifest.json"))["request_id"] == request_id
        vault = json.loads(archive.read("data/vault.json"))
        assert any(r["fields"].get("value") == email for r in vault["records"])

        goto(page, live, f"/admin/requests/{request_id}")
        timeline = page.get_by_test_id("dsr-timeline")
        steps = [item.get_attribute("data-to") for item in timeline.locator("li[data-kind=status]").all()]
        assert steps == ["completed", "in_progress", "verified", "pending_verification"]
        assert page.get_by_test_id("dsr-run-vault").count() == 1
        shot(page, live, f"dsr-timeline-{language}")
        with page.expect_navigation():
            page.get_by_test_id("dsr-letters").locator("[data-letter=completed]").click()
        assert request_id in page.get_by_test_id("dsr-letter").inner_text()
        assert page.get_by_test_id("dsr-letter").get_attribute("lang") == ("zh-Hans" if language == "zh" else "en")
        shot(page, live, f"dsr-letter-{language}")

        page.set_viewport_size({"width": 390, "height": 844})  # a phone
        for name, path in [
            ("detail", f"/admin/requests/{request_id}"),
            ("queue", "/admin/requests?status=all"),
            ("dashboard", "/admin/"),
        ]:
            goto(page, live, path)
            assert _no_horizontal_scroll(page), path
            shot(page, live, f"dsr-mobile-{name}-{language}")
    finally:
        context.close()


def test_an_auditor_reads_a_request_without_actions(page, live) -> None:
    request_id = _dsr_intake(live, _dsr_subject(live, 3)[0])
    sign_in(page, live, "auditor")
    goto(page, live, f"/admin/requests/{request_id}")
    assert page.get_by_test_id("dsr-timeline").locator("li").count() >= 1
    assert page.locator("main form").count() == 0  # read-only
    shot(page, live, "dsr-auditor-en")


def test_preview_approve_and_execute_a_retention_rule_and_place_a_hold(page, live) -> None:
    """A compliance officer previews a rule, approves the dry run and executes it; legal places a hold on the
    subject and releases it. Every step is a plain form, followed in the browser."""
    sign_in(page, live, "compliance-officer")
    goto(page, live, "/admin/retention")
    rule = "expired_api_keys"
    expect(page.locator(f'tr[data-rule="{rule}"]')).to_be_visible()
    assert page.get_by_test_id(f"execute-form-{rule}").count() == 0  # no approved dry run yet
    with page.expect_navigation():
        page.get_by_test_id(f"dry-run-form-{rule}").locator("button").click()
    expect(page.get_by_test_id("run-report")).to_be_visible()
    run_id = page.get_by_test_id("run-id").inner_text().strip()
    assert re.fullmatch(r"rrun_[0-9a-f]{16}", run_id), run_id
    assert page.get_by_test_id("run-rows").first.inner_text().strip().isdigit()
    shot(page, live, "retention-dry-run-en")
    with page.expect_navigation():
        page.get_by_test_id("approve-form").locator("button").click()
    expect(page.get_by_test_id("run-approved")).to_be_visible()
    with page.expect_navigation():
        page.get_by_test_id("execute-form").locator("button").click()
    assert "done=executed" in page.url, page.url
    goto(page, live, "/admin/retention")
    history = page.get_by_test_id("retention-history")
    expect(history.locator('tr[data-mode="execute"]').first).to_be_visible()
    assert page.get_by_test_id(f"execute-form-{rule}").count() == 0  # the dry run was used
    shot(page, live, "retention-history-en")

    page.context.clear_cookies()
    sign_in(page, live, "legal")
    goto(page, live, "/admin/holds")
    form = page.get_by_test_id("hold-form")
    form.locator('input[name="scope"][value="subject"]').check()
    form.locator('select[name="subject_kind"]').select_option("subject_id")
    form.locator('input[name="subject_value"]').fill(live.subject_id)
    form.locator('input[name="basis"]').fill("case 2026-77, litigation")
    form.locator('input[name="owner"]').fill("legal team")
    form.locator('input[name="review_at"]').fill("2099-01-31")
    with page.expect_navigation():
        page.get_by_test_id("hold-submit").click()
    expect(page.get_by_test_id("holds-done")).to_be_visible()
    row = page.locator('tr[data-status="active"]').filter(has_text="case 2026-77")
    expect(row).to_have_count(1)
    hold_id = row.get_attribute("data-hold")
    shot(page, live, "holds-en")
    with page.expect_navigation():
        page.get_by_test_id(f"release-form-{hold_id}").locator("button").click()
    goto(page, live, "/admin/holds?status=released")
    expect(page.locator(f'tr[data-hold="{hold_id}"][data-status="released"]')).to_have_count(1)
