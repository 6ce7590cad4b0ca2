"""Chinese identifier recognizers for Presidio: resident IDs, phones, cards, USCC, passports, permits, plates...

Presidio has none, and its built-in patterns break on Chinese text (``\\b`` sees a Han character as a word
character). Every pattern here is delimited with ASCII look-arounds and runs on width-folded text (full-width digits
and letters are folded before analysis, one character for one, so spans stay valid on the original text).
A failed check character drops the match; only bank cards with strong context survive a failed Luhn check, at a
medium score. Context words are looked for in the text just before (and right after) a match, so they work in every
NLP mode, including pattern-only.
"""

from __future__ import annotations

import os
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass

import regex
from presidio_analyzer import AnalysisExplanation, EntityRecognizer, RecognizerResult
from presidio_analyzer.nlp_engine import NlpArtifacts

from govsvc.pii.checksums import legacy_resident_id_valid, luhn_valid, resident_id_valid, uscc_valid

REGEX_TIMEOUT = float(os.environ.get("REGEX_TIMEOUT_SECONDS", "2") or 2)
_NOT_ALNUM_BEFORE = r"(?<![0-9A-Za-z])"
_NOT_ALNUM_AFTER = r"(?![0-9A-Za-z])"

# Scores: a regex match alone is weak; a passed check raises it; context words add CONTEXT_BOOST.
CONTEXT_BOOST = 0.35
MAX_SCORE = 1.0


@dataclass(frozen=True)
class Match:
    """One candidate found by a recognizer."""

    entity: str
    start: int
    end: int
    score: float
    context_word: str | None = None


def _compile(pattern: str) -> regex.Pattern[str]:
    return regex.compile(_NOT_ALNUM_BEFORE + "(?:" + pattern + ")" + _NOT_ALNUM_AFTER)


def find_context(
    text: str, start: int, end: int, words: Sequence[str], *, before: int = 16, after: int = 4
) -> str | None:
    """The first context word found in the window around ``text[start:end]`` (case-insensitive), or None."""
    window = (text[max(0, start - before) : start] + " " + text[end : end + after]).lower()
    for word in words:
        if word in window:
            return word
    return None


class ChineseRecognizer(EntityRecognizer):
    """Base: subclasses yield ``Match``es from the (width-folded) text; the base turns them into results."""

    ENTITIES: tuple[str, ...] = ()
    CONTEXT: tuple[str, ...] = ()

    def __init__(self, supported_language: str = "zh") -> None:
        super().__init__(supported_entities=list(self.ENTITIES), supported_language=supported_language, context=[])

    def load(self) -> None:
        """Nothing to load: patterns compile at import."""

    def find(self, text: str) -> Iterable[Match]:  # pragma: no cover - abstract
        raise NotImplementedError

    def find_with_artifacts(self, text: str, nlp_artifacts: NlpArtifacts | None) -> Iterable[Match]:
        """Like ``find``; recognizers that can reuse the NLP tokens override this."""
        return self.find(text)

    def analyze(
        self, text: str, entities: list[str], nlp_artifacts: NlpArtifacts | None = None
    ) -> list[RecognizerResult]:
        """Presidio's entry point."""
        wanted = set(entities or self.ENTITIES)
        results = []
        for match in self.find_with_artifacts(text, nlp_artifacts):
            if match.entity not in wanted:
                continue
            explanation = AnalysisExplanation(
                recognizer=self.name,
                original_score=match.score,
                textual_explanation="context: " + match.context_word if match.context_word else None,
            )
            results.append(
                RecognizerResult(
                    match.entity,
                    match.start,
                    match.end,
                    min(match.score, MAX_SCORE),
                    analysis_explanation=explanation,
                    recognition_metadata={
                        RecognizerResult.RECOGNIZER_NAME_KEY: self.name,
                        RecognizerResult.RECOGNIZER_IDENTIFIER_KEY: self.id,
                        RecognizerResult.IS_SCORE_ENHANCED_BY_CONTEXT_KEY: True,  # done here, in every NLP mode
                    },
                )
            )
        return results

    def _scored(self, entity: str, text: str, start: int, end: int, base: float, **window: int) -> Match:
        word = find_context(text, start, end, self.CONTEXT, **window)
        return Match(entity, start, end, base + CONTEXT_BOOST if word else base, word)


