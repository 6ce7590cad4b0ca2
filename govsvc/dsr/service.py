"""Data-subject requests: intake, verification, the status machine, clock pauses, extensions, assignment, notes,
duplicate detection and overdue detection. Fulfilment across stores is ``govsvc.dsr.fulfilment``.

Status machine (reference R-DSR-06): received -> pending_verification -> verified -> in_progress -> (extended) ->
completed | partially_completed | denied | cancelled | expired. Any other change is a ConflictError (409).
Opt-outs of sale/share and limiting sensitive data skip verification by law (CCPA §7026, §7027).

Nothing personal is kept on the request: verification stores its method, outcome and a keyed hash of the evidence;
notes and reasons are checked for personal data; every change is a ``dsr.*`` audit event with pseudonymous ids.
"""

from __future__ import annotations

import hashlib
import hmac
import json
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import TYPE_CHECKING, Any

from sqlalchemy import func, select, update
from sqlalchemy.orm import Session

from govsvc.audit.service import record
from govsvc.auth.models import AdminUser
from govsvc.consent.requirements import regimes_of
from govsvc.core.db import Database, utcnow
from govsvc.core.errors import ConflictError, NotFoundError, ValidationFailed
from govsvc.core.pii_guard import pii_kind, random_reference
from govsvc.crypto.kdf import derive_key
from govsvc.crypto.service import FieldKeys
from govsvc.dsr.deadlines import Pause, Schedule
from govsvc.dsr.models import DsrConnectorRun, DsrEvent, DsrPause, DsrRequest
from govsvc.dsr.rules import (
    CLOSE_RELATIVE_TYPES,
    REQUEST_TYPES,
    REQUESTER_KINDS,
    DsrRules,
)
from govsvc.subjects.models import Subject, SubjectIdentifier
from govsvc.subjects.service import IdentifierInput, get_subject, jurisdictions_of, normalise, resolve
from govsvc.taxonomy.service import Taxonomy

if TYPE_CHECKING:
    from govsvc.policy.service import PolicyEngine

STATUSES = (
    "received",
    "pending_verification",
    "verified",
    "in_progress",
    "extended",
    "completed",
    "partially_completed",
    "denied",
    "cancelled",
    "expired",
)
TERMINAL = frozenset({"completed", "partially_completed", "denied", "cancelled", "expired"})
OPEN = frozenset(STATUSES) - TERMINAL
TRANSITIONS: Mapping[str, frozenset[str]] = {
    "received": frozenset({"pending_verification", "verified", "denied", "cancelled"}),
    "pending_verification": frozenset({"verified", "denied", "cancelled", "expired"}),
    "verified": frozenset({"in_progress", "denied", "cancelled"}),
    "in_progress": frozenset({"extended", "completed", "partially_completed", "denied", "cancelled"}),
    "extended": frozenset({"completed", "partially_completed", "denied", "cancelled"}),
}
# The Data Rights Protocol's denial reasons (reference §9), plus legal exemptions with their basis.
DENIAL_REASONS = (
    "suspected_fraud",
    "insuf_verification",
    "no_match",
    "claim_not_covered",
    "outside_jurisdiction",
    "too_many_requests",
    "legal_exemption",
    "other",
)
PAUSE_REASONS = ("awaiting_identity", "awaiting_clarification")
VERIFICATION_METHODS = ("data_points", "account_reauth", "document_check")
LANGUAGES = ("en", "zh")
EXTRA_CHANNELS = frozenset({"api", "opendsr"})
MAX_TEXT = 2000
REPEAT_WINDOW = timedelta(days=365)


@dataclass
class Requester:
    kind: str = "subject"
    evidence: str | None = None  # proof of authority (signed permission, guardianship, kinship): hashed
    guardian: Subject | None = None


@dataclass
class Intake:
    request_type: str
    channel: str
    subject: Mapping[str, Any] | None
    jurisdictions: Sequence[str] = ()
    requester: Requester = field(default_factory=Requester)
    language: str = "en"
    purposes: Sequence[str] = ()
    fields: Sequence[str] = ()
    acknowledged: bool = False
    allow_duplicate: bool = False
    source: str = "api"
    external_id: str | None = None
    received_at: datetime | None = None
    status_callback_urls: Sequence[str] = ()


def new_request_id() -> str:
    return random_reference("dsr_")


