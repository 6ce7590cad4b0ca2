"""HTTP layer of the PII API: analyse, anonymise and de-anonymise text; scan and mask JSON records and CSV."""

from __future__ import annotations

import io
import json
from collections.abc import Iterator
from typing import Any

from apiflask import APIBlueprint, Schema
from apiflask.fields import Dict, Float, Integer, List, Nested, String
from apiflask.validators import Length, OneOf, Range
from flask import Response, current_app, request, stream_with_context

from govsvc.core.access import current_principal, requires
from govsvc.core.content import accepts
from govsvc.core.db import get_db, get_session
from govsvc.core.errors import ValidationFailed
from govsvc.core.pii_guard import check_justification
from govsvc.core.schemas import QueryBoolean, StrictFloat, StrictSchema
from govsvc.pii.engines import LANGUAGES
from govsvc.pii.masking import OPERATORS, count_by_type
from govsvc.pii.records import mask_csv, mask_records, scan_records
from govsvc.pii.service import (
    DEFAULT_SCORE_THRESHOLD,
    AnalysisOptions,
    PiiService,
    TextAnalysis,
    UsageCounts,
    audit_call,
    audit_unmasked,
    check_unicode,
)

bp = APIBlueprint("pii", __name__, url_prefix="/v1/pii", tag="PII")
SECURITY = "BearerAuth"
ERRORS = [400, 401, 403, 413, 415, 422]
MAX_TEXTS = 100


def pii_service() -> PiiService:
    return current_app.extensions["govsvc.pii"]


def _settings() -> Any:
    return current_app.config["GOVSVC_SETTINGS"]


_LANGUAGE = {"validate": OneOf(list(LANGUAGES)), "metadata": {"description": "en or zh; detected by script if absent"}}


class AnalyzeOptions(StrictSchema):
    language = String(load_default=None, **_LANGUAGE)
    entities = List(
        String(validate=Length(min=1, max=40)),
        load_default=None,
        validate=Length(min=1, max=50),
        metadata={"description": "entity types to look for (GET /v1/pii/entities); a default set if absent"},
    )
    score_threshold = StrictFloat(load_default=DEFAULT_SCORE_THRESHOLD, validate=Range(min=0, max=1))


class TextsInSchema(AnalyzeOptions):
    text = String(load_default=None, metadata={"description": "one text (or texts)"})
    texts = List(String(), load_default=None, validate=Length(min=1, max=MAX_TEXTS))


class MaskOptions(Schema):
    profile = String(load_default=None, validate=Length(max=40), metadata={"description": "default: the role's"})
    operator = String(
        load_default=None, validate=OneOf(list(OPERATORS)), metadata={"description": "one operator for everything"}
    )


class AnonymizeInSchema(TextsInSchema, MaskOptions):
    pass


class DeanonymizeInSchema(StrictSchema):
    text = String(required=True, validate=Length(min=1))
    justification = String(
        required=True,
        validate=Length(min=10, max=500),
        metadata={"description": "why the plaintext is needed (a case or ticket reference); recorded in the audit log"},
    )


class RecordsInSchema(AnalyzeOptions):
    record = Dict(load_default=None, metadata={"description": "one JSON object (or records)"})
    records = List(Dict(), load_default=None, validate=Length(min=1))


class RecordsMaskInSchema(RecordsInSchema, MaskOptions):
    pass


class CsvQuerySchema(StrictSchema):
    language = String(load_default=None, **_LANGUAGE)
    profile = String(load_default=None, validate=Length(max=40))
    operator = String(load_default=None, validate=OneOf(list(OPERATORS)))
    header = QueryBoolean(load_default=True, metadata={"description": "the first row names the columns"})
    score_threshold = Float(load_default=DEFAULT_SCORE_THRESHOLD, validate=Range(min=0, max=1))


class EntitySchema(Schema):
    entity_type = String(required=True)
    start = Integer(required=True)
    end = Integer(required=True)
    score = Float(required=True)


class AnalysisSchema(Schema):
    language = String(required=True)
    entities = List(Nested(EntitySchema), required=True)


class AnalyzeOutSchema(Schema):
    results = List(Nested(AnalysisSchema), required=True)


class MaskedItemSchema(Schema):
    entity_type = String(required=True)
    category = String(required=True)
    operator = String(required=True)
    start = Integer(required=True, metadata={"description": "in the masked text"})
    end = Integer(required=True)


class AnonymizedSchema(Schema):
    text = String(required=True)
    language = String(required=True)
    items = List(Nested(MaskedItemSchema), required=True)


class AnonymizeOutSchema(Schema):
    profile = String(required=True)
    results = List(Nested(AnonymizedSchema), required=True)


class DeanonymizeOutSchema(Schema):
    text = String(required=True)
    entities = Dict(keys=String(), values=Integer(), required=True)


class RecordFindingSchema(EntitySchema):
    path = String(required=True, metadata={"example": "$.contacts[0].phone"})
    source = String(required=True, metadata={"description": "content or field_name"})


