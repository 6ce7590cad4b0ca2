"""Turning submitted forms into the domains' inputs, with the errors a person can act on.

Each parser returns what the domain service takes, or raises ValidationFailed naming the form's fields; the
services then validate the substance (the taxonomy, the consent rules...) and their errors are shown the same way.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import date, datetime
from typing import Any
from zoneinfo import ZoneInfo

import yaml
from flask_babel import gettext

from govsvc.audit.service import OUTCOMES, EventFilter
from govsvc.consent.service import ConsentAct, ConsentItem
from govsvc.core.errors import ServiceError, ValidationFailed
from govsvc.taxonomy.service import LAWFUL_BASES, REGIMES

_ACTION_FILTER = re.compile(r"^[a-z][a-z0-9_]*(\.[a-z][a-z0-9_]*)*(\.\*)?$")
_SHA256 = re.compile(r"^[0-9a-f]{64}$")
_LANGUAGE_TAG = re.compile(r"^[a-z]{2,3}(-[A-Za-z0-9]{2,8})*$")
CONSENT_EVENTS = ("given", "withdrawn", "refused", "renewed")


@dataclass
class FormErrors:
    """What went wrong with a submitted form: a summary, and messages per field."""

    detail: str = ""
    fields: dict[str, list[str]] = field(default_factory=dict)

    def __bool__(self) -> bool:
        return bool(self.detail or self.fields)

    @classmethod
    def of(cls, error: ServiceError) -> FormErrors:
        fields: dict[str, list[str]] = {}
        for entry in error.errors or []:
            fields.setdefault(str(entry.get("field") or ""), []).append(str(entry.get("message", "")))
        return cls(error.detail, fields)


def _fail(errors: list[dict[str, str]]) -> None:
    if errors:
        raise ValidationFailed(gettext("Some fields need your attention."), errors=errors)


def text(form: Mapping[str, str], name: str, *, max_length: int = 200) -> str:
    return str(form.get(name, "")).strip()[:max_length]


def _required(form: Mapping[str, str], name: str, errors: list[dict[str, str]], *, max_length: int = 200) -> str:
    value = text(form, name, max_length=max_length + 1)
    if not value:
        errors.append({"field": name, "message": gettext("This field is required.")})
    elif len(value) > max_length:
        errors.append({"field": name, "message": gettext("At most %(n)d characters.", n=max_length)})
    return value


def local_datetime(value: str, zone: ZoneInfo) -> datetime | None:
    """A ``datetime-local`` input (the user's zone) as a UTC-aware datetime; None when empty."""
    if not value:
        return None
    parsed = datetime.fromisoformat(value)
    return (parsed if parsed.tzinfo else parsed.replace(tzinfo=zone)).astimezone(ZoneInfo("UTC"))


def audit_filter(args: Mapping[str, str], zone: ZoneInfo) -> EventFilter:
    """The audit search's filters; times are read in the user's time zone."""
    errors: list[dict[str, str]] = []
    criteria = EventFilter()
    for name in ("time_from", "time_to"):
        try:
            setattr(criteria, name, local_datetime(text(args, name, max_length=40), zone))
        except ValueError:
            errors.append({"field": name, "message": gettext("A date and time, e.g. 2026-12-01T09:30.")})
    for name in ("actor", "subject"):
        setattr(criteria, name, text(args, name) or None)
    action = text(args, "action", max_length=80)
    if action and not _ACTION_FILTER.match(action):
        errors.append({"field": "action", "message": gettext("A dotted action, or a prefix such as consent.*")})
    criteria.action = action or None
    outcome = text(args, "outcome", max_length=16)
    if outcome and outcome not in OUTCOMES:
        errors.append({"field": "outcome", "message": gettext("Unknown outcome.")})
    criteria.outcome = outcome or None
    for name in ("seq_from", "seq_to"):
        raw = text(args, name, max_length=20)
        if raw:
            if raw.isdigit():
                setattr(criteria, name, int(raw))
            else:
                errors.append({"field": name, "message": gettext("A whole number.")})
    _fail(errors)
    return criteria


def cursor(args: Mapping[str, str]) -> int | None:
    raw = text(args, "after", max_length=20)
    return int(raw) if raw.isdigit() else None


def consent_act(form: Mapping[str, str]) -> ConsentAct:
    """One consent act recorded by a person for a subject (given on paper, by phone, withdrawn...)."""
    errors: list[dict[str, str]] = []
    event = text(form, "event", max_length=16)
    if event not in CONSENT_EVENTS:
        errors.append({"field": "event", "message": gettext("Choose what happened.")})
    purpose = _required(form, "purpose", errors, max_length=80)
    channel = _required(form, "channel", errors, max_length=32)
    scope = text(form, "scope", max_length=120)
    act = ConsentAct(
        event_type=event,
        items=[ConsentItem(purpose, scope)],
        channel=channel,
        actor=text(form, "actor", max_length=16) or "subject",
        evidence_ref=text(form, "evidence_ref") or None,
    )
    if event in ("given", "renewed"):
        act.consent_type = _required(form, "consent_type", errors, max_length=16)
        act.notice_id = _required(form, "notice_id", errors, max_length=80)
        act.notice_version = _required(form, "notice_version", errors, max_length=40)
        act.notice_sha256 = text(form, "notice_sha256", max_length=64).lower()
        act.language = _required(form, "notice_language", errors, max_length=16)
        if not _SHA256.match(act.notice_sha256):
            errors.append({"field": "notice_sha256", "message": gettext("The SHA-256 of the notice: 64 hex digits.")})
        if act.language and not _LANGUAGE_TAG.match(act.language):
            errors.append({"field": "notice_language", "message": gettext("A language tag such as en or zh-CN.")})
    _fail(errors)
    return act


def purpose_definition(form: Mapping[str, Any], categories: list[str]) -> dict[str, Any]:
    """A purpose as the taxonomy holds it, from the purpose form (recipients and transfers as YAML)."""
    errors: list[dict[str, str]] = []
    key = _required(form, "key", errors, max_length=80)
    raw_version = text(form, "version", max_length=10)
    if not raw_version.isdigit() or int(raw_version) < 1:
        errors.append({"field": "version", "message": gettext("A whole number from 1.")})
    names = {language: _required(form, f"name_{language}", errors, max_length=200) for language in ("en", "zh")}
    basis = {}
    for regime in REGIMES:
        value = text(form, f"basis_{regime}", max_length=40)
        if value not in LAWFUL_BASES[regime]:
            errors.append({"field": f"basis_{regime}", "message": gettext("Choose a lawful basis.")})
        basis[regime] = value
    chosen = [c for c in form.getlist("data_categories") if c in categories] if hasattr(form, "getlist") else []
    if not chosen:
        errors.append({"field": "data_categories", "message": gettext("Choose at least one data category.")})
    extra: dict[str, Any] = {}
    for name in ("recipients", "cross_border"):
        raw = str(form.get(name, "")).strip()
        if not raw:
            continue
        try:
            value = yaml.safe_load(raw)
        except yaml.YAMLError:
            value = None
        if not isinstance(value, list):
            errors.append({"field": name, "message": gettext("A YAML list (see the example), or empty.")})
        else:
            extra[name] = value
    _fail(errors)
    purpose: dict[str, Any] = {
        "key": key,
        "version": int(raw_version),
        "name": names,
        "optional": form.get("optional") == "yes",
        "lawful_basis": basis,
        "data_categories": chosen,
        **extra,
    }
    description = text(form, "description", max_length=1000)
    if description:
        purpose["description"] = description
    return purpose


def purpose_form_values(purpose: Mapping[str, Any] | None) -> dict[str, Any]:
    """A stored purpose as the form's initial values."""
    if purpose is None:
        return {"version": 1, "optional": True, "data_categories": [], "name": {}, "lawful_basis": {}}
    values = dict(purpose)
    for name in ("recipients", "cross_border"):
        if purpose.get(name):
            values[name + "_yaml"] = yaml.safe_dump(purpose[name], allow_unicode=True, sort_keys=False)
    return values


def submitted_purpose_values(form: Any) -> dict[str, Any]:
    """What the person typed, to show the purpose form again with its errors."""
    return {
        "key": text(form, "key", max_length=80),
        "version": text(form, "version", max_length=10),
        "name": {language: text(form, f"name_{language}") for language in ("en", "zh")},
        "optional": form.get("optional") == "yes",
        "lawful_basis": {regime: text(form, f"basis_{regime}", max_length=40) for regime in REGIMES},
        "data_categories": form.getlist("data_categories") if hasattr(form, "getlist") else [],
        "recipients_yaml": str(form.get("recipients", ""))[:5000],
        "cross_border_yaml": str(form.get("cross_border", ""))[:5000],
        "description": text(form, "description", max_length=1000),
        "comment": text(form, "comment", max_length=500),
    }


# -- data-subject requests ---------------------------------------------------------------------------------------

DSR_POINT_ROWS = 3  # data-point rows on the verification form


@dataclass
class DsrQueueFilter:
    status: str | None = "open"  # a status, "open" (any open one) or None (all)
    request_type: str | None = None
    overdue: bool | None = None
    page: int = 1


def dsr_queue_filter(args: Mapping[str, str], statuses: tuple[str, ...], types: tuple[str, ...]) -> DsrQueueFilter:
    """The request queue's filters (GET parameters): status (default: open), type, overdue, page."""
    errors: list[dict[str, str]] = []
    status = text(args, "status", max_length=24) or "open"
    if status not in (*statuses, "open", "all"):
        errors.append({"field": "status", "message": gettext("Unknown status.")})
    request_type = text(args, "type", max_length=32) or None
    if request_type is not None and request_type not in types:
        errors.append({"field": "type", "message": gettext("Unknown request type.")})
    overdue = {"": None, "yes": True, "no": False}.get(text(args, "overdue", max_length=3), "bad")
    if overdue == "bad":
        errors.append({"field": "overdue", "message": gettext("Choose yes, no or any.")})
    raw_page = text(args, "page", max_length=6) or "1"
    if not raw_page.isdigit() or int(raw_page) < 1:
        errors.append({"field": "page", "message": gettext("A whole number from 1.")})
    _fail(errors)
    return DsrQueueFilter(None if status == "all" else status, request_type, overdue, int(raw_page))  # type: ignore[arg-type]


def dsr_verification(form: Any) -> dict[str, Any]:
    """The verification form as ``DsrService.verify`` takes it: the method, the data points typed (rows left
    empty are ignored), the signed declaration, or a check's outcome and evidence reference."""
    points = []
    for row in range(DSR_POINT_ROWS):
        value = text(form, f"point_value_{row}", max_length=320)
        if value:
            points.append(
                {
                    "kind": text(form, f"point_kind_{row}", max_length=32),
                    "value": value,
                    "system": text(form, f"point_system_{row}", max_length=64),
                }
            )
    passed = {"yes": True, "no": False}.get(text(form, "passed", max_length=3))
    return {
        "method": text(form, "method", max_length=32),
        "data_points": points,
        "signed_declaration": form.get("signed_declaration") == "yes",
        "evidence": text(form, "evidence", max_length=2000) or None,
        "passed": passed,
    }


def dsr_rectification(form: Mapping[str, str]) -> dict[str, str | None]:
    """Corrected values for a rectification, one ``field: value`` a line (an empty value deletes the field)."""
    corrected: dict[str, str | None] = {}
    errors: list[dict[str, str]] = []
    for line in str(form.get("corrections", ""))[:20000].splitlines():
        if not line.strip():
            continue
        name, separator, value = line.partition(":")
        if not separator or not name.strip():
            errors.append({"field": "corrections", "message": gettext("One 'field: corrected value' a line.")})
            break
        corrected[name.strip()[:80]] = value.strip() or None
    _fail(errors)
    return corrected


def dsr_intake(form: Any) -> dict[str, Any]:
    """A request received by phone, on paper or in person, as ``Intake``'s fields: the subject by id or by one
    identifier (the value travels in the form body only), the jurisdictions (needed when nobody matches), the
    channel, the language and who is asking (with a reference to their proof of authority)."""
    errors: list[dict[str, str]] = []
    request_type = _required(form, "type", errors, max_length=32)
    channel = _required(form, "channel", errors, max_length=32)
    subject = subject_reference(form)
    jurisdictions = [j for j in form.getlist("jurisdictions") if j][:5] if hasattr(form, "getlist") else []
    _fail(errors)
    return {
        "request_type": request_type,
        "channel": channel,
        "subject": subject,
        "jurisdictions": jurisdictions,
        "language": text(form, "language", max_length=8) or "en",
        "requester_kind": text(form, "requester_kind", max_length=24) or "subject",
        "evidence": text(form, "evidence", max_length=2000) or None,
    }


def subject_reference(form: Mapping[str, str]) -> dict[str, str] | None:
    """The subject named on a form: by id (``subject_kind=subject_id``) or by one identifier (kind, value and the
    system for ``crm_id``); the value travels in the form body only. None when no value was typed."""
    kind = text(form, "subject_kind", max_length=32)
    value = text(form, "subject_value", max_length=320)
    if not value:
        return None
    if kind == "subject_id":
        return {"subject_id": value}
    return {"kind": kind, "value": value, "system": text(form, "subject_system", max_length=64)}


def legal_hold(form: Any) -> dict[str, Any]:
    """A legal hold to place: its scope, the subject (by id or identifier), categories or dataset, its basis, owner
    and review date (``HoldInput``'s fields; the holds service checks which of them the scope needs)."""
    errors: list[dict[str, str]] = []
    scope = _required(form, "scope", errors, max_length=16)
    basis = _required(form, "basis", errors, max_length=500)
    owner = _required(form, "owner", errors, max_length=120)
    review_text = _required(form, "review_at", errors, max_length=10)
    review_at = None
    if review_text:
        try:
            review_at = date.fromisoformat(review_text)
        except ValueError:
            errors.append({"field": "review_at", "message": gettext("A date: YYYY-MM-DD.")})
    if basis and len(basis) < 3:
        errors.append({"field": "basis", "message": gettext("At least %(n)d characters.", n=3)})
    raw_categories = text(form, "categories", max_length=2000)
    categories = tuple(c for c in (part.strip() for part in re.split(r"[,\s]+", raw_categories)) if c)
    _fail(errors)
    return {
        "scope": scope,
        "basis": basis,
        "owner": owner,
        "review_at": review_at,
        "subject": subject_reference(form) if scope == "subject" else None,
        "categories": categories,
        "dataset": text(form, "dataset", max_length=120) or None,
    }
