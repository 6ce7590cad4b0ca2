"""The purpose and data taxonomy: policy as code in ``policies/taxonomy/``, validated, versioned in the database.

The whole taxonomy (data categories, purposes, channels, jurisdiction profiles) is one document; every change,
from the files (``govsvc seed``) or the API, stores a new numbered version, so a consent can always be compared
with the purpose version it was given for. ``TaxonomyCache`` keeps the parsed current version in memory and reloads
it when a newer version appears in the database.
"""

from __future__ import annotations

import copy
import functools
import hashlib
import json
import re
import threading
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml
from sqlalchemy import func, select
from sqlalchemy.orm import Session

from govsvc.audit.service import record
from govsvc.core.db import utcnow
from govsvc.core.errors import ValidationFailed
from govsvc.taxonomy.models import TaxonomyVersion

TAXONOMY_DIR = "taxonomy"
FILES = ("data_categories.yaml", "purposes.yaml", "channels.yaml", "jurisdictions.yaml", "obligations.yaml")
OBLIGATION_RE = re.compile(r"^(show|tokenize|withhold|mask:[a-z][a-z0-9_]*)$")
LEVELS = ("L1", "L2", "L3")
FLAGS = frozenset({"pipl_sensitive", "gdpr_art9", "ccpa_spi", "minor_derived"})
REGIMES = ("gdpr", "pipl", "ccpa")
LAWFUL_BASES = {
    "gdpr": {
        "consent",
        "explicit_consent",
        "contract",
        "legal_obligation",
        "vital_interests",
        "public_task",
        "legitimate_interests",
    },
    "pipl": {
        "consent",
        "separate_consent",
        "contract",
        "hr_management",
        "legal_obligation",
        "public_health",
        "news",
        "public_info",
    },
    "ccpa": {"notice", "opt_out", "opt_in"},
}
CONSENT_BASES = frozenset({"consent", "explicit_consent", "separate_consent", "opt_in"})
XB_MECHANISMS = frozenset(
    {"security_assessment", "certification", "standard_contract", "exempt", "adequacy", "scc", "bcr"}
)
_KEY_RE = re.compile(r"^[a-z][a-z0-9_]*(\.[a-z][a-z0-9_]*)*$")
_COUNTRY_RE = re.compile(r"^[A-Z]{2}$")


@dataclass(frozen=True)
class DataCategory:
    key: str
    name: Mapping[str, str]
    level: str
    flags: frozenset[str]


@dataclass(frozen=True)
class Recipient:
    key: str
    name: Mapping[str, str]
    contact: str
    method: str


@dataclass(frozen=True)
class CrossBorder:
    country: str
    recipient: str
    mechanism: str


@dataclass(frozen=True)
class Purpose:
    key: str
    version: int
    name: Mapping[str, str]
    optional: bool
    lawful_basis: Mapping[str, str]
    data_categories: tuple[str, ...]
    recipients: tuple[Recipient, ...] = ()
    cross_border: tuple[CrossBorder, ...] = ()

    @functools.cached_property
    def _scope(self) -> frozenset[str]:
        return self._compute_scope()

    def scope(self) -> frozenset[str]:
        """What consent to this purpose version covers: categories, recipients and destinations (computed once)."""
        return self._scope

    def _compute_scope(self) -> frozenset[str]:
        return frozenset(
            [f"category:{c}" for c in self.data_categories]
            + [f"recipient:{r.key}" for r in self.recipients]
            + [f"xb:{x.country}" for x in self.cross_border]
        )


_MEMO_LIMIT = 50_000