class RecordScanSchema(Schema):
    index = Integer(required=True)
    findings = List(Nested(RecordFindingSchema), required=True)


class RecordsScanOutSchema(Schema):
    results = List(Nested(RecordScanSchema), required=True)


class RecordsMaskOutSchema(Schema):
    profile = String(required=True)
    record = Dict(metadata={"description": "when one record was sent"})
    records = List(Dict(), metadata={"description": "when records were sent"})


class EntitiesOutSchema(Schema):
    nlp = String(required=True)
    languages = Dict(keys=String(), values=List(String()), required=True)
    default_entities = List(String(), required=True)
    profiles = List(String(), required=True)
    role_profile = String(required=True)


def _texts(body: dict[str, Any]) -> list[str]:
    text, texts = body["text"], body["texts"]
    if (text is None) == (texts is None):
        raise ValidationFailed("Send either text or texts.", errors=[{"field": "text", "message": "text xor texts"}])
    named = [("text", text)] if text is not None else [(f"texts[{index}]", item) for index, item in enumerate(texts)]
    for name, item in named:
        check_unicode(item, name)
    limit = _settings().pii_max_text_chars
    too_long = [name for name, item in named if len(item) > limit]
    if too_long:
        raise ValidationFailed(
            f"Texts are limited to {limit} characters.",
            errors=[{"field": name, "message": f"longer than {limit} characters"} for name in too_long],
        )
    return [item for _, item in named]


def _records(body: dict[str, Any]) -> tuple[list[Any], bool]:
    record, records = body.get("record"), body.get("records")
    if (record is None) == (records is None):
        raise ValidationFailed("Send either record or records.", errors=[{"field": "records", "message": "xor"}])
    limit = _settings().pii_max_records
    if records is not None and len(records) > limit:
        raise ValidationFailed(
            f"At most {limit} records per call.", errors=[{"field": "records", "message": f"more than {limit}"}]
        )
    return ([record] if record is not None else records), record is not None


def _options(service: PiiService, body: dict[str, Any]) -> AnalysisOptions:
    """A request's analysis options; its entity types checked (the default set when it names none)."""
    return {
        "language": body["language"],
        "entities": service.check_entities(body.get("entities")),
        "score_threshold": body["score_threshold"],
    }


def _analyze(service: PiiService, texts: list[str], body: dict[str, Any]) -> tuple[list[TextAnalysis], UsageCounts]:
    analyses = service.analyze(texts, **_options(service, body))
    usage = UsageCounts()
    for text, analysis in zip(texts, analyses, strict=True):
        usage.add_text(text, analysis)
    return analyses, usage


def _audit(action: str, usage: UsageCounts, **extra: Any) -> None:
    audit_call(get_session(), action, usage, pii_service().rules, **extra)


def _json(document: dict[str, Any]) -> Response:
    return Response(json.dumps(document, ensure_ascii=False), mimetype="application/json")


@bp.get("/entities")
@bp.output(EntitiesOutSchema)
@bp.doc(summary="Entity types, NLP engine and masking profiles available", security=SECURITY, responses=[200, 401, 403])
@requires("pii", "analyze")
def entities() -> dict[str, Any]:
    service = pii_service()
    return {
        "nlp": service.engines.nlp_name,
        "languages": {language: service.supported_entities(language) for language in LANGUAGES},
        "default_entities": list(service.check_entities(None)),
        "profiles": sorted(service.rules.profiles),
        "role_profile": service.rules.profile_for_role(current_principal().role),
    }


@bp.post("/analyze")
@bp.input(TextsInSchema, arg_name="body")
@bp.output(AnalyzeOutSchema)
@bp.doc(
    summary="Find personal data in texts (English, Chinese or mixed)",
    description="Entities with spans (character offsets), scores, de-overlapped. Audited with counts only.",
    security=SECURITY,
    responses=[200, *ERRORS],
)
@requires("pii", "analyze")
def analyze(body: dict[str, Any]) -> Response:
    analyses, usage = _analyze(pii_service(), _texts(body), body)
    _audit("pii.analyzed", usage)
    results = [{"language": a.language, "entities": [f.as_dict() for f in a.findings]} for a in analyses]
    return _json({"results": results})


@bp.post("/anonymize")
@bp.input(AnonymizeInSchema, arg_name="body")
@bp.output(AnonymizeOutSchema)
@bp.doc(
    summary="Mask personal data in texts with the caller's masking profile (or a named one)",
    description="Operators: mask (fixed window per data category), mask_all, replace, redact, pseudonymize (keyed "
    "HMAC), encrypt (reversible by roles allowed to de-anonymise).",
    security=SECURITY,
    responses=[200, *ERRORS],
)
@requires("pii", "anonymize")
def anonymize(body: dict[str, Any]) -> Response:
    service = pii_service()
    texts = _texts(body)
    profile = service.check_profile(body["profile"], current_principal().role)
    analyses, usage = _analyze(service, texts, body)
    results = []
    for text, analysis in zip(texts, analyses, strict=True):
        masked, items = service.anonymize(text, analysis, profile, body["operator"])
        results.append({"text": masked, "language": analysis.language, "items": items})
    _audit("pii.anonymized", usage, profile=profile, operator=body["operator"] or "profile")
    return _json({"profile": profile, "results": results})


