"""PII analysis and masking for texts (no Flask here): the engines, the masking rules and the keys of one app.

Every call is audited by the API layer with counts only (texts, characters, languages, entities per type), never
the text or the values.

The masking rules are policy as code (``policies/masking.yaml``), stored in the database as numbered versions
(``govsvc seed``; the policy editor of the admin UI adds versions). A change bumps the RBAC policy version, which
every instance checks on each authenticated request, so every instance applies the new rules to its next request.
"""

from __future__ import annotations

import hashlib
import logging
from collections import Counter
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, TypedDict

import yaml
from sqlalchemy import func, select
from sqlalchemy.orm import Session

from govsvc.audit.service import record
from govsvc.core.db import utcnow
from govsvc.core.errors import ConflictError, ValidationFailed
from govsvc.pii.engines import DEFAULT_ENTITIES, LANGUAGES, Finding, PiiEngines, detect_language, fold_width
from govsvc.pii.masking import (
    MASKING_FILE,
    Masker,
    MaskingConfigError,
    MaskingRules,
    PiiKeys,
    TokenError,
    count_by_type,
    load_rules,
    parse_rules,
)
from govsvc.pii.models import MaskingVersion

logger = logging.getLogger("govsvc.pii")
MAX_MASKING_DOCUMENT_CHARS = 100_000

DEFAULT_SCORE_THRESHOLD = 0.4


class AnalysisOptions(TypedDict):
    """What a call analyses for (``PiiService.analyze``'s keyword arguments): one request's, passed along whole."""

    language: str | None
    entities: tuple[str, ...]
    score_threshold: float


def check_unicode(value: str, field: str) -> None:
    """Lone surrogates (``\\ud800`` in JSON) are not text: refuse them rather than fail later (when encoding)."""
    try:
        value.encode("utf-8")
    except UnicodeEncodeError:
        raise ValidationFailed(
            "The request holds text that is not valid Unicode.",
            errors=[{"field": field, "message": "contains lone surrogates"}],
        ) from None


@dataclass
class TextAnalysis:
    """The findings of one text (spans index the original text)."""

    language: str
    findings: list[Finding]


@dataclass(frozen=True)
class Highlight:
    """A piece of a text: plain (``entity_type`` None) or one finding, with its data category and score."""

    text: str
    entity_type: str | None = None
    category: str | None = None
    score: float | None = None


def highlights(text: str, analysis: TextAnalysis, rules: MaskingRules) -> list[Highlight]:
    """The text cut into plain pieces and findings, in order (what a reviewer sees highlighted)."""
    pieces: list[Highlight] = []
    cursor = 0
    for finding in sorted(analysis.findings, key=lambda f: f.start):
        if finding.start > cursor:
            pieces.append(Highlight(text[cursor : finding.start]))
        pieces.append(
            Highlight(
                text[finding.start : finding.end],
                finding.entity_type,
                rules.category(finding.entity_type),
                round(finding.score, 2),
            )
        )
        cursor = finding.end
    if cursor < len(text):
        pieces.append(Highlight(text[cursor:]))
    return pieces


@dataclass
class UsageCounts:
    """What one call touched, for the audit log: sizes and entity counts, never content."""

    texts: int = 0
    chars: int = 0
    languages: Counter[str] = field(default_factory=Counter)
    entities: Counter[str] = field(default_factory=Counter)

    def add_text(self, text: str, analysis: TextAnalysis) -> None:
        self.texts += 1
        self.chars += len(text)
        self.languages[analysis.language] += 1
        self.entities.update(finding.entity_type for finding in analysis.findings)

    def details(self, **extra: Any) -> dict[str, Any]:
        return {
            "texts": self.texts,
            "chars": self.chars,
            "languages": dict(sorted(self.languages.items())),
            "entities": dict(sorted(self.entities.items())),
            **extra,
        }


