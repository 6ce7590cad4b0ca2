"""The DSR policy as code (``policies/dsr/``): request types, jurisdiction profiles, calendars, verification levels,
erasure retention rules and data provenance. Loaded and validated once at start-up (an error names its file and
field and stops the service, as ``policies/masking.yaml`` does)."""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml

from govsvc.core.errors import ValidationFailed
from govsvc.dsr.calendars import Calendar, parse_calendars
from govsvc.dsr.deadlines import TIMEZONES, Deadlines, Profile, parse_period

DSR_DIR = "dsr"
REQUEST_TYPES = (
    "access",
    "portability",
    "rectification",
    "erasure",
    "restriction",
    "objection",
    "withdraw_consent",
    "opt_out_sale_share",
    "limit_spi",
    "account_cancellation",
)
# Who files the request: the subject, or someone acting for them with proof of authority.
REQUESTER_KINDS = ("subject", "authorized_agent", "guardian", "close_relative")
# PIPL Art 49: close relatives of a deceased person may access, copy, correct or delete (for their own interests).
CLOSE_RELATIVE_TYPES = frozenset({"access", "rectification", "erasure"})
ERASING_TYPES = frozenset({"erasure", "account_cancellation"})
EXPORTING_TYPES = frozenset({"access", "portability"})
LEVELS = ("none", "reasonable", "high")
PROVENANCES = ("provided", "observed", "derived", "controller")
PORTABLE_PROVENANCE = frozenset({"provided", "observed"})


@dataclass(frozen=True)
class RetentionRule:
    key: str
    categories: tuple[str, ...]
    regimes: frozenset[str]
    reason: Mapping[str, str]
    legal_basis: str
    retain_years: int

    def covers(self, category: str) -> bool:
        return any(category == c or category.startswith(c + ".") for c in self.categories)


@dataclass(frozen=True)
class DsrRules:
    deadlines: Deadlines
    verification: Mapping[str, Mapping[str, str]]
    retention_rules: tuple[RetentionRule, ...]
    provenance: Mapping[str, str]

    @property
    def profiles(self) -> Mapping[str, Profile]:
        return self.deadlines.profiles

    @property
    def calendars(self) -> Mapping[str, Calendar]:
        return self.deadlines.calendars

    def verification_level(self, regimes: Iterable[str], request_type: str) -> str:
        """The strongest level any applicable regime asks for this request type."""
        default = self.verification.get("default", {})
        levels = [
            self.verification.get(r, {}).get(request_type, default.get(request_type, "reasonable")) for r in regimes
        ]
        return max(levels or [default.get(request_type, "reasonable")], key=LEVELS.index)

    def provenance_of(self, field: str) -> str:
        return self.provenance.get(field, "provided")


def _read(path: Path) -> dict[str, Any]:
    try:
        content = yaml.safe_load(path.read_text(encoding="utf-8")) or {}
    except (OSError, yaml.YAMLError) as error:
        raise ValidationFailed(f"{path.name} cannot be read: {error}") from None
    if not isinstance(content, dict):
        raise ValidationFailed(f"{path.name} must hold a mapping")
    return content


def _names(value: Any, where: str, errors: list[dict[str, str]]) -> dict[str, str]:
    if not isinstance(value, dict) or not all(isinstance(value.get(lang), str) for lang in ("en", "zh")):
        errors.append({"field": where, "message": "an English (en) and a Simplified Chinese (zh) text"})
        return {"en": "", "zh": ""}
    return {"en": value["en"], "zh": value["zh"]}


