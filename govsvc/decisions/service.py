"""The policy decision: may this principal do this action on these fields of this person, for this purpose?

The answer combines who asks (casbin RBAC over data categories), what the person agreed to (consent and its
lawful basis, per regime), how sensitive the data is, and restrictions (legal hold, restricted processing,
recipients and cross-border destinations). It denies by default and says why with machine-readable reason codes;
when it allows, it says per field what the caller must do (show, mask, tokenize, withhold).

Freshness: a decision reads the subject and all its consent states in one indexed query, which also returns
the policy and taxonomy versions (``govsvc.decisions.lookup``). On PostgreSQL what it read is kept in a cache
that every write invalidates on every instance before the write returns (``govsvc.core.coherence``), so a
withdrawal or a policy change applies to the very next decision on every instance either way.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass
from datetime import date, datetime
from typing import Any

from sqlalchemy.orm import Session

from govsvc.audit.service import random_id, record
from govsvc.consent import requirements
from govsvc.core.db import utcnow
from govsvc.core.errors import KeyDestroyed, NotFoundError, ServiceError, ValidationFailed
from govsvc.crypto.service import FieldKeys
from govsvc.decisions import lookup
from govsvc.decisions.cache import SubjectCache
from govsvc.decisions.lookup import ConsentView, Snapshot, SubjectView
from govsvc.policy.service import PolicyEngine
from govsvc.subjects.service import BIRTH_DATE, age_on, normalise
from govsvc.taxonomy.service import Purpose, Taxonomy, TaxonomyCache

ACTIONS = ("read", "write", "use", "share", "export", "delete")
_PERMISSIVENESS = {"show": 0, "mask": 1, "tokenize": 2, "withhold": 3}
CACHE_SUBJECTS = 200_000
Confirm = Callable[[Snapshot], None]  # checks what was read with the subjects; raises to refuse the call


@dataclass(frozen=True)
class DecisionRequest:
    subject: Mapping[str, Any]  # {"subject_id"} or {"kind", "value", "system"}
    action: str
    purpose: str
    roles: tuple[str, ...]
    principal_id: str
    purpose_version: int | None = None
    data_categories: tuple[str, ...] = ()
    fields: tuple[str, ...] = ()
    recipient: str | None = None
    destination_country: str | None = None


@dataclass(frozen=True)
class Reason:
    code: str
    detail: str
    category: str | None = None
    regime: str | None = None

    def as_dict(self) -> dict[str, Any]:
        return {"code": self.code, "detail": self.detail, "category": self.category, "regime": self.regime}


@dataclass
class Decision:
    decision_id: str
    allowed: bool
    reasons: list[Reason]
    obligations: dict[str, str]
    subject_id: str
    purpose: str
    purpose_version: int
    policy_version: int
    taxonomy_version: int
    evaluated_at: datetime

    def as_dict(self) -> dict[str, Any]:
        return {
            "decision_id": self.decision_id,
            "decision": "allow" if self.allowed else "deny",
            "reasons": [reason.as_dict() for reason in self.reasons],
            "obligations": self.obligations,
            "subject_id": self.subject_id,
            "purpose": self.purpose,
            "purpose_version": self.purpose_version,
            "policy_version": self.policy_version,
            "taxonomy_version": self.taxonomy_version,
            "evaluated_at": self.evaluated_at,
        }


class DecisionEngine:
    """Evaluates decisions; one per app, shared by threads."""

    def __init__(
        self, keys: FieldKeys, policy: PolicyEngine, taxonomy: TaxonomyCache, cache: SubjectCache | None = None
    ) -> None:
        self.keys = keys
        self.cache = cache  # PostgreSQL: subjects kept between decisions, coherent across instances
        self.policy = policy
        self.taxonomy = taxonomy
        self._births: dict[bytes, date] = {}  # decrypted birth dates by ciphertext, of one key epoch
        self._births_epoch = 0

    # -- loading -----------------------------------------------------------------------------------------------

    def _key(self, reference: Mapping[str, Any]) -> tuple[str, ...]:
        """``(subject_id,)`` or ``(kind, system, blind_index)``; ValidationFailed for a malformed identifier."""
        if reference.get("subject_id"):
            return (str(reference["subject_id"]),)
        kind, system = str(reference.get("kind") or ""), str(reference.get("system") or "")
        normalised = normalise(kind, str(reference.get("value") or ""))
        return (kind, system, self.keys.blind_index(kind, system, normalised))

    def _forget_births_before(self, epoch: int) -> None:
        """Once any data key was destroyed (the key epoch moved), no birth date decrypted before stays in memory:
        the shredded subject's may be among them, and a restored copy of its row must not be readable through it."""
        if epoch > self._births_epoch:
            self._births = {}
            self._births_epoch = epoch

    def _age(self, session: Session, view: SubjectView, today: date, epoch: int) -> int | None:
        """The subject's age, or None when no birth date is known (or its key was destroyed)."""
        if view.birth_date_enc is None:
            return None
        key = bytes(view.birth_date_enc)
        births = self._births
        birth = births.get(key) if epoch == self._births_epoch else None
        if birth is None:
            self.keys.store.sync(session, read_epoch=epoch)  # the epoch came with the subject: no round trip to read it
            try:
                birth = date.fromisoformat(self.keys.open(session, view.subject_id, BIRTH_DATE, key))
            except KeyDestroyed:
                return None  # crypto-shredded: the birth date no longer exists
            if epoch == self._births_epoch:  # read before a destruction: used for this decision, never kept
                if len(births) > CACHE_SUBJECTS:
                    births.clear()
                births[key] = birth
        return age_on(birth, today)

    def _current(self, session: Session, policy_version: int, taxonomy_version: int) -> Taxonomy:
        if self.policy.version != policy_version:
            self.policy.ensure_current(session)
        cached = self.taxonomy.cached()
        if cached is None or cached.version != taxonomy_version:
            return self.taxonomy.current(session)
        return cached

    # -- deciding ----------------------------------------------------------------------------------------------

    def decide(
        self,
        session: Session,
        request: DecisionRequest,
        *,
        now: datetime | None = None,
        client_id: str | None = None,
        confirm: Confirm | None = None,
    ) -> Decision:
        """One decision (and its audit event when it denies or touches L3 data); raises for an invalid request."""
        result = self.decide_each(session, [request], now=now, client_id=client_id, confirm=confirm)[0]
        if isinstance(result, ServiceError):
            raise result
        return result

    def decide_each(
        self,
        session: Session,
        requests: Sequence[DecisionRequest],
        *,
        now: datetime | None = None,
        client_id: str | None = None,
        confirm: Confirm | None = None,
        grouped_audit: bool = False,
    ) -> list[Decision | ServiceError]:
        """A decision or the error of each request; all subjects are read in one round trip per 1,000.

        ``client_id``: the calling client, whose key's revocation is read in the same round trip; ``confirm`` is
        then called with the snapshot, the policy brought up to date, before anything is decided (it raises to
        refuse the whole call).
        ``grouped_audit``: the audited decisions (denies, allows on L3 data) of one subject, purpose, action and
        roles share one ``policy.deny`` and one ``policy.allow`` event naming every category and its reasons,
        and those decisions share its id (one read of many fields, as the vault does); otherwise each audited
        decision has an event of its own.
        """
        now = now or utcnow()
        today = now.date()
        keys: list[tuple[str, ...] | ServiceError] = []
        for request in requests:
            try:
                keys.append(self._key(request.subject))
            except ServiceError as error:
                keys.append(error)
        wanted = [key for key in keys if isinstance(key, tuple)]
        snapshot = lookup.load(
            session,
            [key[0] for key in wanted if len(key) == 1],
            [key for key in wanted if len(key) == 3],
            client_id=client_id,
            cache=self.cache,
        )
        taxonomy = self._current(session, int(snapshot.policy_version or 0), int(snapshot.taxonomy_version or 0))
        self._forget_births_before(snapshot.key_epoch)
        if confirm is not None:
            confirm(snapshot)
        results: list[Decision | ServiceError] = []
        deferred: list[_Audited] | None = [] if grouped_audit else None
        for request, key in zip(requests, keys, strict=True):
            view = snapshot.subjects.get(key) if isinstance(key, tuple) else None
            if isinstance(key, ServiceError):
                results.append(key)
                continue
            if view is None:
                results.append(NotFoundError("No such subject: register it first (POST /v1/subjects)."))
                continue
            view.age = self._age(session, view, today, snapshot.key_epoch)
            try:
                results.append(
                    self._evaluate(session, taxonomy, request, view, now, snapshot.held_categories, deferred)
                )
            except ServiceError as error:
                results.append(error)
        if deferred:
            _record_grouped(session, deferred)
        return results

    def _shape(self, taxonomy: Taxonomy, request: DecisionRequest) -> _Shape:
        """What ``request`` decides whatever its subject, computed once per policy and taxonomy version."""
        policy_version = self.policy.version
        key: Any = (
            "decision shape",
            policy_version,
            request.purpose,
            request.purpose_version,
            request.fields,
            request.data_categories,
            request.action,
            request.roles,
            request.recipient,
            request.destination_country,
        )
        return taxonomy.memoized(key, lambda: self._new_shape(taxonomy, request))

    def _new_shape(self, taxonomy: Taxonomy, request: DecisionRequest) -> _Shape:
        purpose = _purpose(taxonomy, self.taxonomy, request)
        categories = _categories(taxonomy, request)
        distinct = tuple(dict.fromkeys(categories.values()))
        access: list[Reason] = []
        for category in distinct:
            if not self.policy.data_allowed(request.roles, category, request.action):
                access.append(
                    Reason("no_role", f"{'/'.join(request.roles)} may not {request.action} {category}", category)
                )
            if not taxonomy.purpose_covers(purpose, category):
                access.append(Reason("category_not_in_purpose", f"{purpose.key} does not cover {category}", category))
        return _Shape(
            purpose=purpose,
            categories=categories,
            distinct=distinct,
            access_reasons=tuple(access),
            disclosure_reasons=tuple(_disclosures(request, purpose)),
            obligations={name: _obligation(taxonomy, request.roles, category) for name, category in categories.items()},
            sensitive=any(taxonomy.level(c) == "L3" for c in distinct),
            audit_categories=tuple(sorted(distinct)),
        )

    def _evaluate(
        self,
        session: Session,
        taxonomy: Taxonomy,
        request: DecisionRequest,
        subject: SubjectView,
        now: datetime,
        held_categories: frozenset[str] = frozenset(),
        deferred: list[_Audited] | None = None,
    ) -> Decision:
        shape = self._shape(taxonomy, request)
        purpose = shape.purpose
        reasons = list(shape.access_reasons)
        reasons += _restrictions(request, subject, shape.distinct, held_categories)
        reasons += shape.disclosure_reasons
        reasons += _consent_reasons(taxonomy, self.taxonomy, request, purpose, subject, shape.distinct, now)
        allowed = not reasons
        obligations = dict(shape.obligations) if allowed else dict.fromkeys(shape.categories, "withhold")
        if allowed and not shape.sensitive:
            decision_id = random_id()
        elif deferred is not None:
            decision_id = ""  # set by _record_grouped, once the call's decisions are all made
        else:
            decision_id = record(
                session,
                "policy.allow" if allowed else "policy.deny",
                outcome="allow" if allowed else "deny",
                subject_ref=subject.subject_id,
                object_ref=f"action:{request.action}",
                purpose=purpose.key,
                data_categories=shape.audit_categories,
                reason_code=reasons[0].code if reasons else None,
                details={"reasons": sorted({r.code for r in reasons}), "roles": list(request.roles)},
                keep_on_failure=not allowed,  # a refusal is on record even when the request then fails
            )
        decision = Decision(
            decision_id=decision_id,
            allowed=allowed,
            reasons=reasons,
            obligations=obligations,
            subject_id=subject.subject_id,
            purpose=purpose.key,
            purpose_version=purpose.version,
            policy_version=self.policy.version or 0,
            taxonomy_version=taxonomy.version,
            evaluated_at=now,
        )
        if not decision_id:
            deferred.append(_Audited(decision, request.action, request.roles, shape.audit_categories))  # type: ignore[union-attr]
        return decision


