"""Admin UI pages through the test client, on both databases: roles, forms, bad input, and what each change audits."""

from __future__ import annotations

import io
import json
import re

import pytest
from sqlalchemy import func, select

from audit.verify import verify_bundle
from govsvc.admin.models import AdminPreference
from govsvc.auth.models import ApiClient
from govsvc.consent.models import ConsentEvent
from govsvc.pii.models import MaskingVersion
from govsvc.policy.models import PolicyState
from govsvc.taxonomy.models import TaxonomyVersion
from tests.support.admin import AdminClient, events, role_clients
from tests.support.audit import drain

NOTICE = {"id": "privacy-notice", "version": "2026-11", "sha256": "b" * 64, "language": "zh-CN"}
PROFILE = {
    "name": "张伟",
    "email": "zhang.wei@example.cn",
    "mobile": "+8613812345678",
    "id_number": "11010519491231002X",
}


@pytest.fixture
def as_role(app):
    return role_clients(app)


@pytest.fixture
def subject_id(client, auth_headers) -> str:
    app_key = auth_headers("app")
    created = client.post(
        "/v1/subjects",
        json={"identifiers": [{"kind": "email", "value": PROFILE["email"]}], "jurisdictions": ["pipl"]},
        headers=app_key,
    )
    assert created.status_code == 201
    subject = created.get_json()["subject_id"]
    assert client.put(f"/v1/vault/subjects/{subject}/profile", json={"fields": PROFILE}, headers=app_key).status_code
    return subject


def _count(app, model) -> int:
    with app.extensions["govsvc.db"].transaction(write=False) as session:
        return int(session.scalar(select(func.count()).select_from(model)))


# -- roles -------------------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("role", "path", "status"),
    [
        ("auditor", "/admin/clients", 200),
        ("auditor", "/admin/policy", 200),
        ("auditor", "/admin/subjects", 403),
        ("auditor", "/admin/taxonomy/purposes/new", 403),
        ("legal", "/admin/policy", 403),
        ("legal", "/admin/subjects", 200),
        ("admin", "/admin/clients", 200),
        ("admin", "/admin/notices", 403),
        ("compliance_officer", "/admin/taxonomy/purposes/new", 200),
        ("compliance_officer", "/admin/clients", 403),
        ("dpo", "/admin/pii", 200),
        ("dpo", "/admin/policy", 200),
    ],
)
def test_pages_follow_the_roles(as_role, role: str, path: str, status: int) -> None:
    response = as_role(role).get(path)
    assert response.status_code == status
    if status == 403:
        text = response.get_data(as_text=True)
        assert 'data-testid="error-403"' in text and role in text


def test_the_menu_shows_what_the_role_may_open(as_role) -> None:
    auditor = as_role("auditor").text("/admin/")
    assert 'href="/admin/audit"' in auditor and 'href="/admin/clients"' in auditor
    assert 'href="/admin/subjects"' not in auditor
    legal = as_role("legal").text("/admin/")
    assert 'href="/admin/subjects"' in legal and 'href="/admin/policy"' not in legal


def test_a_refused_page_is_audited(app, as_role) -> None:
    as_role("auditor").post("/admin/clients", {"name": "x", "role": "app"})
    denied = events(app, "access.denied")
    assert denied[-1].object_ref == "clients:create" and denied[-1].actor_principal == "admin:auditor"
    assert _count(app, ApiClient) == 0


def test_a_form_without_its_csrf_token_saves_nothing(app, as_role) -> None:
    admin = as_role("admin")
    response = admin.post("/admin/clients", {"name": "crm", "role": "app"}, csrf=False)
    assert response.status_code == 400 and 'data-testid="error-400"' in response.get_data(as_text=True)
    assert _count(app, ApiClient) == 0


def test_an_unknown_admin_page_is_a_404_page(as_role) -> None:
    response = as_role("dpo").get("/admin/no/such/page")
    assert response.status_code == 404 and response.mimetype == "text/html"