@dataclass(frozen=True)
class Taxonomy:
    """One parsed, validated version of the taxonomy."""

    version: int
    categories: Mapping[str, DataCategory]
    purposes: Mapping[str, Purpose]
    channels: Mapping[str, Mapping[str, str]]
    jurisdictions: Mapping[str, Mapping[str, Any]]
    document: Mapping[str, Any] = field(repr=False, default_factory=dict)
    fields: Mapping[str, str] = field(default_factory=dict)  # CRM field -> category
    obligations: Mapping[str, Any] = field(default_factory=dict)

    @functools.cached_property
    def _memo(self) -> dict[tuple[str, ...], Any]:
        """Answers computed from this (immutable) version, for the decisions' hot path."""
        return {}

    def _remember(self, key: tuple[str, ...], value: Any) -> Any:
        if len(self._memo) < _MEMO_LIMIT:
            self._memo[key] = value
        return value

    def memoized(self, key: tuple[str, ...], compute: Callable[[], Any]) -> Any:
        """``compute()``, once per ``key`` for this version (it must depend on this version and the key only)."""
        found = self._memo.get(key)
        if found is None:
            found = self._remember(key, compute())
        return found

    def obligation(self, role: str, category: str) -> str:
        """What a caller in ``role`` must do with data of ``category`` when allowed."""
        found = self._memo.get(("obligation", role, category))
        if found is None:
            found = self._remember(("obligation", role, category), self._obligation(role, category))
        return found

    def purpose_covers(self, purpose: Purpose, category: str) -> bool:
        """True when one of ``purpose``'s categories includes ``category``."""
        key = ("covers", purpose.key, str(purpose.version), category)
        found = self._memo.get(key)
        if found is None:
            found = self._remember(key, any(self.covers(c, category) for c in purpose.data_categories))
        return found

    def _obligation(self, role: str, category: str) -> str:
        found = self.category(category)
        level = self.level(category)
        probe = found.key if found else category
        overrides = self.obligations.get("categories", {})
        while probe:
            rule = overrides.get(probe)
            if rule:
                if role in rule:
                    return str(rule[role])
                if "default" in rule:
                    return str(rule["default"])
            probe = probe.rpartition(".")[0]
        by_role = self.obligations.get("roles", {}).get(role) or self.obligations.get("default", {})
        return str(by_role.get(level, "withhold"))

    def category(self, key: str) -> DataCategory | None:
        """The category, or the nearest defined ancestor of an undefined sub-category (user.contact.x)."""
        probe = key
        while probe:
            found = self.categories.get(probe)
            if found is not None:
                return found
            probe = probe.rpartition(".")[0]
        return None

    def level(self, key: str) -> str:
        """The sensitivity level of a category; unknown data counts as L3 (the strictest)."""
        level = self._memo.get(("level", key))
        if level is None:
            found = self.category(key)
            level = self._remember(("level", key), found.level if found else "L3")
        return level

    def covers(self, parent: str, child: str) -> bool:
        """True when category ``parent`` includes ``child`` (itself or a sub-category)."""
        return child == parent or child.startswith(parent + ".")


def _errors_for(errors: list[dict[str, Any]], where: str, message: str) -> None:
    errors.append({"field": where, "message": message})


def _names(value: Any, where: str, errors: list[dict[str, Any]]) -> dict[str, str]:
    if not isinstance(value, dict) or not isinstance(value.get("en"), str) or not isinstance(value.get("zh"), str):
        _errors_for(errors, where, "name needs an English (en) and a Simplified Chinese (zh) text")
        return {}
    return {"en": value["en"], "zh": value["zh"]}