@dataclass(frozen=True)
class _Audited:
    """An audited decision whose event is written with the others of its group."""

    decision: Decision
    action: str
    roles: tuple[str, ...]
    categories: tuple[str, ...]


def _record_grouped(session: Session, audited: list[_Audited]) -> None:
    """One ``policy.deny`` or ``policy.allow`` event per subject, purpose, action, roles and outcome, naming each
    category's reason codes; every decision of the group takes the event's id."""
    groups: dict[tuple[Any, ...], list[_Audited]] = {}
    for item in audited:
        decision = item.decision
        key = (decision.allowed, decision.subject_id, decision.purpose, item.action, item.roles)
        groups.setdefault(key, []).append(item)
    for (allowed, subject_id, purpose, action, roles), items in groups.items():
        by_category: dict[str, set[str]] = {}
        for item in items:
            codes = {reason.code for reason in item.decision.reasons}
            for category in item.categories:
                by_category.setdefault(category, set()).update(codes)
        first = items[0].decision.reasons
        event_id = record(
            session,
            "policy.allow" if allowed else "policy.deny",
            outcome="allow" if allowed else "deny",
            subject_ref=subject_id,
            object_ref=f"action:{action}",
            purpose=purpose,
            data_categories=sorted(by_category),
            reason_code=first[0].code if first else None,
            details={
                "reasons": sorted(set().union(*by_category.values())),
                "roles": list(roles),
                "decisions": len(items),
                "by_category": {category: sorted(codes) for category, codes in sorted(by_category.items())},
            },
            keep_on_failure=not allowed,
        )
        for item in items:
            item.decision.decision_id = event_id