# -- dashboard ---------------------------------------------------------------------------------------------------


def test_the_dashboard_shows_consent_trends_and_the_audit_checkpoint(app, client, auth_headers, as_role) -> None:
    headers = auth_headers("app")
    for email in ("a@example.com", "b@example.com"):
        subject = client.post(
            "/v1/subjects",
            json={"identifiers": [{"kind": "email", "value": email}], "jurisdictions": ["pipl"]},
            headers=headers,
        ).get_json()["subject_id"]
        act = {
            "subject": {"subject_id": subject},
            "items": [{"purpose": "marketing.communications.sms"}],
            "channel": "web",
        }
        given = client.post(
            "/v1/consents", headers=headers, json={**act, "event": "given", "consent_type": "express", "notice": NOTICE}
        )
        assert given.status_code == 201
    assert client.post("/v1/consents", headers=headers, json={**act, "event": "withdrawn"}).status_code == 201
    drain(app)
    page = as_role("dpo").text("/admin/")
    row = re.search(
        r"marketing\.communications\.sms</small></td>\s*<td class=\"num\">(\d+)</td>\s*"
        r"<td class=\"num\">(\d+)</td>",
        page,
    )
    assert row and row.groups() == ("2", "1")
    assert 'data-testid="checkpoint-size"' in page and "<rect" in page
    assert 'data-testid="panel-consent"' not in as_role("admin").text("/admin/")  # admins may not read consents


# -- subjects, consent and reveal --------------------------------------------------------------------------------


def test_search_finds_a_subject_by_any_identifier_without_putting_it_in_a_url(as_role, subject_id) -> None:
    dpo = as_role("dpo")
    found = dpo.post("/admin/subjects/search", {"value": "Zhang.Wei@Example.cn"})
    assert found.status_code == 200 and subject_id in found.get_data(as_text=True)
    assert subject_id in dpo.post("/admin/subjects/search", {"value": subject_id}).get_data(as_text=True)
    none = dpo.post("/admin/subjects/search", {"value": "nobody@example.com"})
    assert 'data-testid="subject-none"' in none.get_data(as_text=True)
    bad = dpo.post("/admin/subjects/search", {"value": "not a phone", "kind": "phone"})
    assert bad.status_code == 422 and "Invalid phone number." in bad.get_data(as_text=True)
    assert dpo.post("/admin/subjects/search", {"value": ""}).status_code == 422


def test_record_and_withdraw_a_consent(app, as_role, subject_id) -> None:
    dpo = as_role("dpo")
    form = {
        "event": "given",
        "purpose": "marketing.communications.email",
        "channel": "paper",
        "actor": "subject",
        "consent_type": "written",
        "notice_id": NOTICE["id"],
        "notice_version": NOTICE["version"],
        "notice_language": NOTICE["language"],
        "notice_sha256": NOTICE["sha256"],
        "evidence_ref": "form-2026-0042",
    }
    response = dpo.post(f"/admin/subjects/{subject_id}/consents", form)
    assert response.status_code == 302
    page = dpo.text(response.headers["Location"])
    assert 'data-testid="consent-recorded"' in page and 'data-status="given"' in page
    withdrawn = dpo.post(
        f"/admin/subjects/{subject_id}/consents",
        {"event": "withdrawn", "purpose": "marketing.communications.email", "channel": "paper"},
    )
    assert withdrawn.status_code == 302
    assert 'data-status="withdrawn"' in dpo.text(f"/admin/subjects/{subject_id}")
    recorded = events(app, "consent.withdrawn")
    assert recorded[-1].actor_principal == "admin:dpo" and recorded[-1].subject_ref == subject_id
    assert _count(app, ConsentEvent) == 2


