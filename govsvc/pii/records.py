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
from govsvc.pii.service import AnalysisOptions, PiiService, TextAnalysis, UsageCounts, check_unicode

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
                check_unicode(key, path)
            child_path = _child_path(path, key)
            child_hint = (field_hint(key) if isinstance(key, str) else None) or hint
            if not isinstance(child, str | int) or isinstance(child, bool):
                walk(child, index, child_path, child_hint, depth + 1)
                continue
            text = str(child)
            if not text.strip():
                continue
            check_unicode(text, child_path)
            values.append(Value(index, child_path, node, key, text, child_hint))
            if len(values) > MAX_VALUES:
                raise ValidationFailed(
                    "Too many values.", errors=[{"field": "records", "message": f"at most {MAX_VALUES} values"}]
                )

    for index, item in enumerate(records):
        if not isinstance(item, dict):
            raise ValidationFailed(
                "Every record must be a JSON object.",
                errors=[{"field": f"records[{index}]", "message": "not an object"}],
            )
        walk(item, index, "$", None, 1)
    return values


def _findings(
    service: PiiService,
    texts: list[str],
    hints: list[str | None],
    options: AnalysisOptions,
    usage: UsageCounts,
) -> list[tuple[list[Finding], str]]:
    """Per value (analysed together), its findings and their source, counted in ``usage``: the content findings,
    or, for a hinted value with none, the hinted entity as a whole."""
    analyses = service.analyze(texts, **options)
    found = []
    for text, hint, analysis in zip(texts, hints, analyses, strict=True):
        if analysis.findings or hint is None:
            findings, source = analysis.findings, "content"
        else:
            findings, source = [Finding(hint, 0, len(text), 1.0)], "field_name"
        usage.add_text(text, TextAnalysis(analysis.language, findings))
        found.append((findings, source))
    return found


def scan_records(
    service: PiiService, records: list[Any], options: AnalysisOptions
) -> tuple[list[dict[str, Any]], UsageCounts]:
    """Per record, the findings with the JSON path of their value."""
    values = collect_values(records)
    usage = UsageCounts()
    found = _findings(service, [v.text for v in values], [v.hint for v in values], options, usage)
    results: list[dict[str, Any]] = [{"index": index, "findings": []} for index in range(len(records))]
    for value, (findings, source) in zip(values, found, strict=True):
        results[value.record]["findings"] += [{"path": value.path, **f.as_dict(), "source": source} for f in findings]
    return results, usage


def mask_records(
    service: PiiService, records: list[Any], options: AnalysisOptions, *, profile: str, operator: str | None
) -> tuple[list[Any], UsageCounts]:
    """The records with every finding masked in place (the caller's parsed JSON is modified and returned)."""
    values = collect_values(records)
    usage = UsageCounts()
    found = _findings(service, [v.text for v in values], [v.hint for v in values], options, usage)
    for value, (findings, _) in zip(values, found, strict=True):
        if findings:
            value.container[value.key] = service.masker.mask_text(value.text, findings, profile, operator)[0]
    return records, usage


def mask_csv(
    service: PiiService,
    lines: Iterable[str],
    options: AnalysisOptions,
    *,
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
            yield _mask_chunk(service, chunk, hints, options, profile, operator, usage)
            chunk = []
    if chunk:
        yield _mask_chunk(service, chunk, hints, options, profile, operator, usage)


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
    options: AnalysisOptions,
    profile: str,
    operator: str | None,
    usage: UsageCounts,
) -> str:
    cells = [(r, c) for r, row in enumerate(rows) for c, cell in enumerate(row) if cell.strip()]
    texts = [rows[r][c] for r, c in cells]
    cell_hints = [hints[c] if c < len(hints) else None for _, c in cells]
    found = _findings(service, texts, cell_hints, options, usage)
    for (r, c), text, (findings, _) in zip(cells, texts, found, strict=True):
        if findings:
            rows[r][c] = service.masker.mask_text(text, findings, profile, operator)[0]
    return _write(rows)


def _write(rows: list[list[str]]) -> str:
    buffer = io.StringIO()
    csv.writer(buffer, lineterminator="\r\n").writerows(rows)
    return buffer.getvalue()
