"""Retention rules as policy (``policies/retention.yaml``): parsed and validated with clear errors, stored as
versions in the database, editable through the API (validated, versioned, audited).

A rule says, for a store and some data categories: after how long (``period_days``) from which ``trigger`` the
data goes, by which ``action``, what the law requires to keep first (``min_retention_days`` and its
``legal_source``), and which ``exceptions`` stop it (a legal hold always does)."""

from __future__ import annotations

import hashlib
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml
from apscheduler.triggers.cron import CronTrigger
from sqlalchemy import func, select
from sqlalchemy.orm import Session

from govsvc.core.db import utcnow
from govsvc.core.errors import ValidationFailed
from govsvc.retention.models import RetentionPolicyVersion

RETENTION_FILE = "retention.yaml"
TRIGGERS = ("created_at", "last_activity", "consent_withdrawn", "contract_end", "purpose_completed", "dsr_closed")
EVENT_TRIGGERS = ("contract_end", "purpose_completed", "account_cancelled")  # reported through the API
ACTIONS = ("delete", "anonymize", "crypto_shred", "restrict")
EXCEPTIONS = ("legal_hold", "open_dsr", "open_contract")
BUILTIN_STORES = ("vault", "consent", "dsr_exports", "api_keys")
# Which actions each kind of store can carry out, and which triggers it knows.
STORE_ACTIONS = {
    "vault": {"delete", "crypto_shred", "restrict"},
    "consent": {"delete"},
    "dsr_exports": {"delete"},
    "api_keys": {"delete"},
    "source": {"delete", "anonymize"},  # restriction of a source's rows: through min_retention_days
}
STORE_TRIGGERS = {
    "vault": set(TRIGGERS),
    "consent": {"consent_withdrawn"},
    "dsr_exports": {"created_at"},
    "api_keys": {"created_at", "last_activity"},  # last_activity of a key = its expiry or revocation
    "source": set(TRIGGERS),  # created_at, last_activity: the timestamp column; the others: the subject's event
}
MAX_DOCUMENT_CHARS = 200_000


def categories_cover(categories: Sequence[str], category: str | None) -> bool:
    """Whether ``categories`` (taxonomy keys, ``*`` for all) include ``category`` or a parent of it; a value of no
    category is covered by ``*`` only."""
    if category is None:
        return "*" in categories
    return any(c == "*" or category == c or category.startswith(c + ".") for c in categories)


@dataclass(frozen=True)
class Rule:
    key: str
    store: str  # vault | consent | dsr_exports | api_keys | source:<name>
    categories: tuple[str, ...]
    period_days: int
    trigger: str
    action: str
    masking_profile: str | None
    min_retention_days: int
    legal_source: str | None
    exceptions: tuple[str, ...]
    schedule: str | None  # cron (5 fields, UTC) or None: only on demand
    description: str = ""

    @property
    def store_kind(self) -> str:
        return "source" if self.store.startswith("source:") else self.store

    @property
    def source_name(self) -> str | None:
        return self.store.partition(":")[2] or None if self.store.startswith("source:") else None

    def covers(self, category: str | None) -> bool:
        return categories_cover(self.categories, category)

    def as_dict(self) -> dict[str, Any]:
        return {
            "key": self.key,
            "store": self.store,
            "categories": list(self.categories),
            "period_days": self.period_days,
            "trigger": self.trigger,
            "action": self.action,
            "masking_profile": self.masking_profile,
            "min_retention_days": self.min_retention_days,
            "legal_source": self.legal_source,
            "exceptions": list(self.exceptions),
            "schedule": self.schedule,
            "description": self.description,
        }


@dataclass(frozen=True)
class RetentionPolicy:
    version: int
    require_approved_dry_run: bool
    approval_valid_days: int
    rules: dict[str, Rule] = field(default_factory=dict)

    def rule(self, key: str) -> Rule | None:
        return self.rules.get(key)


def digest(text: str) -> str:
    return hashlib.sha256(text.encode()).hexdigest()