def parse_document(document: Mapping[str, Any], version: int = 0) -> Taxonomy:
    """Validate a taxonomy document; ValidationFailed lists every problem with its location."""
    errors: list[dict[str, Any]] = []
    categories: dict[str, DataCategory] = {}
    for index, raw in enumerate(_list(document, "categories", errors)):
        where = f"categories[{index}]"
        if not isinstance(raw, dict):
            _errors_for(errors, where, "must be a mapping")
            continue
        key = raw.get("key")
        if not isinstance(key, str) or not _KEY_RE.match(key):
            _errors_for(errors, f"{where}.key", "a dotted lower-case key is required")
            continue
        if key in categories:
            _errors_for(errors, f"{where}.key", f"duplicate category {key!r}")
        level = raw.get("level")
        if level not in LEVELS:
            _errors_for(errors, f"{where}.level", f"must be one of {', '.join(LEVELS)}")
        flags = raw.get("flags", [])
        if not isinstance(flags, list) or not set(flags) <= FLAGS:
            _errors_for(errors, f"{where}.flags", f"known flags: {', '.join(sorted(FLAGS))}")
            flags = []
        if set(flags) & {"pipl_sensitive", "gdpr_art9"} and level != "L3":
            _errors_for(errors, f"{where}.level", "sensitive categories must be L3")
        _check_keys(raw, {"key", "name", "level", "flags", "description"}, where, errors)
        categories[key] = DataCategory(
            key, _names(raw.get("name"), f"{where}.name", errors), str(level), frozenset(flags)
        )

    channels: dict[str, Mapping[str, str]] = {}
    for index, raw in enumerate(_list(document, "channels", errors)):
        where = f"channels[{index}]"
        key = raw.get("key") if isinstance(raw, dict) else None
        if not isinstance(key, str) or not _KEY_RE.match(key) or key in channels:
            _errors_for(errors, f"{where}.key", "a unique lower-case key is required")
            continue
        channels[key] = _names(raw.get("name"), f"{where}.name", errors)

    jurisdictions = document.get("jurisdictions")
    if not isinstance(jurisdictions, dict) or not set(REGIMES) <= set(jurisdictions):
        _errors_for(errors, "jurisdictions", f"profiles for {', '.join(REGIMES)} are required")
        jurisdictions = {}
    for regime, profile in jurisdictions.items():
        for name, value in (profile or {}).items():
            if name.endswith("_age") and not (isinstance(value, int) and 0 < value < 21):
                _errors_for(errors, f"jurisdictions.{regime}.{name}", "an age between 1 and 20")

    fields: dict[str, str] = {}
    for index, raw in enumerate(document.get("fields") or []):
        where = f"fields[{index}]"
        key = raw.get("key") if isinstance(raw, dict) else None
        if not isinstance(key, str) or not _KEY_RE.match(key) or key in fields:
            _errors_for(errors, f"{where}.key", "a unique lower-case key is required")
            continue
        if raw.get("category") not in categories:
            _errors_for(errors, f"{where}.category", f"unknown category {raw.get('category')!r}")
            continue
        fields[key] = raw["category"]
    obligations = document.get("obligations") or {}
    _check_obligations(obligations, categories, errors)

    purposes: dict[str, Purpose] = {}
    for index, raw in enumerate(_list(document, "purposes", errors)):
        purpose = _parse_purpose(raw, f"purposes[{index}]", categories, errors)
        if purpose is None:
            continue
        if purpose.key in purposes:
            _errors_for(errors, f"purposes[{index}].key", f"duplicate purpose {purpose.key!r}")
        purposes[purpose.key] = purpose
    if errors:
        raise ValidationFailed("The taxonomy is invalid.", errors=errors)
    return Taxonomy(version, categories, purposes, channels, jurisdictions, document, fields, obligations)


def _check_obligations(obligations: Any, categories: Mapping[str, DataCategory], errors: list[dict[str, Any]]) -> None:
    if not isinstance(obligations, dict) or not isinstance(obligations.get("default"), dict):
        _errors_for(errors, "obligations.default", "an obligation per level (L1, L2, L3) is required")
        return
    tables = [("obligations.default", obligations["default"])]
    tables += [(f"obligations.roles.{role}", rule) for role, rule in (obligations.get("roles") or {}).items()]
    for where, rule in tables:
        if not isinstance(rule, dict) or set(rule) != set(LEVELS):
            _errors_for(errors, where, "an obligation for each of L1, L2, L3")
            continue
        for level, value in rule.items():
            if not OBLIGATION_RE.match(str(value)):
                _errors_for(errors, f"{where}.{level}", "show, tokenize, withhold or mask:<profile>")
    for key, rule in (obligations.get("categories") or {}).items():
        if key not in categories:
            _errors_for(errors, f"obligations.categories.{key}", "unknown category")
        for value in (rule or {}).values():
            if not OBLIGATION_RE.match(str(value)):
                _errors_for(errors, f"obligations.categories.{key}", "show, tokenize, withhold or mask:<profile>")


