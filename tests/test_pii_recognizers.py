"""PII recognizers, engines and masking, with real Presidio and jieba (no database, no HTTP)."""

from __future__ import annotations

import random
from pathlib import Path

import pytest

import govsvc.pii.engines as engines_module
from govsvc.config import PROJECT_ROOT
from govsvc.pii.checksums import luhn_valid, resident_id_check_char, resident_id_valid, uscc_check_char, uscc_valid
from govsvc.pii.engines import DEFAULT_ENTITIES, detect_language, fold_width, get_engines
from govsvc.pii.masking import (
    MaskingConfigError,
    PiiKeys,
    TokenError,
    apply_window,
    load_rules,
    parse_rules,
    revealed_positions,
)
from govsvc.pii.records import field_hint
from govsvc.pii.service import PiiService

POLICY_DIR = PROJECT_ROOT / "policies"
SECRET = "test-secret-key-0123456789abcdef0123456789"


@pytest.fixture(scope="module")
def service() -> PiiService:
    return PiiService.build(get_engines("auto"), POLICY_DIR, SECRET)


@pytest.fixture(scope="module")
def pattern_service() -> PiiService:
    return PiiService.build(get_engines("pattern"), POLICY_DIR, SECRET)


def found(service: PiiService, text: str, language: str | None = None, threshold: float = 0.4) -> dict[str, float]:
    """{matched text: score} per entity type, as ``ENTITY:text``."""
    analysis = service.analyze([text], language=language, score_threshold=threshold)[0]
    return {f"{f.entity_type}:{text[f.start : f.end]}": round(f.score, 2) for f in analysis.findings}


def make_resident_id(rng: random.Random) -> str:
    first17 = f"{rng.choice([110101, 310115, 440305, 510104, 620102])}{rng.randint(1950, 2005)}"
    first17 += f"{rng.randint(1, 12):02d}{rng.randint(1, 28):02d}{rng.randint(0, 999):03d}"
    return first17 + resident_id_check_char(first17)


def make_card(rng: random.Random, prefix: str, length: int) -> str:
    body = prefix + "".join(str(rng.randint(0, 9)) for _ in range(length - len(prefix) - 1))
    return next(body + d for d in "0123456789" if luhn_valid(body + d))


# --- check characters -----------------------------------------------------------------------------------------


def test_check_characters_against_the_standards_examples() -> None:
    assert resident_id_valid("11010519491231002X")  # GB 11643's own example
    assert not resident_id_valid("110105194912310021")
    assert not resident_id_valid("99010519491231002X")  # no province 99
    assert not resident_id_valid("11010519490231002X")  # 31 February
    assert uscc_check_char("91350100M000100Y4") == "3"
    assert uscc_valid("91350100M000100Y43") and not uscc_valid("91350100M000100Y44")
    assert luhn_valid("4111111111111111") and not luhn_valid("4111111111111112")


def test_random_valid_ids_are_found_and_every_altered_check_character_is_not(service) -> None:
    rng = random.Random(6)
    for _ in range(25):
        resident_id = make_resident_id(rng)
        assert found(service, f"身份证号{resident_id}")[f"CN_RESIDENT_ID:{resident_id}"] >= 0.85
        wrong = resident_id[:17] + next(c for c in "0123456789X" if c != resident_id[17])
        assert not any(key.startswith("CN_RESIDENT_ID") for key in found(service, f"身份证号{wrong}"))


# --- Chinese text traps ---------------------------------------------------------------------------------------


def test_no_word_boundary_trap_between_han_and_digits(service) -> None:
    result = found(service, "信用卡4111111111111111，邮箱zhangwei@example.com，电话")
    assert "CREDIT_CARD:4111111111111111" in result
    assert "EMAIL_ADDRESS:zhangwei@example.com" in result  # the Han prefix 邮箱 is not swallowed


def test_full_width_digits_and_letters(service) -> None:
    text = "身份证１１０１０５１９４９１２３１００２Ｘ，手机１３８１２３４５６７８"
    analysis = service.analyze([text])[0]
    spans = {f.entity_type: text[f.start : f.end] for f in analysis.findings}
    assert spans["CN_RESIDENT_ID"] == "１１０１０５１９４９１２３１００２Ｘ"  # spans index the original text
    assert spans["CN_MOBILE"] == "１３８１２３４５６７８"
    assert fold_width("ＡＢＣ＠１２３") == "ABC@123"