def evidence_key(secret_key: str) -> bytes:
    """The key of evidence hashes (verification data points, proofs of authority): keyed, so that a hash of a
    phone number cannot be reversed by trying every number."""
    return derive_key(secret_key, "govsvc dsr evidence v1")


def evidence_hash(key: bytes, evidence: Any) -> str:
    canonical = json.dumps(evidence, sort_keys=True, ensure_ascii=False, separators=(",", ":"))
    return hmac.new(key, canonical.encode(), hashlib.sha256).hexdigest()


def check_text(value: str | None, name: str, *, required: bool = False) -> str | None:
    """A reason or note: kept in the request and the audit log, so no personal data."""
    if value is None or not value.strip():
        if required:
            raise ValidationFailed(f"A {name} is required.", errors=[{"field": name, "message": "required"}])
        return None
    value = value.strip()
    if len(value) > MAX_TEXT:
        raise ValidationFailed(f"The {name} is too long.", errors=[{"field": name, "message": f"<= {MAX_TEXT}"}])
    kind = pii_kind(value)
    if kind:
        raise ValidationFailed(
            f"The {name} must not contain personal data: it is kept in the request record.",
            errors=[{"field": name, "message": f"it looks like personal data ({kind})"}],
        )
    return value


@dataclass(frozen=True)
class QueueSummary:
    """The open requests at a glance (the admin dashboard's panel)."""

    open: int
    overdue: int
    next_due: list[DsrRequest]


