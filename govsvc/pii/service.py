"""PII analysis and masking for texts (no Flask here): the engines, the masking rules and the keys of one app.

Every call is audited by the API layer with counts only (texts, characters, languages, entities per type), never
the text or the values.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, TypedDict

from sqlalchemy.orm import Session

from govsvc.audit.service import record
from govsvc.core.errors import ValidationFailed
from govsvc.pii.engines import DEFAULT_ENTITIES, LANGUAGES, Finding, PiiEngines, detect_language, fold_width
from govsvc.pii.masking import Masker, MaskingRules, PiiKeys, TokenError, count_by_type, load_rules

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
        self.rules = rules
        self.masker = Masker(rules, keys)

    @classmethod
    def build(cls, engines: PiiEngines, policy_dir: Path, secret_key: str) -> PiiService:
        return cls(engines, load_rules(policy_dir), PiiKeys(secret_key))

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