@dataclass(frozen=True)
class _Shape:
    """The part of a decision that depends on the request and the policy and taxonomy in force, not on its subject:
    shared by every decision of the same shape (a batch's checks usually have a handful of shapes)."""

    purpose: Purpose
    categories: Mapping[str, str]  # name asked about (field or category) -> category
    distinct: tuple[str, ...]  # the categories, each once, in the order asked
    access_reasons: tuple[Reason, ...]  # no_role, category_not_in_purpose
    disclosure_reasons: tuple[Reason, ...]  # recipient and cross-border
    obligations: Mapping[str, str]  # per name, when allowed
    sensitive: bool  # any L3 category: an allow is audited too
    audit_categories: tuple[str, ...]  # sorted


def _purpose(taxonomy: Taxonomy, cache: TaxonomyCache, request: DecisionRequest) -> Purpose:
    purpose = taxonomy.purposes.get(request.purpose)
    if purpose is None:
        raise ValidationFailed(
            "Unknown purpose.",
            errors=[{"field": "purpose", "message": f"known purposes: {', '.join(sorted(taxonomy.purposes))}"}],
        )
    if request.purpose_version is None or request.purpose_version == purpose.version:
        return purpose
    older = cache.purpose_version(purpose.key, request.purpose_version)
    if older is None:
        raise ValidationFailed(
            "Unknown purpose version.",
            errors=[{"field": "purpose_version", "message": f"versions 1 to {purpose.version} exist"}],
        )
    return older