def _list(document: Mapping[str, Any], name: str, errors: list[dict[str, Any]]) -> list[Any]:
    value = document.get(name)
    if not isinstance(value, list) or not value:
        _errors_for(errors, name, "a non-empty list is required")
        return []
    return value


def _check_keys(raw: Mapping[str, Any], allowed: set[str], where: str, errors: list[dict[str, Any]]) -> None:
    unknown = set(raw) - allowed
    if unknown:
        _errors_for(errors, where, f"unknown fields: {', '.join(sorted(unknown))}")


def _parse_purpose(
    raw: Any, where: str, categories: Mapping[str, DataCategory], errors: list[dict[str, Any]]
) -> Purpose | None:
    if not isinstance(raw, dict):
        _errors_for(errors, where, "must be a mapping")
        return None
    _check_keys(
        raw,
        {
            "key",
            "version",
            "name",
            "optional",
            "lawful_basis",
            "data_categories",
            "recipients",
            "cross_border",
            "description",
        },
        where,
        errors,
    )
    key = raw.get("key")
    if not isinstance(key, str) or not _KEY_RE.match(key):
        _errors_for(errors, f"{where}.key", "a dotted lower-case key is required")
        return None
    version = raw.get("version")
    if not isinstance(version, int) or isinstance(version, bool) or version < 1:
        _errors_for(errors, f"{where}.version", "a positive integer is required")
        version = 1
    optional = raw.get("optional")
    if not isinstance(optional, bool):
        _errors_for(errors, f"{where}.optional", "true or false is required")
        optional = True
    basis = raw.get("lawful_basis")
    if not isinstance(basis, dict):
        _errors_for(errors, f"{where}.lawful_basis", f"a basis for each of {', '.join(REGIMES)} is required")
        basis = {}
    for regime in REGIMES:
        if basis.get(regime) not in LAWFUL_BASES[regime]:
            _errors_for(errors, f"{where}.lawful_basis.{regime}", f"one of {', '.join(sorted(LAWFUL_BASES[regime]))}")
    if not optional and any(basis.get(r) in CONSENT_BASES for r in ("gdpr", "pipl")):
        _errors_for(
            errors,
            f"{where}.optional",
            "a purpose resting on consent must be optional: refusing it may not block the service "
            "(PIPL Art 16, GDPR Art 7(4))",
        )
    data_categories = raw.get("data_categories")
    if not isinstance(data_categories, list) or not data_categories:
        _errors_for(errors, f"{where}.data_categories", "a non-empty list of category keys is required")
        data_categories = []
    for category in data_categories:
        if category not in categories:
            _errors_for(errors, f"{where}.data_categories", f"unknown category {category!r}")
    recipients = []
    for r_index, item in enumerate(raw.get("recipients") or []):
        r_where = f"{where}.recipients[{r_index}]"
        if not isinstance(item, dict) or not isinstance(item.get("key"), str) or not _KEY_RE.match(item["key"]):
            _errors_for(errors, r_where, "a recipient needs a key, name, contact and method")
            continue
        if not isinstance(item.get("contact"), str) or not isinstance(item.get("method"), str):
            _errors_for(errors, r_where, "contact and method are required (PIPL Art 23)")
            continue
        recipients.append(
            Recipient(item["key"], _names(item.get("name"), f"{r_where}.name", errors), item["contact"], item["method"])
        )
    recipient_keys = {r.key for r in recipients}
    transfers = []
    for x_index, item in enumerate(raw.get("cross_border") or []):
        x_where = f"{where}.cross_border[{x_index}]"
        if (
            not isinstance(item, dict)
            or not isinstance(item.get("country"), str)
            or not _COUNTRY_RE.match(item["country"])
        ):
            _errors_for(errors, x_where, "an ISO 3166 alpha-2 country is required")
            continue
        if item.get("recipient") not in recipient_keys:
            _errors_for(errors, x_where, "the recipient must be one of this purpose's recipients (PIPL Art 39)")
            continue
        if item.get("mechanism") not in XB_MECHANISMS:
            _errors_for(errors, x_where, f"mechanism: one of {', '.join(sorted(XB_MECHANISMS))}")
            continue
        transfers.append(CrossBorder(item["country"], item["recipient"], item["mechanism"]))
    return Purpose(
        key=key,
        version=version,
        name=_names(raw.get("name"), f"{where}.name", errors),
        optional=optional,
        lawful_basis={regime: str(basis.get(regime)) for regime in REGIMES},
        data_categories=tuple(data_categories),
        recipients=tuple(recipients),
        cross_border=tuple(transfers),
    )


