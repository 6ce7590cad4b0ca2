"""Structured data: JSON records (nested objects and arrays) and CSV streams.

Every string (and integer) value is analysed by content; a field whose name says what it holds (``phone``, ``姓名``,
``id_number``...) is also treated as that entity as a whole when content detection finds nothing in it (a bare name
like ``张伟`` in a ``name`` field has no context to go by). All values of a batch go through the analyzer together,
so the NLP runs batched. CSV is processed in chunks of rows: memory stays bounded whatever the file's size.
"""

from __future__ import annotations

import csv
import io
import json
import re
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from typing import Any

from govsvc.core.errors import ValidationFailed
from govsvc.pii.engines import Finding
from govsvc.pii.service import PiiService, TextAnalysis, UsageCounts

MAX_DEPTH = 32
MAX_VALUES = 20_000
CSV_CHUNK_ROWS = 64
CSV_MAX_COLUMNS = 200
CSV_MAX_CELL = 10_000

# Normalised field names (lower case, no separators) and the entity a value under that name is.
_FIELD_HINTS = {
    "PERSON": (
        *("name", "fullname", "customername", "contactname", "firstname", "lastname", "surname", "givenname"),
        *("cardholder", "holdername", "姓名", "客户姓名", "联系人", "名字", "户名", "持卡人"),
    ),
    "PHONE_NUMBER": (
        *("phone", "mobile", "tel", "telephone", "cellphone", "phonenumber", "mobilephone", "contactphone"),
        *("手机", "手机号", "手机号码", "电话", "联系电话", "座机"),
    ),
    "EMAIL_ADDRESS": ("email", "mail", "emailaddress", "邮箱", "电子邮箱", "电子邮件"),
    "CN_RESIDENT_ID": (
        "idnumber",
        "idcard",
        "idno",
        "nationalid",
        "residentid",
        "身份证",
        "身份证号",
        "证件号",
        "证件号码",
    ),
    "CN_PASSPORT": ("passport", "passportno", "passportnumber", "护照", "护照号"),
    "CN_BANK_CARD": (
        "bankcard",
        "cardno",
        "cardnumber",
        "bankaccount",
        "accountno",
        "银行卡",
        "银行卡号",
        "卡号",
        "账号",
    ),
    "CN_ADDRESS": ("address", "addr", "homeaddress", "street", "地址", "住址", "通讯地址", "家庭住址", "收货地址"),
    "WECHAT_ID": ("wechat", "wechatid", "weixin", "微信", "微信号"),
    "QQ_NUMBER": ("qq", "qqnumber", "qq号"),
    "US_SSN": ("ssn", "socialsecuritynumber"),
    "CN_LICENSE_PLATE": ("plate", "licenseplate", "车牌", "车牌号"),
}
_HINTS = {name: entity for entity, names in _FIELD_HINTS.items() for name in names}
_SUFFIX_HINTS = tuple(sorted((name for name in _HINTS if len(name) >= 5 or not name.isascii()), key=len, reverse=True))
_NOT_A_PERSON = ("company", "product", "file", "user", "host", "domain", "org", "brand", "公司", "产品")
_IDENTIFIER = re.compile(r"^[A-Za-z_\u4e00-\u9fff][A-Za-z0-9_\u4e00-\u9fff]*$")


def field_hint(name: str) -> str | None:
    """The entity a field name announces (``customer_phone`` -> PHONE_NUMBER), or None."""
    key = re.sub(r"[\s_\-.]", "", name).lower()
    if not key:
        return None
    entity = _HINTS.get(key)
    if entity is None:
        entity = next((_HINTS[hint] for hint in _SUFFIX_HINTS if key.endswith(hint)), None)
    if entity == "PERSON" and any(word in key for word in _NOT_A_PERSON):
        return None
    return entity


@dataclass
class Value:
    """One scalar value of a record, where it is, and what its field name hints."""

    record: int
    path: str
    container: Any
    key: Any
    text: str
    hint: str | None


def _child_path(path: str, key: Any) -> str:
    if isinstance(key, int):
        return f"{path}[{key}]"
    if _IDENTIFIER.match(key):
        return f"{path}.{key}"
    return f"{path}[{json.dumps(key, ensure_ascii=False)}]"


def collect_values(records: list[Any]) -> list[Value]:
    """Every string and integer in the records, depth-first; ValidationFailed beyond the depth or value limits."""
    values: list[Value] = []

    def walk(node: Any, index: int, path: str, hint: str | None, depth: int) -> None:
        if depth > MAX_DEPTH:
            raise ValidationFailed(
                "A record is nested too deeply.", errors=[{"field": path, "message": f"at most {MAX_DEPTH} levels"}]
            )
        items: Iterable[tuple[Any, Any]]
        if isinstance(node, dict):
            items = node.items()
        elif isinstance(node, list):
            items = enumerate(node)
        else:
            return
        for key, child in items:
            if isinstance(key, str):
                _check_unicode(key, path)
            child_path = _child_path(path, key)
            child_hint = field_hint(key) if isinstance(key, str) else hint
            if isinstance(child, str) or (isinstance(child, int) and not isinstance(child, bool)):
                if isinstance(child, str):
                    if not child.strip():
                        continue
                    _check_unicode(child, child_path)
                values.append(Value(index, child_path, node, key, str(child), child_hint or hint))
                if len(values) > MAX_VALUES:
                    raise ValidationFailed(
                        "Too many values.", errors=[{"field": "records", "message": f"at most {MAX_VALUES} values"}]
                    )
            else:
                walk(child, index, child_path, child_hint or hint, depth + 1)

    for index, item in enumerate(records):
        if not isinstance(item, dict):
            raise ValidationFailed(
                "Every record must be a JSON object.",
                errors=[{"field": f"records[{index}]", "message": "not an object"}],
            )
        walk(item, index, "$", None, 1)
    return values