def test_nineteen_digit_unionpay_cards(service) -> None:
    rng = random.Random(19)
    for _ in range(10):
        card = make_card(rng, "62", 19)
        assert found(service, f"卡号{card}")[f"CN_BANK_CARD:{card}"] >= 0.85
        spaced = " ".join(card[i : i + 4] for i in range(0, 19, 4))
        assert f"CN_BANK_CARD:{spaced}" in found(service, f"银行卡 {spaced} 已冻结")


def test_luhn_failing_card_survives_only_with_context_at_medium_score(service) -> None:
    number = "6222021234567890123"
    assert not luhn_valid(number)
    assert found(service, f"客户银行卡号{number}，请核实") == {f"CN_BANK_CARD:{number}": 0.5}
    assert found(service, f"订单编号{number}已发货") == {}


def test_chinese_context_words_raise_scores(service) -> None:
    with_context = found(service, "手机号13812345678")["CN_MOBILE:13812345678"]
    without = found(service, "编号13812345678")["CN_MOBILE:13812345678"]
    assert with_context > without
    passport = found(service, "护照号E12345678")
    assert passport["CN_PASSPORT:E12345678"] >= 0.8
    assert "CN_PASSPORT:E12345678" not in found(service, "型号E12345678")  # format only: needs its context


def test_english_context_words_raise_presidio_scores_in_both_modes(service, pattern_service) -> None:
    for engine in (service, pattern_service):
        boosted = found(engine, "My phone number is 212-555-0100", language="en")["PHONE_NUMBER:212-555-0100"]
        plain = found(engine, "Reference 212-555-0100 attached", language="en")["PHONE_NUMBER:212-555-0100"]
        assert boosted > plain


def test_qq_and_wechat_need_their_context(service) -> None:
    assert found(service, "QQ号：12345678")["QQ_NUMBER:12345678"] > 0.5
    assert "WECHAT_ID:zhang_wei88" in found(service, "微信号 zhang_wei88")
    assert found(service, "房间号12345678") == {}


def test_other_chinese_identifiers(service) -> None:
    result = found(
        service, "统一社会信用代码91350100M000100Y43，车牌京A12345，座机010-62345678转123，港澳通行证C12345678"
    )
    assert {"CN_USCC:91350100M000100Y43", "CN_LICENSE_PLATE:京A12345", "CN_LANDLINE:010-62345678转123"} <= set(result)
    assert "CN_HKMO_PERMIT:C12345678" in result
    assert "CN_USCC:91350100M000100Y44" not in found(service, "信用代码91350100M000100Y44")


def test_chinese_names_and_the_domain_stop_list(service) -> None:
    result = found(service, "客户欧阳娜娜反映银行卡被冻结，要求脱敏处理，满意度低。联系人王建国先生。")
    names = {key.split(":", 1)[1] for key in result if key.startswith("PERSON:")}
    assert names == {"欧阳娜娜", "王建国"}


@pytest.mark.parametrize(
    "text",
    [
        "客户反映上个月的账单金额有误，要求重新核对。",
        "请于本周内完成客户满意度调查。",
        "客户对高铁票退款流程有疑问。",
        "客户询问黄金积存业务的起存金额。",
        "客户说方便的话周末再联系。",
        "关于白金卡年费减免的申请已通过。",
        "客户银行卡号码需要脱敏。",
    ],
)
def test_no_names_in_sentences_without_any(service, text: str) -> None:
    assert not [key for key in found(service, text) if key.startswith("PERSON")]


def test_language_is_detected_by_script() -> None:
    assert detect_language("Please call John back") == "en"
    assert detect_language("客户来电咨询账单") == "zh"
    assert detect_language("客户 John Smith 来电，手机13812345678") == "zh"
    assert detect_language("Customer 张伟 called about invoice 42 and asked for a refund") == "en"


def test_mixed_text_finds_chinese_identifiers_in_english(service) -> None:
    text = "Customer Li Wei (ID 11010519491231002X, mobile +86 138-1234-5678) called from Shanghai."
    result = found(service, text)
    assert "CN_RESIDENT_ID:11010519491231002X" in result
    assert "CN_MOBILE:+86 138-1234-5678" in result
    assert service.analyze([text])[0].language == "en"