@bp.post("/deanonymize")
@bp.input(DeanonymizeInSchema, arg_name="body")
@bp.output(DeanonymizeOutSchema)
@bp.doc(
    summary="Decrypt the [pii:v1:...] tokens of a text (encrypt operator), with a justification",
    description="Only for roles allowed pii:deanonymize. Audited as data.unmasked with the justification. "
    "An altered or foreign token is a 422.",
    security=SECURITY,
    responses=[200, *ERRORS],
)
@requires("pii", "deanonymize")
def deanonymize(body: dict[str, Any]) -> Response:
    justification = check_justification(body["justification"], required=True)
    service = pii_service()
    check_unicode(body["text"], "text")
    if len(body["text"]) > _settings().pii_max_text_chars * 4:
        raise ValidationFailed("The text is too long.", errors=[{"field": "text", "message": "too long"}])
    plaintext, entity_types = service.deanonymize(body["text"])
    audit_unmasked(
        get_session(), entity_types, service.rules, {"justification": justification, "tokens": len(entity_types)}
    )
    return _json({"text": plaintext, "entities": count_by_type(entity_types)})


@bp.post("/records:scan")
@bp.input(RecordsInSchema, arg_name="body")
@bp.output(RecordsScanOutSchema)
@bp.doc(
    summary="Find personal data in JSON records (nested objects and arrays)",
    description="Content detection on every string and integer, plus field-name hints (phone, 姓名, id_number...).",
    security=SECURITY,
    responses=[200, *ERRORS],
)
@requires("pii", "analyze")
def records_scan(body: dict[str, Any]) -> Response:
    service = pii_service()
    records, _ = _records(body)
    results, usage = scan_records(service, records, _options(service, body))
    _audit("pii.records_scanned", usage, records=len(records))
    return _json({"results": results})


@bp.post("/records:mask")
@bp.input(RecordsMaskInSchema, arg_name="body")
@bp.output(RecordsMaskOutSchema)
@bp.doc(summary="Mask personal data in JSON records", security=SECURITY, responses=[200, *ERRORS])
@requires("pii", "anonymize")
def records_mask(body: dict[str, Any]) -> Response:
    service = pii_service()
    records, single = _records(body)
    profile = service.check_profile(body["profile"], current_principal().role)
    masked, usage = mask_records(service, records, _options(service, body), profile=profile, operator=body["operator"])
    _audit("pii.records_masked", usage, records=len(records), profile=profile, operator=body["operator"] or "profile")
    return _json({"profile": profile, **({"record": masked[0]} if single else {"records": masked})})


@bp.post("/csv:mask")
@bp.input(CsvQuerySchema, location="query", arg_name="query")
@bp.doc(
    summary="Mask a CSV upload, streamed back (text/csv, UTF-8)",
    description="The body is read and answered in chunks of rows, so memory stays bounded; the size limit is "
    "GOVSVC_PII_CSV_MAX_BYTES. The header row's column names act as field-name hints. An error in a later chunk "
    "ends the stream early (the audit event records the failure).",
    security=SECURITY,
    responses={200: {"description": "the masked CSV", "content": {"text/csv": {"schema": {"type": "string"}}}}}
    | {status: {"description": "problem"} for status in ERRORS},
)
@requires("pii", "anonymize")
@accepts("text/csv")
def csv_mask(query: dict[str, Any]) -> Response:
    service = pii_service()
    profile = service.check_profile(query["profile"], current_principal().role)
    request.max_content_length = _settings().pii_csv_max_bytes
    lines = _utf8_lines(request.stream)
    usage = UsageCounts()
    chunks = mask_csv(
        service,
        lines,
        _options(service, query),
        profile=profile,
        operator=query["operator"],
        header=query["header"],
        usage=usage,
    )
    first = _first_chunk(chunks)  # errors in the first chunk (encoding, header, first rows) are still a 4xx
    database = get_db()
    rules = service.rules

    def stream() -> Iterator[str]:
        outcome = "failure"
        try:
            if first:
                yield first
            yield from chunks
            outcome = "success"
        finally:
            with database.transaction() as session:
                audit_call(session, "pii.csv_masked", usage, rules, outcome=outcome, profile=profile)

    return Response(stream_with_context(stream()), mimetype="text/csv")


def _first_chunk(chunks: Iterator[str]) -> str:
    try:
        return next(chunks, "")
    except UnicodeDecodeError:
        raise ValidationFailed("The CSV is not UTF-8.", errors=[{"field": "body", "message": "not UTF-8"}]) from None


def _utf8_lines(stream: Any) -> Iterator[str]:
    """Lines of the body, decoded as it is read (only \\n, \\r and \\r\\n end a line, as csv expects)."""
    yield from io.TextIOWrapper(io.BufferedReader(stream, 65536), encoding="utf-8-sig", newline="")