@pytest.mark.parametrize(
    ("form", "status", "message"),
    [
        (
            {"event": "given", "purpose": "marketing.communications.email", "channel": "paper"},
            422,
            "This field is required.",
        ),
        (
            {
                "event": "given",
                "purpose": "marketing.communications.email",
                "channel": "paper",
                "consent_type": "written",
                "notice_id": "n",
                "notice_version": "1",
                "notice_language": "zh-CN",
                "notice_sha256": "nothex",
            },
            422,
            "64 hex digits",
        ),
        (
            {"event": "withdrawn", "purpose": "marketing.communications.email", "channel": "paper"},
            409,
            "nothing was given",
        ),
        ({"event": "withdrawn", "purpose": "no.such.purpose", "channel": "paper"}, 422, "unknown purpose"),
        (
            {"event": "maybe", "purpose": "marketing.communications.email", "channel": "paper"},
            422,
            "Choose what happened.",
        ),
    ],
)
def test_bad_consent_input_is_explained_and_saves_nothing(app, as_role, subject_id, form, status, message) -> None:
    response = as_role("dpo").post(f"/admin/subjects/{subject_id}/consents", form)
    assert response.status_code == status
    assert message in response.get_data(as_text=True)
    assert _count(app, ConsentEvent) == 0


def test_a_dpo_reveals_a_masked_field_with_a_justification_and_it_is_audited(app, as_role, subject_id) -> None:
    dpo = as_role("dpo")
    page = dpo.text(f"/admin/subjects/{subject_id}?purpose=essential.legal_obligation")
    assert PROFILE["id_number"] not in page  # L3: concealed until revealed
    assert "110***********002X" in page and 'data-testid="reveal-id_number"' in page
    refused = dpo.post(
        f"/admin/subjects/{subject_id}/reveal",
        {"field": "id_number", "purpose": "essential.legal_obligation", "justification": ""},
    )
    assert refused.status_code == 422 and PROFILE["id_number"] not in refused.get_data(as_text=True)
    pii = dpo.post(
        f"/admin/subjects/{subject_id}/reveal",
        {"field": "id_number", "purpose": "essential.legal_obligation", "justification": "13812345678"},
    )
    assert pii.status_code == 422  # a justification is kept in the audit log: no personal data in it
    assert events(app, "data.unmasked") == []
    revealed = dpo.post(
        f"/admin/subjects/{subject_id}/reveal",
        {
            "field": "id_number",
            "purpose": "essential.legal_obligation",
            "justification": "ticket SEC-42 identity check",
        },
    )
    assert revealed.status_code == 200 and PROFILE["id_number"] in revealed.get_data(as_text=True)
    unmasked = events(app, "data.unmasked")
    assert len(unmasked) == 1 and unmasked[0].subject_ref == subject_id
    details = json.loads(unmasked[0].details)
    assert details["fields"] == ["id_number"] and details["justification"] == "ticket SEC-42 identity check"
    partial = dpo.post(
        f"/admin/subjects/{subject_id}/reveal",
        {
            "field": "id_number",
            "purpose": "essential.legal_obligation",
            "justification": "ticket SEC-42 identity check",
        },
        headers={"HX-Request": "true"},
    )
    assert partial.get_data(as_text=True).strip().startswith("<mark")  # htmx swaps the value cell only


def test_a_compliance_officer_sees_the_mask_and_no_reveal(as_role, subject_id) -> None:
    page = as_role("compliance_officer").text(f"/admin/subjects/{subject_id}?purpose=essential.legal_obligation")
    assert "110***********002X" in page and "reveal-id_number" not in page
    assert "record-consent" not in page  # officers read consent; they do not record it


# -- purposes ----------------------------------------------------------------------------------------------------


def _purpose_form(**changes):
    form = {
        "creating": "yes",
        "key": "marketing.newsletter",
        "version": "1",
        "name_en": "Newsletter",
        "name_zh": "电子报",
        "optional": "yes",
        "basis_gdpr": "consent",
        "basis_pipl": "consent",
        "basis_ccpa": "notice",
        "data_categories": ["user.name", "user.contact.email"],
        "comment": "new newsletter",
    }
    form.update(changes)
    return form