def test_the_phone_prefilter_never_hides_a_phone_number(service, monkeypatch) -> None:
    texts = [
        "call 212-555-0100 4111 1111 1111 1111",
        "card 4111 1111 1111 1111, call (212) 555-0100",
        "ref 12345678901234567 or +1 415 555 0132",
        "order 2125550100 shipped",
        "IBAN GB82WEST12345698765432 phone 020 7946 0958",
    ]
    with_filter = [service.analyze([text], language="en")[0].findings for text in texts]
    monkeypatch.setattr(engines_module, "_may_hold_phone", lambda text: True)
    without = [service.analyze([text], language="en")[0].findings for text in texts]
    assert with_filter == without
    assert any(f.entity_type == "PHONE_NUMBER" for found in with_filter for f in found)


def test_the_fast_path_finds_what_presidio_analyze_finds(service, monkeypatch) -> None:
    engines = service.engines
    texts = [
        "My phone number is 212-555-0100, John Smith, card 4111 1111 1111 1111, IBAN GB82WEST12345698765432",
        "客户张伟，身份证号11010519491231002X，手机13812345678，银行卡6222021234567890123，邮箱zw@example.cn",
        "Customer 李娜 (mobile +86 138-1234-5678) lives in Seattle, SSN 078-05-1120, IP 10.2.3.4",
    ]
    fast = engines.analyze_many(texts, [detect_language(t) for t in texts], DEFAULT_ENTITIES, 0.0)

    def presidio(text, language, entities, threshold, artifacts):
        return engines.analyzer.analyze(
            text, language, entities=entities, score_threshold=threshold, nlp_artifacts=artifacts
        )

    monkeypatch.setattr(engines, "analyze_one", presidio)
    slow = engines.analyze_many(texts, [detect_language(t) for t in texts], DEFAULT_ENTITIES, 0.0)
    assert fast == slow
    assert sum(map(len, fast)) >= 12


def test_findings_are_de_overlapped(service) -> None:
    text = "Mail john.smith@example.com today"
    analysis = service.analyze([text], entities=["EMAIL_ADDRESS", "URL"], score_threshold=0.0)[0]
    assert [(f.entity_type, text[f.start : f.end]) for f in analysis.findings] == [
        ("EMAIL_ADDRESS", "john.smith@example.com")
    ]
    for first, second in zip(analysis.findings, analysis.findings[1:], strict=False):
        assert first.end <= second.start


def test_english_names_need_the_model_and_pattern_only_keeps_patterns(service, pattern_service) -> None:
    text = "John Smith called from Seattle, card 4111 1111 1111 1111, mail john@example.com"
    full = found(service, text)
    pattern = found(pattern_service, text)
    assert "PERSON:John Smith" in full and "LOCATION:Seattle" in full
    assert not any(key.startswith(("PERSON", "LOCATION")) for key in pattern)
    assert {k for k in full if not k.startswith(("PERSON", "LOCATION"))} == set(pattern)
    assert "LOCATION" not in pattern_service.supported_entities("en")  # PERSON stays: Chinese names in English
    assert "PERSON:张伟" in found(pattern_service, "客户张伟来电")  # Chinese names need no model
    assert pattern_service.engines.nlp_name.startswith("pattern-only")


def test_engines_are_built_once_per_process() -> None:
    assert get_engines("auto") is get_engines("auto")
    assert get_engines("pattern") is not get_engines("auto")


def test_default_entities_are_supported(service) -> None:
    assert set(DEFAULT_ENTITIES) <= set(service.supported_entities())


# --- masking --------------------------------------------------------------------------------------------------


def test_masking_windows_of_the_issue(service) -> None:
    rules = service.rules
    cases = {
        "CN_RESIDENT_ID": ("11010519491231123X", "110***********123X"),
        "CN_BANK_CARD": ("6222020200112233445", "***************3445"),
        "CN_MOBILE": ("13812345678", "138****5678"),
        "PERSON": ("张伟", "张*"),
        "EMAIL_ADDRESS": ("alice@example.com", "a***@example.com"),
        "CN_ADDRESS": ("北京市朝阳区建国路88号", "北京市朝阳区******"),
    }
    for entity, (value, expected) in cases.items():
        assert apply_window(value, rules.window(rules.category(entity))) == expected