class DsrService:
    """The request lifecycle; one per app, shared by threads (holds only configuration)."""

    def __init__(self, rules: DsrRules, field_keys: FieldKeys, secret_key: str) -> None:
        self.rules = rules
        self.field_keys = field_keys
        self._evidence_key = evidence_key(secret_key)

    # -- reading -----------------------------------------------------------------------------------------------

    def get(self, session: Session, request_id: str, *, for_update: bool = False) -> DsrRequest:
        query = select(DsrRequest).where(DsrRequest.request_id == request_id)
        if for_update:
            query = query.with_for_update()
        request = session.scalar(query) if len(request_id) <= 40 else None
        if request is None:
            raise NotFoundError("No such data-subject request.")
        return request

    def subject_of(self, session: Session, request: DsrRequest) -> Subject | None:
        return session.get(Subject, request.subject_pk) if request.subject_pk else None

    def list(
        self,
        session: Session,
        *,
        status: str | None = None,
        request_type: str | None = None,
        assignee: str | None = None,
        subject_id: str | None = None,
        overdue: bool | None = None,
        after_pk: int | None = None,
        limit: int = 50,
    ) -> list[DsrRequest]:
        query = select(DsrRequest).order_by(DsrRequest.pk).limit(limit + 1)
        if status is not None:
            query = query.where(DsrRequest.status == status)
        if request_type is not None:
            query = query.where(DsrRequest.request_type == request_type)
        if assignee is not None:
            query = query.where(DsrRequest.assignee == assignee)
        if subject_id is not None:
            query = query.join(Subject, Subject.pk == DsrRequest.subject_pk).where(Subject.subject_id == subject_id)
        if overdue is True:
            query = query.where(DsrRequest.overdue_at.is_not(None), DsrRequest.status.in_(OPEN))
        elif overdue is False:
            query = query.where(DsrRequest.overdue_at.is_(None))
        if after_pk is not None:
            query = query.where(DsrRequest.pk > after_pk)
        return list(session.scalars(query))

    def queue(
        self,
        session: Session,
        *,
        status: str | None = None,
        request_type: str | None = None,
        overdue: bool | None = None,
        now: datetime | None = None,
        offset: int = 0,
        limit: int = 50,
    ) -> list[DsrRequest]:
        """The work queue, most urgent first (earliest due date): ``status`` is a status or ``"open"`` (any open
        one); ``overdue`` is judged now, as ``sla`` does (open and past its due date), not by the overdue job.
        Returns up to ``limit + 1`` rows so that the caller knows whether there is another page."""
        now = now or utcnow()
        query = select(DsrRequest).order_by(DsrRequest.due_at, DsrRequest.pk).offset(offset).limit(limit + 1)
        if status == "open":
            query = query.where(DsrRequest.status.in_(OPEN))
        elif status is not None:
            query = query.where(DsrRequest.status == status)
        if request_type is not None:
            query = query.where(DsrRequest.request_type == request_type)
        if overdue is True:
            query = query.where(DsrRequest.status.in_(OPEN), DsrRequest.due_at < now)
        elif overdue is False:
            query = query.where(~(DsrRequest.status.in_(OPEN) & (DsrRequest.due_at < now)))
        return list(session.scalars(query))

    def queue_summary(self, session: Session, *, now: datetime | None = None, upcoming: int = 5) -> QueueSummary:
        """The open requests: how many, how many are overdue now, and the ``upcoming`` earliest due dates."""
        now = now or utcnow()
        open_count = session.scalar(select(func.count()).where(DsrRequest.status.in_(OPEN))) or 0
        overdue_count = (
            session.scalar(select(func.count()).where(DsrRequest.status.in_(OPEN), DsrRequest.due_at < now)) or 0
        )
        nearest = session.scalars(
            select(DsrRequest)
            .where(DsrRequest.status.in_(OPEN))
            .order_by(DsrRequest.due_at, DsrRequest.pk)
            .limit(upcoming)
        )
        return QueueSummary(int(open_count), int(overdue_count), list(nearest))

    def events(self, session: Session, request: DsrRequest) -> list[DsrEvent]:
        return list(session.scalars(select(DsrEvent).where(DsrEvent.request_pk == request.pk).order_by(DsrEvent.pk)))

    def runs(self, session: Session, request: DsrRequest) -> list[DsrConnectorRun]:
        """Each connector's fulfilment run of the request (status, attempts, records)."""
        query = select(DsrConnectorRun).where(DsrConnectorRun.request_pk == request.pk).order_by(DsrConnectorRun.pk)
        return list(session.scalars(query))

    def pauses(self, session: Session, request: DsrRequest) -> list[DsrPause]:
        return list(session.scalars(select(DsrPause).where(DsrPause.request_pk == request.pk).order_by(DsrPause.pk)))

    # -- intake ------------------------------------------------------------------------------------------------

    def _regimes(self, intake: Intake, subject: Subject | None) -> list[str]:
        given = list(intake.jurisdictions)
        known = set(self.rules.profiles)
        if given:
            bad = [j for j in given if j.split(":")[0] not in known]
            if bad:
                raise ValidationFailed(
                    "Unknown jurisdiction.", errors=[{"field": "jurisdictions", "message": f"one of {sorted(known)}"}]
                )
            return sorted(regimes_of(given))
        if subject is None:
            raise ValidationFailed(
                "No subject matched: name the jurisdictions the request is made under.",
                errors=[{"field": "jurisdictions", "message": "required when the subject is unknown"}],
            )
        return sorted(regimes_of(jurisdictions_of(subject)) & known)

    def _check_intake(self, taxonomy: Taxonomy, intake: Intake, subject: Subject | None, regimes: list[str]) -> None:
        errors = []
        if intake.request_type not in REQUEST_TYPES:
            errors.append({"field": "type", "message": f"one of {', '.join(REQUEST_TYPES)}"})
        if intake.channel not in taxonomy.channels and intake.channel not in EXTRA_CHANNELS:
            errors.append({"field": "channel", "message": f"one of {', '.join(sorted(taxonomy.channels))}"})
        if intake.language not in LANGUAGES:
            errors.append({"field": "language", "message": "en or zh"})
        for purpose in intake.purposes:
            if purpose not in taxonomy.purposes:
                errors.append({"field": "purposes", "message": f"unknown purpose {purpose!r}"})
        for name in intake.fields:
            if name not in taxonomy.fields:
                errors.append({"field": "fields", "message": f"unknown field {name!r}"})
        requester = intake.requester
        if requester.kind not in REQUESTER_KINDS:
            errors.append({"field": "requester.kind", "message": f"one of {', '.join(REQUESTER_KINDS)}"})
        elif requester.kind != "subject" and not (requester.evidence and requester.evidence.strip()):
            errors.append(
                {
                    "field": "requester.evidence",
                    "message": "proof of authority is required for someone acting for "
                    "the subject (signed permission, guardianship, kinship)",
                }
            )
        if requester.kind == "close_relative":
            if "pipl" not in regimes:
                errors.append({"field": "requester.kind", "message": "close relatives may act under PIPL Art 49 only"})
            if intake.request_type not in CLOSE_RELATIVE_TYPES:
                errors.append(
                    {"field": "type", "message": "a close relative may access, correct or delete (PIPL Art 49)"}
                )
        registered = subject.guardian_pk if subject is not None else None
        if (
            requester.kind == "guardian"
            and registered is not None
            and (requester.guardian is None or requester.guardian.pk != registered)
        ):
            errors.append({"field": "requester.guardian", "message": "not the subject's registered guardian"})
        if errors:
            raise ValidationFailed("The request is invalid; see errors.", errors=errors)

    def create(self, session: Session, taxonomy: Taxonomy, intake: Intake, *, actor: str) -> DsrRequest:
        """Record a request: match the subject, compute its deadlines and verification level, detect duplicates."""
        subject = self._match(session, intake.subject)
        regimes = self._regimes(intake, subject)
        self._check_intake(taxonomy, intake, subject, regimes)
        if intake.external_id is not None:
            existing = session.scalar(select(DsrRequest).where(DsrRequest.external_id == intake.external_id))
            if existing is not None:
                raise ConflictError("A request with this subject_request_id exists.", request_id=existing.request_id)
        repeat_count = 0
        if subject is not None:
            open_duplicate = session.scalar(
                select(DsrRequest.request_id).where(
                    DsrRequest.subject_pk == subject.pk,
                    DsrRequest.request_type == intake.request_type,
                    DsrRequest.status.in_(OPEN),
                )
            )
            if open_duplicate is not None and not intake.allow_duplicate:
                raise ConflictError(
                    "An open request of this type exists for this subject.",
                    reason="duplicate_request",
                    existing_request_id=open_duplicate,
                )
            repeat_count = int(
                session.scalar(
                    select(func.count()).where(
                        DsrRequest.subject_pk == subject.pk,
                        DsrRequest.request_type == intake.request_type,
                        DsrRequest.received_at >= utcnow() - REPEAT_WINDOW,
                    )
                )
                or 0
            )
        received_at = intake.received_at or utcnow()
        schedule = self.rules.deadlines.schedule(regimes, intake.request_type, received_at)
        level = self.rules.verification_level(regimes, intake.request_type)
        parameters = {
            name: list(values)
            for name, values in (
                ("purposes", intake.purposes),
                ("fields", intake.fields),
                ("status_callback_urls", intake.status_callback_urls),
            )
            if values
        }
        request = DsrRequest(
            request_id=new_request_id(),
            subject_pk=subject.pk if subject else None,
            request_type=intake.request_type,
            status="received",
            jurisdictions=json.dumps(regimes),
            requester_kind=intake.requester.kind,
            requester_subject_pk=intake.requester.guardian.pk if intake.requester.guardian else None,
            authority_evidence_hash=evidence_hash(self._evidence_key, intake.requester.evidence)
            if intake.requester.evidence
            else None,
            channel=intake.channel,
            source=intake.source,
            external_id=intake.external_id,
            language=intake.language,
            parameters=json.dumps(parameters) if parameters else None,
            received_at=received_at,
            verification_level=level,
            acknowledged_at=received_at if intake.acknowledged else None,
            repeat_count=repeat_count,
            created_by=actor,
            paused=False,
            updated_at=utcnow(),
        )
        self._apply_schedule(request, schedule)
        session.add(request)
        session.flush()
        self._event(session, request, "received", actor=actor, to_status="received")
        record(
            session,
            "dsr.received",
            subject_ref=subject.subject_id if subject else None,
            object_ref=f"dsr:{request.request_id}",
            details={
                "type": request.request_type,
                "regimes": regimes,
                "requester": request.requester_kind,
                "channel": request.channel,
                "source": request.source,
                "verification_level": level,
                "repeat_count": repeat_count,
                "subject_matched": subject is not None,
            },
        )
        if level == "none":
            self._transition(session, request, "verified", actor=actor, reason="verification not allowed by law")
            request.verification_method, request.verification_outcome = "none", "not_required"
            request.verified_at = utcnow()
        else:
            self._transition(session, request, "pending_verification", actor=actor)
        return request

    def _match(self, session: Session, reference: Mapping[str, Any] | None) -> Subject | None:
        if not reference:
            return None
        try:
            return resolve(session, self.field_keys, reference)
        except NotFoundError:
            if reference.get("subject_id"):
                raise
            return None  # a request about someone we may not know: still received and answered

    def _apply_schedule(self, request: DsrRequest, schedule: Schedule) -> None:
        governing = next(s for s in schedule.regimes if s.regime == schedule.governing_regime)
        request.received_local_date = governing.received_local.isoformat()
        request.ack_due_at = schedule.ack_due_at
        request.due_at = schedule.max_extended_due_at if request.extended_at else schedule.due_at
        request.max_extended_due_at = schedule.max_extended_due_at
        request.governing_regime = schedule.governing_regime
        request.schedule = json.dumps([s.as_dict() for s in schedule.regimes], ensure_ascii=False)

    def regimes(self, request: DsrRequest) -> list[str]:
        return json.loads(request.jurisdictions)

    def parameters(self, request: DsrRequest) -> dict[str, list[str]]:
        return json.loads(request.parameters) if request.parameters else {}

    def _reschedule(self, session: Session, request: DsrRequest, *, now: datetime | None = None) -> None:
        pauses = [Pause(p.started_at, p.ended_at) for p in self.pauses(session, request)]
        self._apply_schedule(
            request,
            self.rules.deadlines.schedule(
                self.regimes(request), request.request_type, request.received_at, pauses, now=now
            ),
        )

    # -- the status machine ------------------------------------------------------------------------------------

    def _event(
        self,
        session: Session,
        request: DsrRequest,
        kind: str,
        *,
        actor: str | None,
        from_status: str | None = None,
        to_status: str | None = None,
        text: str | None = None,
        details: Mapping[str, Any] | None = None,
    ) -> None:
        session.add(
            DsrEvent(
                request_pk=request.pk,
                at=utcnow(),
                kind=kind,
                from_status=from_status,
                to_status=to_status,
                actor=actor,
                text=text,
                details=json.dumps(details, ensure_ascii=False, sort_keys=True) if details else None,
            )
        )

    def _transition(
        self,
        session: Session,
        request: DsrRequest,
        to_status: str,
        *,
        actor: str | None,
        reason: str | None = None,
        details: Mapping[str, Any] | None = None,
    ) -> None:
        current = request.status
        if to_status not in TRANSITIONS.get(current, frozenset()):
            raise ConflictError(
                f"A request that is {current} cannot become {to_status}.",
                reason="illegal_transition",
                current_status=current,
                allowed=sorted(TRANSITIONS.get(current, frozenset())),
            )
        request.status = to_status
        request.updated_at = utcnow()
        if to_status in TERMINAL:
            request.closed_at = utcnow()
            self._close_pause(session, request)
        self._event(
            session,
            request,
            "status",
            actor=actor,
            from_status=current,
            to_status=to_status,
            text=reason,
            details=details,
        )
        if to_status not in ("pending_verification",):
            record(
                session,
                f"dsr.{to_status}",
                subject_ref=self._subject_ref(session, request),
                object_ref=f"dsr:{request.request_id}",
                reason_code=request.denial_reason if to_status == "denied" else None,
                details={"type": request.request_type, "from": current, **(dict(details) if details else {})},
            )

    def _subject_ref(self, session: Session, request: DsrRequest) -> str | None:
        subject = self.subject_of(session, request)
        return subject.subject_id if subject else None

    def transition(self, session: Session, request: DsrRequest, to_status: str, *, actor: str) -> None:
        """Move to ``to_status`` (409 when the machine forbids it)."""
        self._transition(session, request, to_status, actor=actor)

    # -- verification ------------------------------------------------------------------------------------------

    def _matched_points(self, session: Session, subject: Subject, points: Sequence[Mapping[str, str]]) -> int:
        """How many distinct submitted identifiers match the subject's own (blind-index comparison)."""
        matched = set()
        for point in points:
            kind, system = str(point.get("kind", "")), str(point.get("system") or "")
            try:
                normalised = normalise(kind, str(point.get("value", "")))
            except ValidationFailed:
                continue
            index = self.field_keys.blind_index(kind, system, normalised)
            found = session.scalar(
                select(SubjectIdentifier.pk).where(
                    SubjectIdentifier.subject_pk == subject.pk,
                    SubjectIdentifier.kind == kind,
                    SubjectIdentifier.system == system,
                    SubjectIdentifier.blind_index == index,
                )
            )
            if found is not None:
                matched.add((kind, system))
        return len(matched)

    def verify(
        self,
        session: Session,
        request: DsrRequest,
        *,
        method: str,
        actor: str,
        data_points: Sequence[Mapping[str, str]] = (),
        signed_declaration: bool = False,
        evidence: str | None = None,
        passed: bool | None = None,
    ) -> bool:
        """Verify the requester's identity proportionately (reference §3.3); only the method, outcome and a keyed
        hash of the evidence are stored. Returns whether the request is now verified."""
        if request.status != "pending_verification":
            raise ConflictError(f"A request that is {request.status} is not waiting for verification.")
        subject = self.subject_of(session, request)
        if subject is None:
            raise ConflictError("No subject matched this request: deny it (no_match) or cancel it.")
        if method not in VERIFICATION_METHODS:
            raise ValidationFailed(
                "Unknown method.", errors=[{"field": "method", "message": str(VERIFICATION_METHODS)}]
            )
        level = request.verification_level
        if method == "data_points":
            if not data_points:
                raise ValidationFailed(
                    "Submit the data points to match.", errors=[{"field": "data_points", "message": "required"}]
                )
            matched = self._matched_points(session, subject, data_points)
            needed = 3 if level == "high" else 2
            ok = matched >= needed and (level != "high" or signed_declaration)
            proof: Any = {
                "points": sorted(
                    f"{p.get('kind')}|{p.get('system') or ''}|{_normalised_or_raw(p)}" for p in data_points
                ),
                "declaration": signed_declaration,
            }
            details = {"matched": matched, "needed": needed, "declaration": signed_declaration}
        else:
            if passed is None or not (evidence and evidence.strip()):
                raise ValidationFailed(
                    "Say whether the check passed and reference its evidence.",
                    errors=[{"field": "passed", "message": "required"}, {"field": "evidence", "message": "required"}],
                )
            ok, proof, details = passed, evidence, {}
        request.verification_method = method
        request.verification_outcome = "passed" if ok else "failed"
        request.verification_evidence_hash = evidence_hash(self._evidence_key, proof)
        details = {"method": method, "level": level, "outcome": request.verification_outcome, **details}
        if ok:
            request.verified_at = utcnow()
            self._close_pause(session, request, reason="awaiting_identity")
            self._transition(session, request, "verified", actor=actor, details=details)
        else:
            self._event(session, request, "verification_failed", actor=actor, details=details)
            record(
                session,
                "dsr.verification_failed",
                outcome="failure",
                subject_ref=subject.subject_id,
                object_ref=f"dsr:{request.request_id}",
                details=details,
            )
        request.updated_at = utcnow()
        return ok

    # -- clock -------------------------------------------------------------------------------------------------

    def pause(self, session: Session, request: DsrRequest, reason: str, *, actor: str, note: str | None = None) -> None:
        """Stop the clock while waiting for identity or clarification, where every applicable profile allows it."""
        if reason not in PAUSE_REASONS:
            raise ValidationFailed("Unknown pause reason.", errors=[{"field": "reason", "message": str(PAUSE_REASONS)}])
        if request.status not in ("pending_verification", "verified", "in_progress", "extended"):
            raise ConflictError(f"A request that is {request.status} cannot be paused.")
        if request.paused:
            raise ConflictError("The clock is already paused.")
        forbidding = self.rules.deadlines.pause_allowed(self.regimes(request), reason)
        if forbidding:
            raise ConflictError(
                f"The clock may not stop for {reason} under {', '.join(forbidding)}.",
                reason="pause_not_allowed",
                regimes=forbidding,
            )
        note = check_text(note, "note")
        session.add(DsrPause(request_pk=request.pk, reason=reason, started_at=utcnow()))
        request.paused = True
        request.updated_at = utcnow()
        self._event(session, request, "paused", actor=actor, text=note, details={"reason": reason})
        record(
            session,
            "dsr.paused",
            subject_ref=self._subject_ref(session, request),
            object_ref=f"dsr:{request.request_id}",
            reason_code=reason,
        )

    def resume(self, session: Session, request: DsrRequest, *, actor: str) -> None:
        if not request.paused:
            raise ConflictError("The clock is not paused.")
        self._close_pause(session, request)
        self._event(session, request, "resumed", actor=actor, details={"due_at": request.due_at.isoformat()})
        record(
            session,
            "dsr.resumed",
            subject_ref=self._subject_ref(session, request),
            object_ref=f"dsr:{request.request_id}",
            details={"due_at": request.due_at.isoformat()},
        )

    def _close_pause(self, session: Session, request: DsrRequest, *, reason: str | None = None) -> None:
        if not request.paused:
            return
        open_pause = session.scalar(
            select(DsrPause).where(DsrPause.request_pk == request.pk, DsrPause.ended_at.is_(None))
        )
        if open_pause is not None and (reason is None or open_pause.reason == reason):
            open_pause.ended_at = utcnow()
            request.paused = False
            session.flush()
            self._reschedule(session, request)

    def extend(self, session: Session, request: DsrRequest, reason: str, *, actor: str) -> None:
        """Extend the answer deadline to the longest the profiles allow: only once, only before the first due
        date, with a reason (the subject is told: the ``extension`` letter)."""
        reason_text = check_text(reason, "reason", required=True)
        if request.status in TERMINAL:
            raise ConflictError(f"A request that is {request.status} cannot be extended.")
        if request.extended_at is not None:
            raise ConflictError("The request was extended already.", reason="already_extended")
        if utcnow() > request.due_at:
            raise ConflictError("An extension must be decided before the first due date.", reason="extension_too_late")
        if request.max_extended_due_at <= request.due_at:
            raise ConflictError(
                "No applicable regime allows an extension (the strictest wins).", reason="extension_not_allowed"
            )
        request.extended_at = utcnow()
        request.extension_reason = reason_text
        request.due_at = request.max_extended_due_at
        if request.status == "in_progress":
            self._transition(session, request, "extended", actor=actor, reason=reason_text)
        else:
            record(
                session,
                "dsr.extended",
                subject_ref=self._subject_ref(session, request),
                object_ref=f"dsr:{request.request_id}",
                details={"type": request.request_type, "from": request.status},
            )
        self._event(
            session, request, "extension", actor=actor, text=reason_text, details={"due_at": request.due_at.isoformat()}
        )

    def acknowledge(self, session: Session, request: DsrRequest, *, actor: str) -> None:
        if request.acknowledged_at is not None:
            raise ConflictError("The request was acknowledged already.")
        request.acknowledged_at = utcnow()
        self._event(session, request, "acknowledged", actor=actor)
        record(
            session,
            "dsr.acknowledged",
            subject_ref=self._subject_ref(session, request),
            object_ref=f"dsr:{request.request_id}",
        )

    # -- closing -----------------------------------------------------------------------------------------------

    def deny(
        self, session: Session, request: DsrRequest, reason: str, legal_basis: str, *, actor: str, note: str | None
    ) -> None:
        if reason not in DENIAL_REASONS:
            raise ValidationFailed(
                "Unknown denial reason.", errors=[{"field": "reason", "message": str(DENIAL_REASONS)}]
            )
        legal_basis = check_text(legal_basis, "legal_basis", required=True) or ""
        note = check_text(note, "note")
        request.denial_reason = reason
        request.denial_legal_basis = legal_basis[:120]
        self._transition(session, request, "denied", actor=actor, reason=note, details={"legal_basis": legal_basis})

    def cancel(self, session: Session, request: DsrRequest, *, actor: str, reason: str | None) -> None:
        self._transition(session, request, "cancelled", actor=actor, reason=check_text(reason, "reason"))

    def assignees(self, session: Session, policy: PolicyEngine) -> list[str]:
        """Who a request may be assigned to: the usernames of the enabled admin users whose role the policy lets
        work requests (``dsr:manage``), sorted."""
        wanted = policy.roles_allowed("dsr", "manage")
        if not wanted:
            return []
        query = (
            select(AdminUser.username)
            .where(AdminUser.role.in_(wanted), AdminUser.disabled_at.is_(None))
            .order_by(AdminUser.username)
        )
        return list(session.scalars(query))

    def assign(
        self, session: Session, request: DsrRequest, assignee: str | None, *, actor: str, policy: PolicyEngine
    ) -> None:
        """Assign the request to ``assignee`` (None or blank: unassign), who must be one of ``assignees``."""
        assignee = check_text(assignee, "assignee")  # blank: unassign
        if assignee is not None:
            known = self.assignees(session, policy)
            if assignee not in known:
                raise ValidationFailed(
                    "The assignee must be an enabled admin user whose role may work requests.",
                    errors=[{"field": "assignee", "message": "not an assignable user", "known": known}],
                )
        request.assignee = assignee
        request.updated_at = utcnow()
        self._event(session, request, "assigned", actor=actor, details={"assignee": assignee})
        record(
            session,
            "dsr.assigned",
            subject_ref=self._subject_ref(session, request),
            object_ref=f"dsr:{request.request_id}",
            details={"assignee": assignee},
        )

    def add_note(self, session: Session, request: DsrRequest, text: str, *, actor: str) -> None:
        note = check_text(text, "text", required=True)
        self._event(session, request, "note", actor=actor, text=note)
        request.updated_at = utcnow()
        record(
            session,
            "dsr.note_added",
            subject_ref=self._subject_ref(session, request),
            object_ref=f"dsr:{request.request_id}",
        )

    def sla(self, request: DsrRequest, now: datetime | None = None) -> dict[str, Any]:
        """The countdown to the due date (negative once overdue)."""
        now = now or utcnow()
        remaining = request.due_at - now
        return {
            "due_at": request.due_at,
            "seconds_remaining": int(remaining.total_seconds()),
            "days_remaining": remaining.days,
            "overdue": request.status in OPEN and remaining.total_seconds() < 0,
            "paused": request.paused,
            "ack_due_at": request.ack_due_at,
            "acknowledged": request.acknowledged_at is not None,
        }