def test_create_a_purpose_through_the_taxonomy_service(app, as_role) -> None:
    officer = as_role("compliance_officer")
    before = _count(app, TaxonomyVersion)
    response = officer.post("/admin/taxonomy/purposes", _purpose_form())
    assert response.status_code == 302
    page = officer.text(response.headers["Location"])
    assert 'data-testid="purpose-marketing.newsletter"' in page and "Newsletter" in page
    assert _count(app, TaxonomyVersion) == before + 1
    changed = events(app, "config.changed")[-1]
    assert changed.object_ref == "taxonomy:purpose:marketing.newsletter" and changed.actor_principal == (
        "admin:compliance-officer"
    )
    again = officer.post("/admin/taxonomy/purposes", _purpose_form())
    assert again.status_code == 409


@pytest.mark.parametrize(
    ("changes", "message"),
    [
        ({"optional": "no"}, "must be optional"),
        ({"name_zh": ""}, "This field is required."),
        ({"version": "x"}, "A whole number from 1."),
        ({"data_categories": []}, "Choose at least one data category."),
        ({"recipients": "{not: a list}"}, "A YAML list"),
        ({"key": "Bad Key"}, "dotted lower-case key"),
    ],
)
def test_bad_purpose_input_is_explained_and_saves_nothing(app, as_role, changes, message) -> None:
    before = _count(app, TaxonomyVersion)
    response = as_role("dpo").post("/admin/taxonomy/purposes", _purpose_form(**changes))
    assert response.status_code == 422
    assert message in response.get_data(as_text=True)
    assert _count(app, TaxonomyVersion) == before


def test_auditors_may_not_change_purposes(app, as_role) -> None:
    before = _count(app, TaxonomyVersion)
    assert as_role("auditor").post("/admin/taxonomy/purposes", _purpose_form()).status_code == 403
    assert _count(app, TaxonomyVersion) == before


def test_notices_list_what_consents_were_given_under(client, auth_headers, as_role, subject_id) -> None:
    given = client.post(
        "/v1/consents",
        headers=auth_headers("app"),
        json={
            "subject": {"subject_id": subject_id},
            "event": "given",
            "items": [{"purpose": "personalize.profiling"}],
            "consent_type": "express",
            "notice": NOTICE,
            "channel": "app",
        },
    )
    assert given.status_code == 201
    page = as_role("legal").text("/admin/notices")
    assert "privacy-notice" in page and "2026-11" in page and NOTICE["sha256"][:12] in page


# -- policy editor -----------------------------------------------------------------------------------------------


def _policy_text(ui: AdminClient) -> tuple[str, str]:
    page = ui.text("/admin/policy")
    text = re.search(r'data-testid="policy-text">(.*?)</textarea>', page, re.S).group(1)
    return text.replace("&#39;", "'"), page


def test_policy_changes_are_previewed_saved_applied_and_audited(app, as_role) -> None:
    admin = as_role("admin")
    legal = as_role("legal")
    assert legal.get("/admin/policy").status_code == 403
    text, _page = _policy_text(admin)
    proposed = text + "p, legal, policy, read\n"
    preview = admin.post("/admin/policy/rbac", {"step": "preview", "policy": proposed})
    body = preview.get_data(as_text=True)
    assert preview.status_code == 200 and "+ p, legal, policy, read" in body
    version_before = _count_version(app)
    base = re.search(r'name="base_digest" value="([0-9a-f]{64})"', body).group(1)
    saved = admin.post("/admin/policy/rbac", {"step": "save", "policy": proposed, "base_digest": base})
    assert saved.status_code == 302
    assert _count_version(app) == version_before + 1
    assert legal.get("/admin/policy").status_code == 200  # applies to the very next request
    change = events(app, "config.changed")[-1]
    assert change.object_ref == "policy:rbac" and json.loads(change.details)["lines_added"] == 1
    stale = admin.post("/admin/policy/rbac", {"step": "save", "policy": text, "base_digest": base})
    assert stale.status_code == 409  # someone saved since that preview