def load_files(policy_dir: Path) -> dict[str, Any]:
    """Read ``policies/taxonomy/*.yaml`` into one document (not yet validated)."""
    document: dict[str, Any] = {}
    for name in FILES:
        path = policy_dir / TAXONOMY_DIR / name
        try:
            content = yaml.safe_load(path.read_text(encoding="utf-8")) or {}
        except yaml.YAMLError as error:
            raise ValidationFailed(f"{name} is not valid YAML: {error}") from None
        if not isinstance(content, dict):
            raise ValidationFailed(f"{name} must hold a mapping")
        document.update(content)
    return document


def document_digest(document: Mapping[str, Any]) -> str:
    return hashlib.sha256(json.dumps(document, sort_keys=True, ensure_ascii=False).encode()).hexdigest()


def current_version(session: Session) -> int:
    return int(session.scalar(select(func.max(TaxonomyVersion.version))) or 0)


def store_version(session: Session, document: Mapping[str, Any], *, actor: str, comment: str | None = None) -> int:
    """Validate and store a new version (the caller audits it); returns the new version number."""
    previous = latest_versions(session)
    parse_document(document)
    check_purpose_versions(previous[-1][1] if previous else None, document)
    version = current_version(session) + 1
    session.add(
        TaxonomyVersion(
            version=version,
            document=json.dumps(document, sort_keys=True, ensure_ascii=False),
            digest=document_digest(document),
            created_at=utcnow(),
            created_by=actor,
            comment=comment,
        )
    )
    session.flush()
    return version


def change_taxonomy(
    session: Session, document: Mapping[str, Any], *, object_ref: str, actor: str, comment: str | None = None
) -> int:
    """Store a changed taxonomy as a new version and audit it (``config.changed``); returns the version."""
    version = store_version(session, document, actor=actor, comment=comment)
    record(
        session, "config.changed", object_ref=object_ref, reason_code="taxonomy_change", details={"version": version}
    )
    return version


def with_purpose(document: Mapping[str, Any], purpose: Mapping[str, Any]) -> dict[str, Any]:
    """A copy of the taxonomy document with ``purpose`` added or replacing the purpose of the same key."""
    changed = copy.deepcopy(dict(document))
    others = [p for p in changed.get("purposes", []) if not isinstance(p, dict) or p.get("key") != purpose.get("key")]
    changed["purposes"] = [*others, dict(purpose)]
    return changed


def change_purpose(
    session: Session, current: Taxonomy, purpose: Mapping[str, Any], *, actor: str, comment: str | None = None
) -> int:
    """Create or change one purpose: validated with the whole taxonomy, stored as a new version, audited."""
    return change_taxonomy(
        session,
        with_purpose(current.document, purpose),
        object_ref=f"taxonomy:purpose:{purpose.get('key')}",
        actor=actor,
        comment=comment,
    )