def parse(text: str, *, version: int = 0, masking_profiles: set[str] | None = None) -> RetentionPolicy:
    """Parse and validate a retention document; ValidationFailed names every problem (``rules[2].action: ...``)."""
    if len(text) > MAX_DOCUMENT_CHARS:
        raise ValidationFailed(
            "The retention rules are too long.",
            errors=[{"field": "document", "message": f"at most {MAX_DOCUMENT_CHARS} characters"}],
        )
    try:
        document = yaml.safe_load(text)
    except yaml.YAMLError as error:
        raise ValidationFailed(
            "The retention rules are not valid YAML.", errors=[{"field": "document", "message": str(error)}]
        ) from None
    problems: list[dict[str, str]] = []

    def bad(where: str, message: str) -> None:
        problems.append({"field": where, "message": message})

    if not isinstance(document, dict):
        raise ValidationFailed(
            "The retention rules are invalid.", errors=[{"field": "document", "message": "a mapping"}]
        )
    unknown = set(document) - {"require_approved_dry_run", "approval_valid_days", "rules"}
    for name in sorted(unknown):
        bad(name, "unknown key")
    require = document.get("require_approved_dry_run", True)
    if not isinstance(require, bool):
        bad("require_approved_dry_run", "true or false")
    valid_days = document.get("approval_valid_days", 7)
    if not isinstance(valid_days, int) or isinstance(valid_days, bool) or not 1 <= valid_days <= 90:
        bad("approval_valid_days", "a whole number of days, 1-90")
    items = document.get("rules")
    rules: dict[str, Rule] = {}
    if not isinstance(items, list):
        bad("rules", "a list of rules")
        items = []
    for index, item in enumerate(items):
        where = f"rules[{index}]"
        rule = _parse_rule(item, where, bad, masking_profiles)
        if rule is None:
            continue
        if rule.key in rules:
            bad(f"{where}.key", f"duplicate key {rule.key!r}")
        rules[rule.key] = rule
    if problems:
        raise ValidationFailed("The retention rules are invalid.", errors=problems)
    return RetentionPolicy(version, bool(require), int(valid_days), rules)


_RULE_KEYS = {
    "key",
    "description",
    "store",
    "categories",
    "period_days",
    "trigger",
    "action",
    "masking_profile",
    "min_retention_days",
    "legal_source",
    "exceptions",
    "schedule",
}


def _parse_rule(item: Any, where: str, bad: Any, masking_profiles: set[str] | None) -> Rule | None:
    if not isinstance(item, dict):
        bad(where, "a mapping")
        return None
    errors: list[str] = []

    def fail(name: str, message: str) -> None:
        errors.append(name)
        bad(f"{where}.{name}", message)

    for name in sorted(set(item) - _RULE_KEYS):
        fail(name, "unknown key")
    key = item.get("key")
    if not isinstance(key, str) or not key or len(key) > 80 or not all(c.isalnum() or c in "._-" for c in key):
        fail("key", "1-80 letters, digits, '.', '_', '-'")
    store = item.get("store")
    kind = None
    if isinstance(store, str) and store in BUILTIN_STORES:
        kind = store
    elif isinstance(store, str) and store.startswith("source:") and 1 < len(store) <= 120 and store[7:]:
        kind = "source"
    else:
        fail("store", f"one of {', '.join(BUILTIN_STORES)} or source:<name>")
    categories = item.get("categories", ["*"])
    if not isinstance(categories, list) or not categories or not all(isinstance(c, str) and c for c in categories):
        fail("categories", "a non-empty list of data categories ('*': all)")
        categories = []
    period = item.get("period_days")
    if not isinstance(period, int) or isinstance(period, bool) or not 0 <= period <= 36500:
        fail("period_days", "a whole number of days, 0-36500")
    trigger = item.get("trigger")
    if trigger not in TRIGGERS:
        fail("trigger", f"one of {', '.join(TRIGGERS)}")
    elif kind and trigger not in STORE_TRIGGERS[kind]:
        fail("trigger", f"store {store} supports {', '.join(sorted(STORE_TRIGGERS[kind]))}")
    action = item.get("action")
    if action not in ACTIONS:
        fail("action", f"one of {', '.join(ACTIONS)}")
    elif kind and action not in STORE_ACTIONS[kind]:
        fail("action", f"store {store} supports {', '.join(sorted(STORE_ACTIONS[kind]))}")
    profile = item.get("masking_profile")
    if action == "anonymize":
        if not isinstance(profile, str) or not profile:
            fail("masking_profile", "anonymize needs a masking profile")
        elif masking_profiles is not None and profile not in masking_profiles:
            fail("masking_profile", f"unknown profile; one of {', '.join(sorted(masking_profiles))}")
    elif profile is not None:
        fail("masking_profile", "only for action anonymize")
    minimum = item.get("min_retention_days", 0)
    if not isinstance(minimum, int) or isinstance(minimum, bool) or not 0 <= minimum <= 36500:
        fail("min_retention_days", "a whole number of days, 0-36500")
    legal_source = item.get("legal_source")
    if minimum and (not isinstance(legal_source, str) or not legal_source.strip()):
        fail("legal_source", "a minimum legal retention needs its legal source")
    elif legal_source is not None and (not isinstance(legal_source, str) or len(legal_source) > 300):
        fail("legal_source", "text, at most 300 characters")
    exceptions = item.get("exceptions", list(EXCEPTIONS))
    if not isinstance(exceptions, list) or any(e not in EXCEPTIONS for e in exceptions):
        fail("exceptions", f"a list of {', '.join(EXCEPTIONS)}")
        exceptions = []
    elif "legal_hold" not in exceptions:
        fail("exceptions", "legal_hold cannot be left out: held data is never purged")
    schedule = item.get("schedule")
    if schedule is not None:
        if not isinstance(schedule, str):
            fail("schedule", "a cron expression (minute hour day month weekday, UTC)")
        else:
            try:
                CronTrigger.from_crontab(schedule, timezone="UTC")
            except ValueError as error:
                fail("schedule", f"not a cron expression: {error}")
    description = item.get("description", "")
    if not isinstance(description, str) or len(description) > 500:
        fail("description", "text, at most 500 characters")
    if errors:
        return None
    return Rule(
        key=key,
        store=store,
        categories=tuple(categories),
        period_days=period,
        trigger=trigger,
        action=action,
        masking_profile=profile,
        min_retention_days=minimum,
        legal_source=legal_source,
        exceptions=tuple(dict.fromkeys(exceptions)),
        schedule=schedule,
        description=description,
    )