def _categories(taxonomy: Taxonomy, request: DecisionRequest) -> dict[str, str]:
    """What is asked about, by the name the caller used (a field or a category) -> category key."""
    asked: dict[str, str] = {}
    errors = []
    for name in request.fields:
        category = taxonomy.fields.get(name)
        if category is None:
            errors.append(
                {"field": "fields", "message": f"unknown field {name!r}; known: {', '.join(sorted(taxonomy.fields))}"}
            )
        else:
            asked[name] = category
    for category in request.data_categories:
        if category not in taxonomy.categories:
            errors.append({"field": "data_categories", "message": f"unknown category {category!r}; see /v1/taxonomy"})
        else:
            asked[category] = category
    if not asked and not errors:
        errors.append({"field": "data_categories", "message": "name at least one data category or field"})
    if errors:
        raise ValidationFailed("The decision request names unknown data.", errors=errors)
    return asked


def _restrictions(
    request: DecisionRequest, subject: SubjectView, categories: Iterable[str], held_categories: frozenset[str]
) -> list[Reason]:
    reasons = []
    legal_reading = "legal" in request.roles and request.action in ("read", "export")
    if subject.legal_hold and not legal_reading:
        reasons.append(Reason("legal_hold", "the subject's data is under legal hold: legal may read it only"))
    elif held_categories and not legal_reading:
        for category in dict.fromkeys(categories):
            if any(_within(category, held) for held in held_categories):
                detail = f"{category} is under a legal hold: legal may read it only"
                reasons.append(Reason("legal_hold", detail, category))
    if subject.restricted and not (request.action == "read" and {"legal", "dpo"} & set(request.roles)):
        reasons.append(Reason("restricted", "processing of the subject's data is restricted (storage only)"))
    return reasons