def history(session: Session, limit: int = 20) -> list[TaxonomyVersion]:
    """The newest stored versions, newest first (who changed the taxonomy, when, and why)."""
    return list(session.scalars(select(TaxonomyVersion).order_by(TaxonomyVersion.version.desc()).limit(limit)))


def latest_versions(session: Session, limit: int = 1) -> list[tuple[int, dict[str, Any]]]:
    rows = session.execute(
        select(TaxonomyVersion.version, TaxonomyVersion.document).order_by(TaxonomyVersion.version.desc()).limit(limit)
    ).all()
    return [(version, json.loads(document)) for version, document in reversed(rows)]


def check_purpose_versions(previous: Mapping[str, Any] | None, document: Mapping[str, Any]) -> None:
    """A purpose whose definition changes must get a higher version; versions never go down."""
    if previous is None:
        return
    before = {p["key"]: p for p in previous.get("purposes", []) if isinstance(p, dict)}
    errors = []
    for index, purpose in enumerate(document.get("purposes", [])):
        old = before.get(purpose.get("key"))
        if old is None:
            continue
        if purpose.get("version", 0) < old.get("version", 0):
            errors.append({"field": f"purposes[{index}].version", "message": "purpose versions never go down"})
        elif purpose.get("version") == old.get("version") and _definition(purpose) != _definition(old):
            errors.append(
                {"field": f"purposes[{index}].version", "message": "a changed purpose needs a higher version"}
            )
    if errors:
        raise ValidationFailed("Purpose versions are inconsistent.", errors=errors)


def _definition(purpose: Mapping[str, Any]) -> str:
    return json.dumps({k: v for k, v in purpose.items() if k not in ("name", "description")}, sort_keys=True)


def seed_taxonomy(session: Session, policy_dir: Path, *, replace: bool, actor: str) -> int | None:
    """Store ``policies/taxonomy`` as a new version when there is none (or when ``replace`` and it differs)."""
    document = load_files(policy_dir)
    latest = latest_versions(session)
    if latest and (not replace or document_digest(latest[-1][1]) == document_digest(document)):
        return None
    return store_version(session, document, actor=actor, comment="seeded from policies/taxonomy")


class TaxonomyCache:
    """The current taxonomy and the history of every purpose version, reloaded when the version changes."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._taxonomy: Taxonomy | None = None
        self._history: dict[tuple[str, int], Purpose] = {}

    def current(self, session: Session) -> Taxonomy:
        version = current_version(session)
        taxonomy = self._taxonomy
        if taxonomy is None or taxonomy.version != version:
            taxonomy = self._load(session, version)
        return taxonomy

    def cached(self) -> Taxonomy | None:
        return self._taxonomy

    def purpose_version(self, key: str, version: int) -> Purpose | None:
        return self._history.get((key, version))

    def _load(self, session: Session, version: int) -> Taxonomy:
        if version == 0:
            raise ValidationFailed("No taxonomy is loaded: run `govsvc init`.")
        history: dict[tuple[str, int], Purpose] = {}
        taxonomy = None
        for stored_version, document in self._all_versions(session):
            parsed = parse_document(document, stored_version)
            for purpose in parsed.purposes.values():
                history[(purpose.key, purpose.version)] = purpose
            taxonomy = parsed
        assert taxonomy is not None
        with self._lock:
            self._taxonomy, self._history = taxonomy, history
        return taxonomy

    @staticmethod
    def _all_versions(session: Session) -> Iterable[tuple[int, dict[str, Any]]]:
        rows = session.execute(
            select(TaxonomyVersion.version, TaxonomyVersion.document).order_by(TaxonomyVersion.version)
        )
        for version, document in rows:
            yield version, json.loads(document)