class PiiService:
    """One app's PII service: shared engines (per process), its masking rules and keys."""

    def __init__(self, engines: PiiEngines, rules: MaskingRules, keys: PiiKeys) -> None:
        self.engines = engines
        self.masker = Masker(rules, keys)
        self.rules_version = 0  # 0: the rules of policies/masking.yaml, read at start-up

    @property
    def rules(self) -> MaskingRules:
        """The masking rules in force (one attribute, swapped whole when a stored version replaces them)."""
        return self.masker.rules

    @classmethod
    def build(cls, engines: PiiEngines, policy_dir: Path, secret_key: str) -> PiiService:
        return cls(engines, load_rules(policy_dir), PiiKeys(secret_key))

    def use_stored_rules(self, session: Session) -> int:
        """Apply the newest stored masking version if it is not the one in force; returns the version in force.

        Called when the RBAC policy version changes (a masking change bumps it). A stored version that no longer
        parses keeps the rules in force, and says so in the log.
        """
        latest = latest_masking(session)
        if latest is None or latest[0] == self.rules_version:
            return self.rules_version
        version, text = latest
        try:
            rules = parse_rules(yaml.safe_load(text), None, source=f"masking version {version}")
        except (MaskingConfigError, yaml.YAMLError) as error:
            logger.error("stored masking rules not applied: %s", error)
            return self.rules_version
        self.masker.rules, self.rules_version = rules, version
        return version

    def supported_entities(self, language: str | None = None) -> list[str]:
        languages = [language] if language else list(LANGUAGES)
        return sorted(set().union(*(self.engines.supported[lang] for lang in languages)))

    def check_entities(self, entities: Sequence[str] | None) -> tuple[str, ...]:
        """The requested entity types (default set if none); ValidationFailed names unknown ones."""
        if not entities:
            return DEFAULT_ENTITIES
        known = set(self.supported_entities())
        unknown = sorted(set(entities) - known)
        if unknown:
            raise ValidationFailed(
                "Unknown entity types.",
                errors=[
                    {
                        "field": "entities",
                        "message": f"not supported in this NLP mode: {', '.join(unknown)}; "
                        f"supported: {', '.join(sorted(known))}",
                    }
                ],
            )
        return tuple(dict.fromkeys(entities))

    def check_profile(self, profile: str | None, role: str) -> str:
        """The profile to apply: the requested one, else the role's."""
        if profile is None:
            return self.rules.profile_for_role(role)
        if profile not in self.rules.profiles:
            raise ValidationFailed(
                "Unknown masking profile.",
                errors=[{"field": "profile", "message": f"one of {', '.join(sorted(self.rules.profiles))}"}],
            )
        return profile

    def analyze(
        self,
        texts: Sequence[str],
        *,
        language: str | None = None,
        entities: Sequence[str] = DEFAULT_ENTITIES,
        score_threshold: float = DEFAULT_SCORE_THRESHOLD,
    ) -> list[TextAnalysis]:
        """Findings for each text; the language detected by script when not given."""
        folded = [fold_width(text) for text in texts]
        languages = [language or detect_language(text) for text in folded]
        per_text = self.engines.analyze_many(folded, languages, entities, score_threshold)
        return [TextAnalysis(lang, found) for lang, found in zip(languages, per_text, strict=True)]

    def anonymize(
        self, text: str, analysis: TextAnalysis, profile: str, operator: str | None = None
    ) -> tuple[str, list[dict[str, Any]]]:
        """The masked text and, per finding, where its replacement is and which operator made it."""
        masked, spans = self.masker.mask_text(text, analysis.findings, profile, operator)
        items = [
            {
                "entity_type": span.entity_type,
                "category": self.rules.category(span.entity_type),
                "operator": span.operator,
                "start": span.new_start,
                "end": span.new_end,
            }
            for span in spans
        ]
        return masked, items

    def deanonymize(self, text: str) -> tuple[str, list[str]]:
        """Decrypt every ``[pii:v1:...]`` token; ValidationFailed (422) when one was altered."""
        try:
            return self.masker.decrypt_text(text)
        except TokenError as error:
            raise ValidationFailed(
                "A token cannot be decrypted: it was altered, truncated, or not issued by this service.",
                errors=[{"field": "text", "message": str(error)}],
            ) from None


def audit_call(
    session: Session,
    action: str,
    usage: UsageCounts,
    rules: MaskingRules,
    *,
    outcome: str = "success",
    reason_code: str | None = None,
    **extra: Any,
) -> str:
    """Record one PII call: counts only. ``data_categories`` are those of the entities found."""
    return record(
        session,
        action,
        outcome=outcome,
        object_ref="pii",
        data_categories=rules.categories(usage.entities),
        reason_code=reason_code,
        details=usage.details(**extra),
    )