def _check_unicode(value: str, path: str) -> None:
    try:
        value.encode("utf-8")
    except UnicodeEncodeError:
        raise ValidationFailed(
            "A value is not valid Unicode.", errors=[{"field": path, "message": "contains lone surrogates"}]
        ) from None


def _with_hint(value: Value, analysis: TextAnalysis) -> tuple[list[Finding], str]:
    """Content findings; a hinted value with none is the hinted entity as a whole."""
    if analysis.findings or value.hint is None:
        return analysis.findings, "content"
    return [Finding(value.hint, 0, len(value.text), 1.0, "field_name")], "field_name"


def scan_records(
    service: PiiService, records: list[Any], *, language: str | None, entities: tuple[str, ...], threshold: float
) -> tuple[list[dict[str, Any]], UsageCounts]:
    """Per record, the findings with the JSON path of their value."""
    values = collect_values(records)
    analyses = service.analyze(
        [v.text for v in values], language=language, entities=entities, score_threshold=threshold
    )
    results: list[dict[str, Any]] = [{"index": index, "findings": []} for index in range(len(records))]
    usage = UsageCounts()
    for value, analysis in zip(values, analyses, strict=True):
        findings, source = _with_hint(value, analysis)
        usage.add_text(value.text, TextAnalysis(analysis.language, findings))
        for finding in findings:
            results[value.record]["findings"].append({"path": value.path, **finding.as_dict(), "source": source})
    return results, usage


def mask_records(
    service: PiiService,
    records: list[Any],
    *,
    language: str | None,
    entities: tuple[str, ...],
    threshold: float,
    profile: str,
    operator: str | None,
) -> tuple[list[Any], UsageCounts]:
    """The records with every finding masked in place (the caller's parsed JSON is modified and returned)."""
    values = collect_values(records)
    analyses = service.analyze(
        [v.text for v in values], language=language, entities=entities, score_threshold=threshold
    )
    usage = UsageCounts()
    for value, analysis in zip(values, analyses, strict=True):
        findings, _ = _with_hint(value, analysis)
        usage.add_text(value.text, TextAnalysis(analysis.language, findings))
        if findings:
            masked, _ = service.masker.mask_text(value.text, findings, profile, operator)
            value.container[value.key] = masked
    return records, usage


def mask_csv(
    service: PiiService,
    lines: Iterable[str],
    *,
    language: str | None,
    entities: tuple[str, ...],
    threshold: float,
    profile: str,
    operator: str | None,
    header: bool,
    usage: UsageCounts,
) -> Iterator[str]:
    """Masked CSV text, chunk by chunk; the header row (when there is one) names the columns' hints.

    Raises ValidationFailed for rows that are too wide or cells that are too long (before any of that chunk is
    yielded).
    """
    reader = csv.reader(lines)
    hints: list[str | None] = []
    chunk: list[list[str]] = []
    if header:
        names = next(reader, None)
        if names is None:
            return
        _check_row(names, 1)
        hints = [field_hint(name) for name in names]
        yield _write([names])
    for row in reader:
        _check_row(row, reader.line_num)
        chunk.append(row)
        if len(chunk) >= CSV_CHUNK_ROWS:
            yield _mask_chunk(service, chunk, hints, language, entities, threshold, profile, operator, usage)
            chunk = []
    if chunk:
        yield _mask_chunk(service, chunk, hints, language, entities, threshold, profile, operator, usage)


def _check_row(row: list[str], line: int) -> None:
    if len(row) > CSV_MAX_COLUMNS or any(len(cell) > CSV_MAX_CELL for cell in row):
        raise ValidationFailed(
            "A CSV row is too large.",
            errors=[
                {"field": f"line {line}", "message": f"at most {CSV_MAX_COLUMNS} columns of {CSV_MAX_CELL} characters"}
            ],
        )


def _mask_chunk(
    service: PiiService,
    rows: list[list[str]],
    hints: list[str | None],
    language: str | None,
    entities: tuple[str, ...],
    threshold: float,
    profile: str,
    operator: str | None,
    usage: UsageCounts,
) -> str:
    cells = [(r, c) for r, row in enumerate(rows) for c, cell in enumerate(row) if cell.strip()]
    analyses = service.analyze(
        [rows[r][c] for r, c in cells], language=language, entities=entities, score_threshold=threshold
    )
    for (r, c), analysis in zip(cells, analyses, strict=True):
        hint = hints[c] if c < len(hints) else None
        value = Value(r, "", rows[r], c, rows[r][c], hint)
        findings, _ = _with_hint(value, analysis)
        usage.add_text(value.text, TextAnalysis(analysis.language, findings))
        if findings:
            rows[r][c] = service.masker.mask_text(value.text, findings, profile, operator)[0]
    return _write(rows)


def _write(rows: list[list[str]]) -> str:
    buffer = io.StringIO()
    csv.writer(buffer, lineterminator="\r\n").writerows(rows)
    return buffer.getvalue()