def _search(pattern: regex.Pattern[str], text: str) -> Iterable[regex.Match[str]]:
    return pattern.finditer(text, timeout=REGEX_TIMEOUT)


def _compact(value: str) -> str:
    return value.replace(" ", "").replace("-", "")


class ResidentIdRecognizer(ChineseRecognizer):
    """居民身份证号: 18 digits with the MOD 11-2 check character (also residence permits 81/82/83), or legacy 15."""

    ENTITIES = ("CN_RESIDENT_ID",)
    CONTEXT = ("身份证", "证件号", "公民身份号码", "身份号码", "居住证", "id", "identity")
    _ID18 = _compile(r"[1-9]\d{5}[ ]?(?:18|19|20)\d{2}(?:0[1-9]|1[0-2])(?:0[1-9]|[12]\d|3[01])[ ]?\d{3}[\dXx]")
    _ID15 = _compile(r"[1-9]\d{5}\d{2}(?:0[1-9]|1[0-2])(?:0[1-9]|[12]\d|3[01])\d{3}")

    def find(self, text: str) -> Iterable[Match]:
        for found in _search(self._ID18, text):
            if resident_id_valid(found.group().replace(" ", "")):
                yield self._scored("CN_RESIDENT_ID", text, found.start(), found.end(), 0.9)
        for found in _search(self._ID15, text):
            if legacy_resident_id_valid(found.group()):
                match = self._scored("CN_RESIDENT_ID", text, found.start(), found.end(), 0.3)
                if match.context_word:  # 15 digits with a plausible date are common; only with context
                    yield Match(match.entity, match.start, match.end, 0.8, match.context_word)


_MOBILE_SEGMENT = regex.compile(r"^1(?:3\d|4[5-9]|5[0-35-9]|6[2567]|7[0-8]|8\d|9[0-35-9])\d{8}$")


class MobileRecognizer(ChineseRecognizer):
    """Mainland mobile numbers: allocated segments, optional +86/0086/86, optional 3-4-4 grouping."""

    ENTITIES = ("CN_MOBILE",)
    CONTEXT = ("手机", "电话", "联系方式", "致电", "来电", "号码", "tel", "phone", "mobile", "微信", "whatsapp")
    _MOBILE = regex.compile(
        r"(?<![0-9A-Za-z+])(?:(?:\+|00)?86[- ]?)?(?:1\d{10}|1\d{2}[- ]\d{4}[- ]\d{4})" + _NOT_ALNUM_AFTER
    )

    def find(self, text: str) -> Iterable[Match]:
        for found in _search(self._MOBILE, text):
            digits = _compact(found.group()).lstrip("+")
            if len(digits) > 11:
                if not (digits.startswith("0086") or digits.startswith("86")):
                    continue
                digits = digits[-11:]
            if _MOBILE_SEGMENT.match(digits):
                yield self._scored("CN_MOBILE", text, found.start(), found.end(), 0.6)


class LandlineRecognizer(ChineseRecognizer):
    """Landlines with an area code (010, 02x, 0xxx) and an optional extension; 400/800 numbers are not personal."""

    ENTITIES = ("CN_LANDLINE",)
    CONTEXT = ("电话", "座机", "固话", "传真", "办公", "tel", "phone", "fax")
    _LANDLINE = _compile(
        r"(?:\+86[- ]?|0086[- ]?)?(?:\(0\d{2,3}\)|0\d{2,3})[- ]?[2-9]\d{6,7}(?:(?:转|-|ext\.?)\d{1,6})?"
    )
    _AREA = regex.compile(r"^(?:\+86|0086)?[- ]?\(?(0(?:10|2\d|[3-9]\d{2}))")

    def find(self, text: str) -> Iterable[Match]:
        for found in _search(self._LANDLINE, text):
            value = found.group()
            if not self._AREA.match(value) and not value.startswith(("+86", "0086")):
                continue
            yield self._scored("CN_LANDLINE", text, found.start(), found.end(), 0.5)


_CARD_CONTEXT = ("卡号", "银行卡", "账号", "帐号", "储蓄卡", "借记卡", "信用卡", "开户", "card", "account", "acct")


def card_entity(digits: str) -> str:
    """UnionPay and domestic BINs are CN_BANK_CARD; the international brands are CREDIT_CARD."""
    if digits.startswith(("62", "60", "9")) and not digits.startswith("6011"):
        return "CN_BANK_CARD"
    return "CREDIT_CARD"