def _within(category: str, held: str) -> bool:
    """Whether ``category`` is ``held`` or one of its subcategories or parents (a hold on ``user.contact`` covers
    ``user.contact.email``; a hold on ``user.contact.email`` holds part of ``user.contact``)."""
    return category == held or category.startswith(held + ".") or held.startswith(category + ".")


def _disclosures(request: DecisionRequest, purpose: Purpose) -> list[Reason]:
    reasons = []
    recipients = {r.key for r in purpose.recipients}
    if request.recipient is not None and request.recipient not in recipients:
        reasons.append(
            Reason("recipient_not_disclosed", f"{request.recipient} is not a disclosed recipient of {purpose.key}")
        )
    if request.destination_country is not None:
        transfers = [x for x in purpose.cross_border if x.country == request.destination_country]
        if request.recipient is not None:
            transfers = [x for x in transfers if x.recipient == request.recipient]
        if not transfers:
            reasons.append(
                Reason(
                    "xb_mechanism_required",
                    f"no transfer mechanism on file for {request.destination_country} under {purpose.key}",
                )
            )
    return reasons


def _relevant(item: requirements.SeparateItem, request: DecisionRequest, categories: Iterable[str]) -> bool:
    kind, _, value = item.scope.partition(":")
    if not item.scope:
        return True
    if kind == "category":
        return any(c == value or c.startswith(value + ".") or value.startswith(c + ".") for c in categories)
    if kind == "recipient":
        return request.recipient == value
    return request.destination_country == value