def test_two_roles_views_cannot_be_combined_beyond_the_widest_window(service) -> None:
    rules, masker = service.rules, service.masker
    values = {
        "CN_RESIDENT_ID": "11010519491231123X",
        "CN_BANK_CARD": "6222020200112233445",
        "CN_MOBILE": "13812345678",
        "PERSON": "欧阳娜娜",
        "CN_PASSPORT": "E12345678",
    }
    roles = list(rules.roles)
    for entity, value in values.items():
        window = apply_window(value, rules.window(rules.category(entity)))
        widest = len(revealed_positions(value, window))
        views = {
            role: masker.replacement(
                rules.operator(rules.profile_for_role(role), rules.category(entity)), entity, value
            )
            for role in roles
        }
        assert value not in views.values()
        combined = set().union(*(revealed_positions(value, view) for view in views.values()))
        assert len(combined) <= widest, (entity, views)


def test_windows_cannot_be_set_per_profile_or_role(tmp_path: Path) -> None:
    categories = {"user", "user.name"}
    base = {
        "version": 1,
        "entities": {"PERSON": "user.name"},
        "windows": {"default": {"keep_first": 0, "keep_last": 0}},
        "profiles": {"p": {"default": "mask", "user.name": {"keep_first": 5}}},
        "roles": {"default": "p"},
    }
    with pytest.raises(MaskingConfigError, match="never per profile"):
        parse_rules(base, categories)
    base["profiles"] = {"p": {"default": "show_everything"}}
    with pytest.raises(MaskingConfigError, match="not one of"):
        parse_rules(base, categories)
    base["profiles"] = {"p": {"default": "mask", "user.nope": "mask"}}
    with pytest.raises(MaskingConfigError, match=r"user\.nope"):
        parse_rules(base, categories)
    (tmp_path / "masking.yaml").write_text("version: [unclosed")
    with pytest.raises(MaskingConfigError, match="cannot be read"):
        load_rules(tmp_path)


def test_a_missing_taxonomy_is_a_masking_config_error_not_a_crash(tmp_path: Path) -> None:
    (tmp_path / "masking.yaml").write_text((POLICY_DIR / "masking.yaml").read_text(encoding="utf-8"))
    with pytest.raises(MaskingConfigError, match="taxonomy"):
        load_rules(tmp_path)


def test_hmac_pseudonyms_are_stable_keyed_and_normalised(service) -> None:
    masker = service.masker
    first = masker.replacement("pseudonymize", "CN_MOBILE", "13812345678")
    assert first == masker.replacement("pseudonymize", "CN_MOBILE", "138-1234-5678")
    assert first == masker.replacement("pseudonymize", "CN_MOBILE", "+86 13812345678")
    assert first != masker.replacement("pseudonymize", "CN_MOBILE", "13812345679")
    other_key = PiiService.build(service.engines, POLICY_DIR, SECRET + "-other")
    assert first != other_key.masker.replacement("pseudonymize", "CN_MOBILE", "13812345678")
    assert "13812345678" not in first


def test_encryption_tokens_round_trip_and_fail_when_altered() -> None:
    keys = PiiKeys(SECRET)
    token = keys.encrypt("CN_MOBILE", "13812345678")
    assert token.startswith("[pii:v1:CN_MOBILE:")
    assert token != keys.encrypt("CN_MOBILE", "13812345678")  # random nonce
    version, entity, payload = token[1:-1].split(":")[1:]
    assert keys.decrypt(version, entity, payload) == "13812345678"
    flipped = payload[:20] + ("A" if payload[20] != "A" else "B") + payload[21:]
    for args in (
        (version, entity, flipped),
        (version, "PERSON", payload),
        ("v2", entity, payload),
        (version, entity, ""),
    ):
        with pytest.raises(TokenError):
            keys.decrypt(*args)
    with pytest.raises(TokenError):
        PiiKeys(SECRET + "x").decrypt(version, entity, payload)


def test_field_name_hints() -> None:
    assert field_hint("customer_phone") == "PHONE_NUMBER"
    assert field_hint("手机号码") == "PHONE_NUMBER"
    assert field_hint("ID-Number") == "CN_RESIDENT_ID"
    assert field_hint("姓名") == "PERSON"
    assert field_hint("company_name") is None
    assert field_hint("status") is None


def test_nlp_setting_without_the_model(monkeypatch) -> None:
    monkeypatch.setattr(engines_module, "model_installed", lambda name=engines_module.MODEL_NAME: False)
    assert engines_module.resolve_mode("auto") is False  # falls back to pattern-only
    assert engines_module.resolve_mode("pattern") is False
    with pytest.raises(RuntimeError, match="not installed"):
        engines_module.resolve_mode("spacy")
    with pytest.raises(ValueError, match="GOVSVC_PII_NLP"):
        engines_module.resolve_mode("gpu")