class BankCardRecognizer(ChineseRecognizer):
    """Bank and credit cards, 13-19 digits, Luhn; a Luhn-failing 16-19 digit number survives only with context."""

    ENTITIES = ("CN_BANK_CARD", "CREDIT_CARD")
    CONTEXT = _CARD_CONTEXT
    _CARD = _compile(r"\d{13,19}|\d{4}(?:[ -]\d{4}){2,3}(?:[ -]?\d{1,3})?|\d{4}[ -]\d{6}[ -]\d{4,5}")
    _BRANDS = regex.compile(r"^(?:4|5[1-5]|2[2-7]|3[47]|3[0689]|35|6|9)")

    _NOT_A_CARD = ("订单", "单号", "编号", "运单", "身份证", "证件", "order", "invoice", "tracking", "ref")

    def find(self, text: str) -> Iterable[Match]:
        for found in _search(self._CARD, text):
            digits = _compact(found.group())
            if not 13 <= len(digits) <= 19 or not self._BRANDS.match(digits):
                continue
            if find_context(text, found.start(), found.end(), self._NOT_A_CARD, before=10, after=0):
                continue  # an order or ID number that happens to pass Luhn
            if luhn_valid(digits):
                yield self._scored(card_entity(digits), text, found.start(), found.end(), 0.8)
            elif 16 <= len(digits) <= 19 and digits[0] in "4569":
                word = find_context(text, found.start(), found.end(), self.CONTEXT, before=12, after=0)
                if word:  # older domestic debit cards fail Luhn: keep them, at a medium score
                    yield Match("CN_BANK_CARD", found.start(), found.end(), 0.5, word)


class UsccRecognizer(ChineseRecognizer):
    """统一社会信用代码 (GB 32100-2015): 18 characters with the MOD 31 check character."""

    ENTITIES = ("CN_USCC",)
    CONTEXT = ("统一社会信用代码", "信用代码", "税号", "纳税人识别号", "营业执照", "uscc", "tax id")
    _USCC = _compile(r"[1-9ANY][0-9A-HJ-NPQRTUWXY]\d{6}[0-9A-HJ-NPQRTUWXY]{10}")

    _ID_LIKE = regex.compile(r"^\d{6}(?:18|19|20)\d{2}(?:0[1-9]|1[0-2])(?:0[1-9]|[12]\d|3[01])\d{4}$")

    def find(self, text: str) -> Iterable[Match]:
        for found in _search(self._USCC, text):
            if self._ID_LIKE.match(found.group()):
                continue  # an 18-digit number shaped like a resident ID (even a wrong one) is not read as a USCC
            if uscc_valid(found.group()):
                yield self._scored("CN_USCC", text, found.start(), found.end(), 0.85)


class FormatOnlyRecognizer(ChineseRecognizer):
    """Identifiers with no public check character: a weak score alone, a usable one with context."""

    PATTERNS: tuple[tuple[str, regex.Pattern[str], bool], ...] = ()  # (entity, pattern, context required)
    BASE = 0.3

    def find(self, text: str) -> Iterable[Match]:
        for entity, pattern, context_required in self.PATTERNS:
            for found in _search(pattern, text):
                match = self._scored(entity, text, found.start(), found.end(), self.BASE + 0.2)
                if match.context_word or not context_required:
                    yield match if match.context_word else Match(entity, match.start, match.end, self.BASE)


class PassportRecognizer(FormatOnlyRecognizer):
    """普通护照 E/EA-style and G numbers; diplomatic, service and public-affairs passports."""

    ENTITIES = ("CN_PASSPORT",)
    CONTEXT = ("护照", "passport")
    PATTERNS = (("CN_PASSPORT", _compile(r"E\d{8}|E[A-HJ-NP-Z]\d{7}|G\d{8}|[DSP]E?\d{7}"), False),)


class PermitRecognizer(FormatOnlyRecognizer):
    """Hong Kong/Macau and Taiwan travel permits (通行证, 回乡证, 台胞证)."""

    ENTITIES = ("CN_HKMO_PERMIT", "CN_TW_PERMIT")
    CONTEXT = ("通行证", "回乡证", "台胞证", "港澳", "台湾", "permit")
    PATTERNS = (
        ("CN_HKMO_PERMIT", _compile(r"[CW]\d{8}|[HM]\d{8}(?:\d{2})?"), False),
        ("CN_TW_PERMIT", _compile(r"L\d{8}|\d{10}\([A-Z]\)"), False),
        ("CN_TW_PERMIT", _compile(r"\d{8}"), True),
    )

    def find(self, text: str) -> Iterable[Match]:
        for match in super().find(text):
            if match.entity == "CN_TW_PERMIT" and match.end - match.start == 8 and match.context_word != "台胞证":
                continue  # eight bare digits are a Taiwan permit only right after 台胞证
            yield match