def _consent_reasons(
    taxonomy: Taxonomy,
    cache: TaxonomyCache,
    request: DecisionRequest,
    purpose: Purpose,
    subject: SubjectView,
    categories: Iterable[str],
    now: datetime,
) -> list[Reason]:
    categories = list(categories)
    regimes = requirements.regimes_of(subject.jurisdictions)
    reasons: list[Reason] = []
    main = subject.consent(purpose.key)
    if requirements.consent_is_the_basis(purpose, regimes):
        regime = (
            "pipl" if "pipl" in regimes and purpose.lawful_basis["pipl"] in requirements.PIPL_CONSENT_BASES else "gdpr"
        )
        reasons += _state_reasons(main, purpose, cache, now, regime)
        if main is not None and main.status == "given":
            if requirements.needs_guardian(taxonomy, subject.jurisdictions, subject.age) and main.actor != "guardian":
                reasons.append(
                    Reason(
                        "guardian_consent_required", "the subject is a minor: a guardian must consent", regime=regime
                    )
                )
            if requirements.needs_explicit(
                taxonomy, purpose, regimes
            ) and main.consent_type not in requirements.EXPLICIT_TYPES | {"guardian"}:
                reasons.append(
                    Reason("explicit_consent_missing", "special-category data needs explicit consent", regime="gdpr")
                )
        for item in requirements.separate_items(taxonomy, purpose, regimes):
            if not item.scope or not _relevant(item, request, categories):
                continue
            state = subject.consent(purpose.key, item.scope)
            if state is None or state.status != "given" or _expired(state, now):
                reasons.append(
                    Reason(item.missing_reason, f"separate consent to {item.scope} is missing", regime="pipl")
                )
    if "ccpa" in regimes:
        reasons += _ccpa_reasons(taxonomy, purpose, subject, main, now)
    return reasons


def _expired(state: ConsentView, now: datetime) -> bool:
    return state.valid_until is not None and state.valid_until <= now


def _state_reasons(
    state: ConsentView | None, purpose: Purpose, cache: TaxonomyCache, now: datetime, regime: str
) -> list[Reason]:
    if state is None or state.status == "refused":
        return [Reason("no_consent", f"no consent to {purpose.key}", regime=regime)]
    if state.status == "withdrawn":
        return [Reason("consent_withdrawn", f"consent to {purpose.key} was withdrawn", regime=regime)]
    if state.status == "expired" or _expired(state, now):
        return [Reason("consent_expired", f"consent to {purpose.key} has expired", regime=regime)]
    consented = cache.purpose_version(purpose.key, state.purpose_version)
    if consented is None or not purpose.scope() <= consented.scope():
        return [
            Reason(
                "reconsent_required",
                f"consent was given for version {state.purpose_version}; version {purpose.version} goes further",
                regime=regime,
            )
        ]
    return []


def _ccpa_reasons(
    taxonomy: Taxonomy, purpose: Purpose, subject: SubjectView, state: ConsentView | None, now: datetime
) -> list[Reason]:
    basis = purpose.lawful_basis["ccpa"]
    if basis == "notice":
        return []
    given = state is not None and state.status == "given" and not _expired(state, now)
    minor = requirements.ccpa_minor_rule(taxonomy, subject.age)
    if basis == "opt_out":
        if state is not None and state.status in ("refused", "withdrawn"):
            code = "opted_out_gpc" if state.source == "gpc" else "opted_out"
            return [Reason(code, "the consumer opted out of sale/share", regime="ccpa")]
        if minor == "parental" and not (given and state is not None and state.actor == "guardian"):
            return [Reason("parental_authorization_required", "under 13: a parent must authorise", regime="ccpa")]
        if minor == "opt_in" and not given:
            return [Reason("minor_opt_in_required", "13 to 15: the consumer must opt in", regime="ccpa")]
        return []
    if not given:  # opt_in
        return [Reason("no_consent", f"{purpose.key} needs an opt-in", regime="ccpa")]
    return []


def _obligation(taxonomy: Taxonomy, roles: Sequence[str], category: str) -> str:
    return taxonomy.memoized(("obligation of", category, *roles), lambda: _most_permissive(taxonomy, roles, category))


def _most_permissive(taxonomy: Taxonomy, roles: Sequence[str], category: str) -> str:
    options = [taxonomy.obligation(role, category) for role in roles] or ["withhold"]
    return min(options, key=lambda value: _PERMISSIVENESS[value.split(":")[0]])