def _profiles(document: Mapping[str, Any], calendars: Mapping[str, Calendar]) -> dict[str, Profile]:
    errors: list[dict[str, str]] = []
    profiles: dict[str, Profile] = {}
    raw_profiles = document.get("profiles")
    if not isinstance(raw_profiles, dict) or not {"gdpr", "ccpa", "pipl"} <= set(raw_profiles):
        raise ValidationFailed("deadlines.yaml needs profiles for gdpr, ccpa and pipl.")
    for key, raw in raw_profiles.items():
        where = f"deadlines.yaml:profiles.{key}"
        if not isinstance(raw, dict):
            errors.append({"field": where, "message": "must be a mapping"})
            continue
        calendar = raw.get("calendar")
        if calendar not in calendars:
            errors.append({"field": f"{where}.calendar", "message": f"one of {', '.join(sorted(calendars))}"})
            continue
        response = parse_period(raw.get("response"), f"{where}.response", errors)
        if response is None:
            errors.append({"field": f"{where}.response", "message": "a response period is required"})
            continue
        overrides: dict[str, dict[str, Any]] = {}
        for request_type, rules in (raw.get("request_types") or {}).items():
            if request_type not in REQUEST_TYPES or not isinstance(rules, dict):
                errors.append({"field": f"{where}.request_types.{request_type}", "message": "unknown request type"})
                continue
            overrides[request_type] = {
                name: parse_period(value, f"{where}.request_types.{request_type}.{name}", errors)
                for name, value in rules.items()
                if name in ("response", "acknowledgement", "extension")
            }
        reasons = raw.get("pause_reasons") or []
        if not isinstance(reasons, list):
            errors.append({"field": f"{where}.pause_reasons", "message": "a list"})
            reasons = []
        profiles[key] = Profile(
            key=key,
            name=_names(raw.get("name"), f"{where}.name", errors),
            calendar=calendar,
            timezone=str(raw.get("timezone") or TIMEZONES.get(calendar, "UTC")),
            response=response,
            acknowledgement=parse_period(raw.get("acknowledgement"), f"{where}.acknowledgement", errors),
            extension=parse_period(raw.get("extension"), f"{where}.extension", errors),
            pause_reasons=frozenset(reasons),
            legal_basis=str(raw.get("legal_basis") or ""),
            authority=_names(raw.get("authority"), f"{where}.authority", errors),
            statutory_note=raw.get("statutory_note"),
            request_types=overrides,
        )
    if errors:
        raise ValidationFailed("deadlines.yaml is invalid.", errors=errors)
    return profiles


def _verification(document: Mapping[str, Any]) -> dict[str, dict[str, str]]:
    raw = document.get("verification") or {}
    errors = []
    table: dict[str, dict[str, str]] = {}
    for scope, levels in raw.items():
        table[scope] = {}
        for request_type, level in (levels or {}).items():
            if request_type not in REQUEST_TYPES or level not in LEVELS:
                errors.append(
                    {"field": f"deadlines.yaml:verification.{scope}.{request_type}", "message": "type and level"}
                )
                continue
            table[scope][request_type] = level
    missing = set(REQUEST_TYPES) - set(table.get("default", {}))
    if missing:
        errors.append({"field": "deadlines.yaml:verification.default", "message": f"missing {sorted(missing)}"})
    if errors:
        raise ValidationFailed("deadlines.yaml verification is invalid.", errors=errors)
    return table


def _erasure(document: Mapping[str, Any]) -> tuple[tuple[RetentionRule, ...], dict[str, str]]:
    errors: list[dict[str, str]] = []
    rules = []
    for index, raw in enumerate(document.get("retention_rules") or []):
        where = f"erasure.yaml:retention_rules[{index}]"
        if not isinstance(raw, dict) or not isinstance(raw.get("key"), str):
            errors.append({"field": where, "message": "a mapping with a key"})
            continue
        categories = raw.get("categories")
        regimes = raw.get("regimes")
        years = raw.get("retain_years")
        if not isinstance(categories, list) or not categories or not isinstance(regimes, list):
            errors.append({"field": where, "message": "categories and regimes lists are required"})
            continue
        if not isinstance(years, int) or years < 1:
            errors.append({"field": f"{where}.retain_years", "message": "a positive integer"})
            continue
        rules.append(
            RetentionRule(
                key=raw["key"],
                categories=tuple(categories),
                regimes=frozenset(regimes),
                reason=_names(raw.get("reason"), f"{where}.reason", errors),
                legal_basis=str(raw.get("legal_basis") or ""),
                retain_years=years,
            )
        )
    provenance = {}
    for field_name, value in (document.get("provenance") or {}).items():
        if value not in PROVENANCES:
            errors.append({"field": f"erasure.yaml:provenance.{field_name}", "message": f"one of {PROVENANCES}"})
        provenance[str(field_name)] = str(value)
    if errors:
        raise ValidationFailed("erasure.yaml is invalid.", errors=errors)
    return tuple(rules), provenance


def load_rules(policy_dir: Path) -> DsrRules:
    """Read and validate ``policies/dsr/``."""
    directory = policy_dir / DSR_DIR
    calendars = parse_calendars(_read(directory / "calendars.yaml"))
    deadlines_document = _read(directory / "deadlines.yaml")
    profiles = _profiles(deadlines_document, calendars)
    retention, provenance = _erasure(_read(directory / "erasure.yaml"))
    return DsrRules(
        deadlines=Deadlines(profiles, calendars),
        verification=_verification(deadlines_document),
        retention_rules=retention,
        provenance=provenance,
    )