def _count_version(app) -> int:
    with app.extensions["govsvc.db"].transaction(write=False) as session:
        return int(session.scalar(select(PolicyState.version)))


@pytest.mark.parametrize(
    ("mutate", "message"),
    [
        (lambda text: text + "p, legal, policy\n", "p lines take 3 values"),
        (lambda text: text + "x, legal, policy, read\n", "unknown line type"),
        (
            lambda text: text.replace("p, admin, policy, write\n", "").replace(
                "p, compliance_officer, policy, write\n", ""
            ),
            "nobody could change the policy",
        ),
    ],
)
def test_an_invalid_policy_is_explained_and_nothing_changes(app, as_role, mutate, message) -> None:
    admin = as_role("admin")
    text, _page = _policy_text(admin)
    version = _count_version(app)
    for step in ("preview", "save"):
        response = admin.post("/admin/policy/rbac", {"step": step, "policy": mutate(text), "base_digest": "0" * 64})
        assert response.status_code == 422 and message in response.get_data(as_text=True)
    assert _count_version(app) == version


def test_masking_rules_are_edited_with_a_diff_and_apply_to_the_pii_api(app, client, auth_headers, as_role) -> None:
    officer = as_role("compliance_officer")
    page = officer.text("/admin/policy")
    current = re.search(r'data-testid="masking-text">(.*?)</textarea>', page, re.S).group(1)
    current = current.replace("&#34;", '"').replace("&#39;", "'").replace("&lt;", "<").replace("&gt;", ">")
    current = current.replace("&amp;", "&")
    proposed = current.replace("  partial: {default: mask}", "  partial: {default: mask, user.name: mask_all}")
    assert proposed != current
    preview = officer.post("/admin/policy/masking", {"step": "preview", "masking": proposed})
    body = preview.get_data(as_text=True)
    assert preview.status_code == 200 and "user.name: mask_all" in body and 'class="added"' in body
    bad = officer.post("/admin/policy/masking", {"step": "preview", "masking": proposed + "\nroles: [oops"})
    assert bad.status_code == 422 and "not valid YAML" in bad.get_data(as_text=True)
    unknown = officer.post(
        "/admin/policy/masking",
        {"step": "preview", "masking": proposed.replace("user.name: mask_all", "user.nope: mask")},
    )
    assert unknown.status_code == 422 and "not a data category" in unknown.get_data(as_text=True)
    base = re.search(r'name="base_digest" value="([0-9a-f]{64})"', body).group(1)
    agent = auth_headers("support_agent")
    note = {"text": "客户王秀英来电"}
    assert client.post("/v1/pii/anonymize", json=note, headers=agent).get_json()["results"][0]["text"] == "客户王**来电"
    saved = officer.post(
        "/admin/policy/masking",
        {"step": "save", "masking": proposed, "base_digest": base, "comment": "names fully masked for agents"},
    )
    assert saved.status_code == 302
    assert _count(app, MaskingVersion) == 2
    assert client.post("/v1/pii/anonymize", json=note, headers=agent).get_json()["results"][0]["text"] == "客户***来电"
    assert events(app, "config.changed")[-1].object_ref == "policy:masking"


def test_a_second_instance_applies_saved_masking_rules(app_factory, auth_headers, as_role) -> None:
    second = app_factory()
    agent = auth_headers("support_agent")
    note = {"text": "客户王秀英来电"}
    assert second.test_client().post("/v1/pii/anonymize", json=note, headers=agent).status_code == 200
    officer = as_role("compliance_officer")
    page = officer.text("/admin/policy")
    assert 'name="base_digest"' not in page  # no preview yet, so no save form
    with second.extensions["govsvc.db"].transaction(write=False) as session:
        current = session.scalar(select(MaskingVersion.document).order_by(MaskingVersion.version.desc()).limit(1))
    proposed = current.replace("  partial: {default: mask}", "  partial: {default: mask, user.name: redact}")
    from govsvc.pii.service import masking_digest

    saved = officer.post(
        "/admin/policy/masking", {"step": "save", "masking": proposed, "base_digest": masking_digest(current)}
    )
    assert saved.status_code == 302
    masked = second.test_client().post("/v1/pii/anonymize", json=note, headers=agent).get_json()
    assert masked["results"][0]["text"] == "客户来电"