def load_file(policy_dir: Path) -> str:
    return (policy_dir / RETENTION_FILE).read_text(encoding="utf-8")


def latest(session: Session) -> tuple[int, str] | None:
    row = session.execute(
        select(RetentionPolicyVersion.version, RetentionPolicyVersion.document)
        .order_by(RetentionPolicyVersion.version.desc())
        .limit(1)
    ).first()
    return (int(row[0]), str(row[1])) if row else None


def current(session: Session, policy_dir: Path | None = None) -> RetentionPolicy:
    """The stored rules (newest version); before the first seed, the file's (version 0)."""
    found = latest(session)
    if found is None:
        if policy_dir is None:
            return RetentionPolicy(0, True, 7, {})
        return parse(load_file(policy_dir))
    return parse(found[1], version=found[0])


def store(session: Session, text: str, *, actor: str, comment: str | None, base_digest: str | None = None) -> int:
    """Validate and store a new version (the caller audits it); ``base_digest`` guards against lost updates."""
    parse(text)
    found = latest(session)
    if base_digest is not None and found is not None and digest(found[1]) != base_digest:
        from govsvc.core.errors import ConflictError

        raise ConflictError("The retention rules changed since you read them; reload and edit again.")
    version = (found[0] if found else 0) + 1
    session.add(
        RetentionPolicyVersion(
            version=version, document=text, digest=digest(text), created_at=utcnow(), created_by=actor, comment=comment
        )
    )
    session.flush()
    return version


def seed(session: Session, policy_dir: Path, *, replace: bool, actor: str) -> int | None:
    """Store ``policies/retention.yaml`` if the database has no rules (or ``replace`` and it differs)."""
    path = policy_dir / RETENTION_FILE
    if not path.exists():
        return None
    text = path.read_text(encoding="utf-8")
    found = latest(session)
    if found is not None and (not replace or digest(found[1]) == digest(text)):
        return None
    return store(session, text, actor=actor, comment="seeded from policies/retention.yaml")


def versions(session: Session) -> list[RetentionPolicyVersion]:
    return list(session.scalars(select(RetentionPolicyVersion).order_by(RetentionPolicyVersion.version.desc())))


def max_version(session: Session) -> int:
    return int(session.scalar(select(func.max(RetentionPolicyVersion.version))) or 0)