def audit_unmasked(
    session: Session, entity_types: Iterable[str], rules: MaskingRules, details: Mapping[str, Any]
) -> str:
    """Record a decryption of tokens as ``data.unmasked`` with the caller's justification."""
    counts = count_by_type(entity_types)
    return record(
        session,
        "data.unmasked",
        object_ref="pii:tokens",
        data_categories=rules.categories(counts),
        reason_code="pii_deanonymize",
        details={"entities": counts, **details},
    )


# -- stored masking rules (policy as code, versioned) ------------------------------------------------------------


@dataclass(frozen=True)
class MaskingChange:
    version: int
    policy_version: int


def masking_digest(text: str) -> str:
    return hashlib.sha256(text.encode()).hexdigest()


def latest_masking(session: Session) -> tuple[int, str] | None:
    """The newest stored masking version and its YAML text, or None before the first seed."""
    row = session.execute(
        select(MaskingVersion.version, MaskingVersion.document).order_by(MaskingVersion.version.desc()).limit(1)
    ).first()
    return (int(row[0]), str(row[1])) if row else None


def validate_masking(text: str, categories: set[str]) -> MaskingRules:
    """Parse and validate a masking document (YAML) against the taxonomy's categories; ValidationFailed lists
    every problem."""
    if len(text) > MAX_MASKING_DOCUMENT_CHARS:
        raise ValidationFailed(
            "The masking rules are too long.",
            errors=[{"field": "document", "message": f"at most {MAX_MASKING_DOCUMENT_CHARS} characters"}],
        )
    try:
        document = yaml.safe_load(text)
    except yaml.YAMLError as error:
        raise ValidationFailed(
            "The masking rules are not valid YAML.", errors=[{"field": "document", "message": str(error)}]
        ) from None
    try:
        return parse_rules(document, categories, source=MASKING_FILE)
    except MaskingConfigError as error:
        problems = error.problems or [str(error)]
        raise ValidationFailed(
            "The masking rules are invalid.", errors=[{"field": "document", "message": p} for p in problems]
        ) from None


def store_masking(session: Session, text: str, categories: set[str], *, actor: str, comment: str | None) -> int:
    """Validate and store a new masking version (the caller audits it); returns its number."""
    validate_masking(text, categories)
    version = int(session.scalar(select(func.max(MaskingVersion.version))) or 0) + 1
    session.add(
        MaskingVersion(
            version=version,
            document=text,
            digest=masking_digest(text),
            created_at=utcnow(),
            created_by=actor,
            comment=comment,
        )
    )
    session.flush()
    return version


def change_masking(
    session: Session,
    text: str,
    categories: set[str],
    *,
    base_digest: str,
    actor: str,
    comment: str | None = None,
) -> MaskingChange:
    """Replace the masking rules from an editor that showed ``base_digest``: validated, stored as a new version,
    every instance told (policy version bump), audited as ``config.changed``. ConflictError when the rules changed
    since the editor read them; ValidationFailed when nothing changes."""
    from govsvc.policy.service import bump_version  # the policy version every instance watches

    latest = latest_masking(session)
    current = latest[1] if latest else ""
    if masking_digest(current) != base_digest:
        raise ConflictError("The masking rules were changed by someone else since you opened them; review again.")
    if text == current:
        raise ValidationFailed(
            "Nothing to save: the masking rules are unchanged.",
            errors=[{"field": "document", "message": "unchanged"}],
        )
    version = store_masking(session, text, categories, actor=actor, comment=comment)
    policy_version = bump_version(session, actor=actor)
    record(
        session,
        "config.changed",
        object_ref="policy:masking",
        reason_code="masking_change",
        details={"version": version, "policy_version": policy_version},
    )
    return MaskingChange(version, policy_version)


def seed_masking(session: Session, policy_dir: Path, *, replace: bool, actor: str) -> int | None:
    """Store ``policies/masking.yaml`` as a new version when none is stored (or when ``replace`` and it differs)."""
    text = (policy_dir / MASKING_FILE).read_text(encoding="utf-8")
    latest = latest_masking(session)
    if latest is not None and (not replace or latest[1] == text):
        return None
    load_rules(policy_dir)  # validated against the taxonomy files, as at start-up
    version = int(session.scalar(select(func.max(MaskingVersion.version))) or 0) + 1
    session.add(
        MaskingVersion(
            version=version,
            document=text,
            digest=masking_digest(text),
            created_at=utcnow(),
            created_by=actor,
            comment="seeded from policies/masking.yaml",
        )
    )
    session.flush()
    return version