# -- audit -------------------------------------------------------------------------------------------------------


def test_audit_search_export_and_verify(app, as_role, subject_id) -> None:
    auditor = as_role("auditor")
    drain(app)
    page = auditor.text("/admin/audit?action=subject.*")
    assert 'data-action="subject.created"' in page and 'data-action="admin.signed_in"' not in page
    assert auditor.get("/admin/audit?action=Not+Valid").status_code == 422
    assert auditor.get("/admin/audit?time_from=yesterday").status_code == 422
    bundle = auditor.get("/admin/audit/export?format=jsonl")
    assert bundle.status_code == 200 and bundle.mimetype == "application/jsonl"
    report = verify_bundle(io.BytesIO(bundle.data))
    assert report.ok and report.event_count > 0
    csv = auditor.get("/admin/audit/export?format=csv&action=subject.*")
    assert csv.mimetype == "text/csv" and "subject.created" in csv.get_data(as_text=True)
    assert [json.loads(e.details)["format"] for e in events(app, "audit.exported")] == ["jsonl", "csv"]
    verified = auditor.get("/admin/audit/verify")
    assert verified.status_code == 200 and 'data-testid="verify-result"' in verified.get_data(as_text=True)
    assert "Verified" in verified.get_data(as_text=True)
    assert events(app, "audit.verified")[-1].outcome == "success"
    assert as_role("legal").get("/admin/audit/verify").status_code == 403


# -- PII playground ----------------------------------------------------------------------------------------------


def test_the_pii_playground_highlights_and_masks(app, as_role) -> None:
    officer = as_role("compliance_officer")
    text = "客户王秀英来电，手机138 1234 5678，邮箱wangxy@163.com"
    response = officer.post("/admin/pii", {"text": text})
    body = response.get_data(as_text=True)
    assert response.status_code == 200
    assert 'data-entity="CN_MOBILE"' in body and 'data-entity="EMAIL_ADDRESS"' in body
    assert "138 **** 5678" in body and "w***@163.com" in body
    audited = events(app, "pii.anonymized")[-1]
    assert "wangxy" not in (audited.details or "") and "138" not in (audited.details or "")
    auditor = as_role("auditor").post("/admin/pii", {"text": text}).get_data(as_text=True)
    assert 'data-entity="CN_MOBILE"' in auditor and 'data-testid="pii-masked"' not in auditor  # analyse only
    assert officer.post("/admin/pii", {"text": "   "}).status_code == 422


# -- API clients -------------------------------------------------------------------------------------------------


def test_create_a_client_shows_its_key_once_and_revoke_it(app, client, as_role) -> None:
    admin = as_role("admin")
    created = admin.post("/admin/clients", {"name": "crm-backend", "role": "app"})
    assert created.status_code == 201
    key = re.search(r'data-testid="api-key">(gsk_[a-z2-7]{8}_[A-Za-z0-9]{43})<', created.get_data(as_text=True))
    assert key, "the key is shown"
    assert client.get("/v1/me", headers={"Authorization": f"Bearer {key.group(1)}"}).status_code == 200
    listing = admin.text("/admin/clients")
    assert "crm-backend" in listing and key.group(1) not in listing  # shown once only
    client_id = re.search(r'data-testid="client-(cl_[a-z2-7]{16})"', listing).group(1)
    revoked = admin.post(f"/admin/clients/{client_id}/revoke")
    assert revoked.status_code == 302
    assert client.get("/v1/me", headers={"Authorization": f"Bearer {key.group(1)}"}).status_code == 401
    assert admin.post(f"/admin/clients/{client_id}/revoke").status_code == 409
    assert [e.object_ref for e in events(app, "credential.revoked")] == [f"client:{client_id}"]