def _normalised_or_raw(point: Mapping[str, str]) -> str:
    try:
        return normalise(str(point.get("kind", "")), str(point.get("value", "")))
    except ValidationFailed:
        return str(point.get("value", ""))


# -- the overdue job -------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class OverdueReport:
    overdue: int
    ack_overdue: int
    expired: int


def check_overdue(database: Database, service: DsrService, *, now: datetime | None = None) -> OverdueReport:
    """Flag open requests past their due date: exactly one ``dsr.overdue`` event per request, however many
    instances run the job at once (the flag is set by a conditional update; its winner records the event). Also
    ``dsr.ack_overdue`` once per unacknowledged request past its acknowledgement date, and requests still
    unverified after the longest allowed date become ``expired``. Paused requests are not overdue."""
    now = now or utcnow()
    overdue = ack_overdue = expired = 0
    with database.transaction() as session:
        candidates = session.execute(
            select(DsrRequest.pk, DsrRequest.request_id).where(
                DsrRequest.status.in_(OPEN),
                DsrRequest.paused.is_(False),
                DsrRequest.overdue_at.is_(None),
                DsrRequest.due_at < now,
            )
        ).all()
        for pk, request_id in candidates:
            claimed = session.execute(
                update(DsrRequest).where(DsrRequest.pk == pk, DsrRequest.overdue_at.is_(None)).values(overdue_at=now)
            ).rowcount
            if claimed == 1:
                request = session.get(DsrRequest, pk)
                assert request is not None
                record(
                    session,
                    "dsr.overdue",
                    outcome="failure",
                    subject_ref=service._subject_ref(session, request),
                    object_ref=f"dsr:{request_id}",
                    details={
                        "type": request.request_type,
                        "status": request.status,
                        "due_at": request.due_at.isoformat(),
                    },
                )
                service._event(session, request, "overdue", actor="system")
                overdue += 1
        acks = session.execute(
            select(DsrRequest.pk, DsrRequest.request_id).where(
                DsrRequest.status.in_(OPEN),
                DsrRequest.acknowledged_at.is_(None),
                DsrRequest.ack_overdue_at.is_(None),
                DsrRequest.ack_due_at < now,
            )
        ).all()
        for pk, request_id in acks:
            claimed = session.execute(
                update(DsrRequest)
                .where(DsrRequest.pk == pk, DsrRequest.ack_overdue_at.is_(None))
                .values(ack_overdue_at=now)
            ).rowcount
            if claimed == 1:
                request = session.get(DsrRequest, pk)
                assert request is not None
                record(
                    session,
                    "dsr.ack_overdue",
                    outcome="failure",
                    subject_ref=service._subject_ref(session, request),
                    object_ref=f"dsr:{request_id}",
                )
                ack_overdue += 1
        stale = session.scalars(
            select(DsrRequest).where(
                DsrRequest.status == "pending_verification",
                DsrRequest.paused.is_(False),
                DsrRequest.max_extended_due_at < now,
            )
        ).all()
        for request in stale:
            service._transition(session, request, "expired", actor="system", reason="never verified")
            expired += 1
    return OverdueReport(overdue, ack_overdue, expired)


def identifier_inputs(values: Iterable[Mapping[str, str]]) -> list[IdentifierInput]:
    return [
        IdentifierInput(str(v.get("kind", "")), str(v.get("value", "")), str(v.get("system") or "")) for v in values
    ]


__all__ = [
    "DENIAL_REASONS",
    "OPEN",
    "STATUSES",
    "TERMINAL",
    "DsrService",
    "Intake",
    "OverdueReport",
    "QueueSummary",
    "Requester",
    "check_overdue",
    "get_subject",
]