_PLATE_PROVINCES = "京津沪渝冀豫云辽黑湘皖鲁新苏浙赣鄂桂甘晋蒙陕吉闽贵粤青藏川宁琼"


class LicensePlateRecognizer(ChineseRecognizer):
    """Mainland licence plates, ordinary (7 characters) and new-energy (8)."""

    ENTITIES = ("CN_LICENSE_PLATE",)
    CONTEXT = ("车牌", "牌照", "车辆", "plate")
    _PLATE = regex.compile(
        f"[{_PLATE_PROVINCES}][A-HJ-NP-Z][·• ]?"
        r"(?:[DABCEFGHJK][A-HJ-NP-Z0-9]\d{4}|\d{5}[DABCEFGHJK]|[A-HJ-NP-Z0-9]{4}[A-HJ-NP-Z0-9挂学警港澳])"
        + _NOT_ALNUM_AFTER
    )

    def find(self, text: str) -> Iterable[Match]:
        for found in _search(self._PLATE, text):
            if sum(char.isdigit() for char in found.group()) >= 2:  # "京AB" words are not plates
                yield self._scored("CN_LICENSE_PLATE", text, found.start(), found.end(), 0.6)


class EmailRecognizer(ChineseRecognizer):
    """E-mail addresses with ASCII-only local parts and domains, so a Han prefix (邮箱a@b.cn) is never swallowed."""

    ENTITIES = ("EMAIL_ADDRESS",)
    CONTEXT = ("邮箱", "邮件", "email", "e-mail", "mail")
    _EMAIL = regex.compile(
        r"(?<![A-Za-z0-9._%+-])[A-Za-z0-9][A-Za-z0-9._%+-]{0,63}@[A-Za-z0-9](?:[A-Za-z0-9-]{0,62}[A-Za-z0-9])?"
        r"(?:\.[A-Za-z0-9](?:[A-Za-z0-9-]{0,62}[A-Za-z0-9])?)*\.[A-Za-z]{2,24}(?![A-Za-z0-9-])"
    )

    def find(self, text: str) -> Iterable[Match]:
        for found in _search(self._EMAIL, text):
            local = found.group().split("@", 1)[0]
            if ".." in local or local.endswith("."):
                continue
            yield Match("EMAIL_ADDRESS", found.start(), found.end(), 1.0)


class ImAccountRecognizer(ChineseRecognizer):
    """QQ numbers and WeChat ids: only right after their context word (QQ, 微信...)."""

    ENTITIES = ("QQ_NUMBER", "WECHAT_ID")
    _QQ = _compile(r"[1-9]\d{4,10}")
    _WECHAT = _compile(r"[A-Za-z][-_A-Za-z0-9]{5,19}")
    _QQ_WORDS = ("qq", "扣扣")
    _WECHAT_WORDS = ("微信", "wechat", "weixin", "wx", "vx", "v信")

    def find(self, text: str) -> Iterable[Match]:
        for found in _search(self._QQ, text):
            word = find_context(text, found.start(), found.end(), self._QQ_WORDS, before=6, after=0)
            if word:
                yield Match("QQ_NUMBER", found.start(), found.end(), 0.75, word)
        for found in _search(self._WECHAT, text):
            if found.group().lower() in self._WECHAT_WORDS:
                continue
            word = find_context(text, found.start(), found.end(), self._WECHAT_WORDS, before=6, after=0)
            if word:
                yield Match("WECHAT_ID", found.start(), found.end(), 0.75, word)


IDENTIFIER_RECOGNIZERS: tuple[Callable[[str], ChineseRecognizer], ...] = (
    ResidentIdRecognizer,
    MobileRecognizer,
    LandlineRecognizer,
    BankCardRecognizer,
    UsccRecognizer,
    PassportRecognizer,
    PermitRecognizer,
    LicensePlateRecognizer,
    EmailRecognizer,
    ImAccountRecognizer,
)