@pytest.mark.parametrize(("name", "role", "message"), [("", "app", "1-200 characters"), ("x", "root", "unknown role")])
def test_bad_client_input_creates_nothing(app, as_role, name, role, message) -> None:
    response = as_role("admin").post("/admin/clients", {"name": name, "role": role})
    assert response.status_code == 422 and message in response.get_data(as_text=True)
    assert _count(app, ApiClient) == 0


# -- languages and time zones -----------------------------------------------------------------------------------


def test_switch_language_per_user(app, as_role) -> None:
    dpo = as_role("dpo")
    assert "Dashboard" in dpo.text("/admin/")
    switched = dpo.post("/admin/preferences/language", {"language": "zh", "next": "/admin/subjects"})
    assert switched.status_code == 302 and switched.headers["Location"] == "/admin/subjects"
    assert "数据主体" in dpo.text("/admin/subjects") and "仪表板" in dpo.text("/admin/")
    fresh = AdminClient(app)  # the choice is the user's, not the browser's
    fresh.sign_in("dpo")
    assert "仪表板" in fresh.text("/admin/")
    assert "Dashboard" in as_role("auditor").text("/admin/")
    assert dpo.post("/admin/preferences/language", {"language": "fr"}).status_code == 422


def test_the_sign_in_page_follows_the_browser_or_the_chosen_language(app) -> None:
    client = app.test_client()
    assert "登录" in client.get("/admin/login", headers={"Accept-Language": "zh-CN,zh;q=0.9"}).get_data(as_text=True)
    assert "Sign in" in client.get("/admin/login?lang=en").get_data(as_text=True)
    assert "Sign in" in client.get("/admin/login", headers={"Accept-Language": "zh-CN"}).get_data(as_text=True)


def test_dates_are_shown_in_the_users_time_zone(app, as_role, subject_id, client, auth_headers) -> None:
    given = client.post(
        "/v1/consents",
        headers=auth_headers("app"),
        json={
            "subject": {"subject_id": subject_id},
            "event": "given",
            "items": [{"purpose": "personalize.profiling"}],
            "consent_type": "express",
            "notice": NOTICE,
            "channel": "app",
        },
    ).get_json()
    recorded = given["events"][0]["recorded_at"]
    dpo = as_role("dpo")
    saved = dpo.post("/admin/preferences", {"language": "en", "time_zone": "Asia/Shanghai"})
    assert saved.status_code == 302
    page = dpo.text(f"/admin/subjects/{subject_id}")
    from datetime import datetime
    from zoneinfo import ZoneInfo

    local = datetime.fromisoformat(recorded).astimezone(ZoneInfo("Asia/Shanghai"))
    assert local.strftime("%-I:%M:%S") in page and "Times are shown in Asia/Shanghai." in page
    bad = dpo.post("/admin/preferences", {"language": "en", "time_zone": "Mars/Olympus"})
    assert bad.status_code == 422 and "IANA" in bad.get_data(as_text=True)
    with app.extensions["govsvc.db"].transaction(write=False) as session:
        assert session.get(AdminPreference, "dpo").time_zone == "Asia/Shanghai"


def test_every_ui_string_has_a_chinese_translation() -> None:
    from babel.messages.extract import extract_from_dir
    from babel.messages.pofile import read_po

    from govsvc.admin.web import TRANSLATIONS

    method_map = [("**.py", "python"), ("**/templates/**.html", "jinja2")]
    keywords = {"_": None, "gettext": None, "lazy_gettext": None}
    extracted = {
        message[2]
        for message in extract_from_dir(str(TRANSLATIONS.parent), method_map, keywords=keywords)
        if isinstance(message[2], str)
    }
    with open(TRANSLATIONS / "zh_Hans_CN" / "LC_MESSAGES" / "messages.po", "rb") as handle:
        catalog = read_po(handle)
    translated = {message.id for message in catalog if message.id and message.string}
    assert extracted, "nothing extracted"
    assert extracted <= translated, sorted(extracted - translated)
