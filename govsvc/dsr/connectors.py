"""Connectors: how DSR fulfilment reaches each store that holds a subject's data.

A connector can ``collect`` a subject's records (an iterator: records are streamed, memory stays bounded),
``run`` an operation (erase, rectify, restrict, object, notify) returning what it did or why it kept data, and
report its ``status``. The built-in connectors are the profile vault, the consent ledger and the audit log's
access report; apps are reached by webhook connectors (``DsrWebhook`` rows). Phase 2 adds the external SQL
sources of issue 8 through ``ConnectorRegistry.add_provider``.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any, Protocol

from sqlalchemy import select
from sqlalchemy.orm import Session

from govsvc.audit.models import AuditEvent
from govsvc.audit.reports import subject_access
from govsvc.audit.service import format_time, record
from govsvc.consent import service as consent
from govsvc.consent.models import ConsentEvent, ConsentState
from govsvc.core.db import Database, utcnow
from govsvc.core.errors import KeyDestroyed, ServiceError
from govsvc.crypto.service import FieldKeys, KeyWrapper
from govsvc.dsr import webhooks
from govsvc.dsr.erasure import RetentionException, erasable_fields, kept_by
from govsvc.dsr.models import DsrWebhook
from govsvc.dsr.rules import DsrRules
from govsvc.subjects.models import Subject, SubjectIdentifier
from govsvc.subjects.service import get_subject, identifier_name
from govsvc.taxonomy.service import Taxonomy, TaxonomyCache
from govsvc.vault.erasure import erase_fields
from govsvc.vault.models import VaultField
from govsvc.vault.service import Vault, delete_history

OPERATIONS = ("collect", "erase", "rectify", "restrict", "object", "notify")
CHUNK = 1000


@dataclass(frozen=True)
class Record:
    """One piece of a subject's data, as exported: where it is, what it is, where it came from."""

    source: str
    record_type: str
    record_id: str
    category: str | None
    provenance: str  # provided | observed | derived | controller
    fields: Mapping[str, Any]
    recorded_at: str | None = None

    def as_dict(self) -> dict[str, Any]:
        return {
            "source": self.source,
            "record_type": self.record_type,
            "record_id": self.record_id,
            "category": self.category,
            "provenance": self.provenance,
            "recorded_at": self.recorded_at,
            "fields": dict(self.fields),
        }


@dataclass
class Outcome:
    """What one operation did: ``done``, ``partial`` (something kept, with reasons), ``skipped`` or ``failed``."""

    status: str
    counts: dict[str, int] = field(default_factory=dict)
    kept: list[dict[str, Any]] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)
    error: str | None = None
    attempts: int = 1

    def as_dict(self) -> dict[str, Any]:
        return {
            k: v
            for k, v in {"counts": self.counts, "kept": self.kept, "notes": self.notes, "error": self.error}.items()
            if v
        }


@dataclass
class Job:
    """Everything a connector may need about the request it works on (no Flask, no request session)."""

    database: Database
    request_id: str
    request_type: str
    subject_id: str
    regimes: Sequence[str]
    channel: str
    actor: str
    parameters: Mapping[str, Any] = field(default_factory=dict)
    identifiers: Sequence[Mapping[str, str]] = ()  # opened before anything is erased (webhooks need them)
    exceptions: Sequence[RetentionException] = ()
    rectification: Mapping[str, str | None] = field(default_factory=dict)


class Connector(Protocol):
    name: str
    kind: str  # builtin | webhook | sql (phase 2)
    operations: frozenset[str]

    def collect(self, job: Job) -> Iterator[Record]: ...

    def run(self, operation: str, job: Job) -> Outcome: ...

    def status(self, session: Session) -> dict[str, Any]: ...


class BuiltinConnector:
    kind = "builtin"
    name = "builtin"
    operations: frozenset[str] = frozenset()

    def collect(self, job: Job) -> Iterator[Record]:
        return iter(())

    def run(self, operation: str, job: Job) -> Outcome:
        return Outcome("skipped", notes=[f"{self.name} has nothing to {operation}"])

    def status(self, session: Session) -> dict[str, Any]:
        return {"name": self.name, "kind": self.kind, "operations": sorted(self.operations), "healthy": True}


# -- the profile vault -------------------------------------------------------------------------------------------


class VaultConnector(BuiltinConnector):
    """The profile vault: current fields and their rectification history; erasure by crypto-shredding."""

    name = "vault"
    operations = frozenset({"collect", "erase", "rectify"})

    def __init__(self, vault: Vault, taxonomy: TaxonomyCache, rules: DsrRules) -> None:
        self.vault = vault
        self.taxonomy = taxonomy
        self.rules = rules

    def collect(self, job: Job) -> Iterator[Record]:
        with job.database.transaction(write=False) as session:
            subject = get_subject(session, job.subject_id)
            rows = session.scalars(
                select(VaultField).where(VaultField.subject_pk == subject.pk).order_by(VaultField.field)
            ).all()
            try:
                values = self.vault.open_all(session, subject)
            except KeyDestroyed:
                values = {}
            for row in rows:
                if row.field not in values:
                    continue
                yield Record(
                    source=self.name,
                    record_type="profile_field",
                    record_id=f"{row.field}",
                    category=row.category,
                    provenance=self.rules.provenance_of(row.field),
                    fields={"field": row.field, "value": values[row.field], "version": row.version},
                    recorded_at=format_time(row.updated_at),
                )
            categories = {row.field: row.category for row in rows}
            if not values:
                return
            for entry in self.vault.iter_history(session, subject, chunk=CHUNK):
                yield Record(
                    source=self.name,
                    record_type="profile_field_history",
                    record_id=f"{entry['field']}:v{entry['version']}",
                    category=categories.get(entry["field"]),
                    provenance=self.rules.provenance_of(entry["field"]),
                    fields={
                        "field": entry["field"],
                        "value": entry["value"],
                        "version": entry["version"],
                        "change": entry["change"],
                    },
                    recorded_at=format_time(entry["changed_at"]),
                )

    def run(self, operation: str, job: Job) -> Outcome:
        if operation == "erase":
            return self._erase(job)
        if operation == "rectify":
            return self._rectify(job)
        return super().run(operation, job)

    def _rectify(self, job: Job) -> Outcome:
        with job.database.transaction() as session:
            subject = get_subject(session, job.subject_id)
            changes = self.vault.write(
                session,
                self.taxonomy.current(session),
                subject,
                dict(job.rectification),
                actor=job.actor,
                justification=f"data-subject request {job.request_id}",
            )
            changed = sorted(c.field for c in changes if c.change != "unchanged")
            if changed:
                record(
                    session,
                    "vault.updated",
                    subject_ref=subject.subject_id,
                    object_ref=f"dsr:{job.request_id}",
                    details={
                        "fields": changed,
                        "changes": sorted({c.change for c in changes if c.change != "unchanged"}),
                    },
                )
        return Outcome("done", counts={"fields_rectified": len(changed)})

    def _erase(self, job: Job) -> Outcome:
        """Crypto-shred the subject (data key destroyed: every copy of the ciphertext is unreadable), unless
        something must be kept: then delete what may go, keep the rest restricted, and shred later."""
        with job.database.transaction() as session:
            subject = get_subject(session, job.subject_id)
            rows = session.scalars(select(VaultField).where(VaultField.subject_pk == subject.pk)).all()
            kept_rows = [(row, kept_by(job.exceptions, row.category)) for row in rows]
            kept = [(row, reason) for row, reason in kept_rows if reason is not None]
            blanket = [e for e in job.exceptions if "*" in e.categories]
            if not kept and not blanket:
                result = self.vault.shred(session, subject, via="dsr")
                result["history_deleted"] = delete_history(session, subject)
                return Outcome("done", counts=result, notes=["data key destroyed"])
            subject.restricted = True
            if blanket:
                return Outcome(
                    "partial",
                    counts={"fields_kept": len(rows)},
                    kept=[e.as_dict() for e in blanket],
                    notes=["everything kept and restricted while the hold lasts; the data key is not destroyed"],
                )
            erased = erase_fields(session, subject, erasable_fields(rows, job.exceptions))
            reasons: dict[str, dict[str, Any]] = {}
            for row, exception in kept:
                entry = reasons.setdefault(exception.source, {**exception.as_dict(), "fields": []})
                entry["fields"].append(row.field)
            return Outcome(
                "partial",
                counts={**erased, "fields_kept": len(kept)},
                kept=list(reasons.values()),
                notes=["kept fields are restricted; the data key is destroyed when their retention ends"],
            )


# -- the consent ledger ------------------------------------------------------------------------------------------


class ConsentConnector(BuiltinConnector):
    """The consent ledger: every event (proof of what the subject agreed to) and the consents in force.

    Erasure withdraws every consent in force; the append-only ledger is kept as proof of consent (GDPR Art 7(1),
    17(3)(e)), pseudonymous once the subject's identifiers are erased."""

    name = "consent"
    operations = frozenset({"collect", "erase", "object"})

    def __init__(self, field_keys: FieldKeys, taxonomy: TaxonomyCache) -> None:
        self.field_keys = field_keys
        self.taxonomy = taxonomy

    def collect(self, job: Job) -> Iterator[Record]:
        with job.database.transaction(write=False) as session:
            subject = get_subject(session, job.subject_id)
            for state in consent.current_states(session, subject):
                yield Record(
                    source=self.name,
                    record_type="consent_state",
                    record_id=f"{state.purpose_key}|{state.scope}",
                    category="user.privacy_preferences",
                    provenance="provided",
                    fields={
                        "purpose": state.purpose_key,
                        "scope": state.scope,
                        "status": state.status,
                        "purpose_version": state.purpose_version,
                        "source": state.source,
                    },
                    recorded_at=format_time(state.updated_at),
                )
            after = 0
            while True:
                events = session.scalars(
                    select(ConsentEvent)
                    .where(ConsentEvent.subject_pk == subject.pk, ConsentEvent.pk > after)
                    .order_by(ConsentEvent.pk)
                    .limit(CHUNK)
                ).all()
                for event in events:
                    yield Record(
                        source=self.name,
                        record_type="consent_event",
                        record_id=event.event_id,
                        category="user.privacy_preferences",
                        provenance="provided",
                        fields={
                            "purpose": event.purpose_key,
                            "purpose_version": event.purpose_version,
                            "scope": event.scope,
                            "event": event.event_type,
                            "consent_type": event.consent_type,
                            "channel": event.channel,
                            "actor": event.actor,
                            "notice_id": event.notice_id,
                            "notice_version": event.notice_version,
                            "language": event.language,
                            "source": event.source,
                        },
                        recorded_at=format_time(event.recorded_at),
                    )
                if len(events) < CHUNK:
                    break
                after = events[-1].pk
                session.expunge_all()

    def run(self, operation: str, job: Job) -> Outcome:
        if operation not in ("erase", "object"):
            return super().run(operation, job)
        with job.database.transaction() as session:
            subject = get_subject(session, job.subject_id)
            taxonomy = self.taxonomy.current(session)
            event_type, items = self._plan(session, taxonomy, subject, job, operation)
            if not items:
                return Outcome("done", counts={"events": 0}, notes=["nothing in force to change"])
            channel = job.channel if job.channel in taxonomy.channels else "web"
            recorded = 0
            for purpose, scope in items:  # one act per item: separate-consent items cannot be bundled
                act = consent.ConsentAct(
                    event_type=event_type,
                    items=[consent.ConsentItem(purpose, scope)],
                    channel=channel,
                    actor="system",
                    actor_ref=f"dsr:{job.request_id}",
                    evidence_ref=f"dsr:{job.request_id}",
                    source="dsr",
                )
                events = consent.record_act(session, self.field_keys, taxonomy, subject, act, recorded_by=job.actor)
                recorded += len(events)
            notes = ["the consent ledger is kept as proof of consent (append-only)"] if operation == "erase" else []
            return Outcome("done", counts={"events": recorded, "items": len(items)}, notes=notes)

    def _plan(
        self, session: Session, taxonomy: Taxonomy, subject: Subject, job: Job, operation: str
    ) -> tuple[str, list[tuple[str, str]]]:
        """The event to record and the (purpose, scope) items it applies to."""
        states = {
            (row.purpose_key, row.scope): row.status
            for row in session.scalars(select(ConsentState).where(ConsentState.subject_pk == subject.pk))
        }
        asked = set(job.parameters.get("purposes") or [])
        if operation == "erase" or job.request_type == "withdraw_consent":
            given = [
                key
                for key, status in sorted(states.items())
                if status == "given" and key[0] in taxonomy.purposes and (not asked or key[0] in asked)
            ]
            return "withdrawn", given
        if job.request_type == "opt_out_sale_share":
            targets = {p.key for p in taxonomy.purposes.values() if p.lawful_basis["ccpa"] == "opt_out"}
        elif job.request_type == "limit_spi":
            targets = {
                p.key
                for p in taxonomy.purposes.values()
                if p.optional and any(_is_spi(taxonomy, category) for category in p.data_categories)
            }
        else:  # objection (GDPR Art 21, PIPL Art 44): the purposes named, or every optional purpose
            targets = asked or {p.key for p in taxonomy.purposes.values() if p.optional}
        return "refused", [(key, "") for key in sorted(targets & set(taxonomy.purposes))]


def _is_spi(taxonomy: Taxonomy, category: str) -> bool:
    found = taxonomy.category(category)
    return found is not None and "ccpa_spi" in found.flags


# -- the audit log's access report -------------------------------------------------------------------------------


class AuditAccessConnector(BuiltinConnector):
    """Who processed the subject's data: the access report (per role and action) and each event, from the audit
    log. The log is append-only and pseudonymous: erasure keeps it (audit retention, reference R-AUD-04)."""

    name = "audit"
    operations = frozenset({"collect", "erase"})

    def collect(self, job: Job) -> Iterator[Record]:
        with job.database.transaction(write=False) as session:
            for row in subject_access(session, job.subject_id):
                yield Record(
                    source=self.name,
                    record_type="access_report",
                    record_id=f"{row['role']}|{row['action']}|{row['outcome']}",
                    category=None,
                    provenance="controller",
                    fields={
                        "role": row["role"],
                        "action": row["action"],
                        "outcome": row["outcome"],
                        "count": row["count"],
                        "first": format_time(row["first"]),
                        "last": format_time(row["last"]),
                    },
                )
            after = 0
            while True:
                rows = session.execute(
                    select(
                        AuditEvent.id,
                        AuditEvent.event_id,
                        AuditEvent.time,
                        AuditEvent.actor_role,
                        AuditEvent.action,
                        AuditEvent.purpose,
                        AuditEvent.outcome,
                        AuditEvent.data_categories,
                    )
                    .where(AuditEvent.subject_ref == job.subject_id, AuditEvent.id > after)
                    .order_by(AuditEvent.id)
                    .limit(CHUNK)
                ).all()
                for pk, event_id, at, role, action, purpose, outcome, categories in rows:
                    yield Record(
                        source=self.name,
                        record_type="access_event",
                        record_id=event_id,
                        category=None,
                        provenance="controller",
                        fields={
                            "role": role,
                            "action": action,
                            "purpose": purpose,
                            "outcome": outcome,
                            "data_categories": json.loads(categories) if categories else [],
                        },
                        recorded_at=format_time(at),
                    )
                    after = pk
                if len(rows) < CHUNK:
                    break

    def run(self, operation: str, job: Job) -> Outcome:
        if operation == "erase":
            return Outcome(
                "done",
                notes=["the audit log is append-only and holds no personal values; it is kept (audit retention)"],
            )
        return super().run(operation, job)


# -- webhooks to apps --------------------------------------------------------------------------------------------


@dataclass
class WebhookConfig:
    connector_id: str
    name: str
    url: str
    secret: bytes
    operations: frozenset[str]
    role: str
    identifier_kinds: tuple[str, ...]
    max_attempts: int
    timeout_seconds: int


WEBHOOK_SECRET_LABEL = "govsvc dsr webhook secret v1"  # noqa: S105 - a key-derivation label, not a secret
MAX_PAGES = 10_000


class WebhookConnector:
    """An app reached over HTTP: it collects, erases, rectifies or restricts the data it holds, or is told of a
    change (a recipient, GDPR Art 19). Retries with back-off; its last success and failure are its status."""

    kind = "webhook"

    def __init__(self, config: WebhookConfig, *, sleep: Callable[[float], None] | None = None) -> None:
        self.config = config
        self.name = f"webhook:{config.name}"
        self.operations = config.operations
        self._sleep = sleep

    def _call(self, operation: str, job: Job, extra: Mapping[str, Any] | None = None) -> webhooks.Reply:
        payload = {
            "request_id": job.request_id,
            "request_type": job.request_type,
            "operation": operation,
            "regimes": list(job.regimes),
            "subject": {
                "subject_id": job.subject_id,
                "identifiers": [i for i in job.identifiers if i["kind"] in self.config.identifier_kinds],
            },
            **(extra or {}),
        }
        policy = webhooks.RetryPolicy(max_attempts=self.config.max_attempts, timeout=self.config.timeout_seconds)
        kwargs = {"sleep": self._sleep} if self._sleep else {}
        return webhooks.post_json(
            self.config.url,
            payload,
            headers={webhooks.OPERATION_HEADER: operation},
            sign_body=lambda body: {webhooks.SIGNATURE_HEADER: webhooks.sign(self.config.secret, body)},
            policy=policy,
            **kwargs,
        )

    def collect(self, job: Job) -> Iterator[Record]:
        """Pages of ``{"records": [...], "next_cursor": ...}``; each record is checked."""
        cursor = None
        for _ in range(MAX_PAGES):
            reply = self._call("collect", job, {"cursor": cursor})
            body = reply.body if isinstance(reply.body, dict) else {}
            records = body.get("records")
            if not isinstance(records, list):
                raise webhooks.WebhookError("the collect response has no records list", status=reply.status)
            for index, item in enumerate(records):
                yield self._record(item, index)
            cursor = body.get("next_cursor")
            if not cursor:
                return
        raise webhooks.WebhookError("too many pages")

    def _record(self, item: Any, index: int) -> Record:
        if not isinstance(item, dict) or not isinstance(item.get("fields"), dict):
            raise webhooks.WebhookError(f"record {index} is not an object with fields")
        provenance = item.get("provenance", "provided")
        if provenance not in ("provided", "observed", "derived"):
            raise webhooks.WebhookError(f"record {index} has an unknown provenance")
        fields = {str(k): v for k, v in item["fields"].items() if isinstance(v, str | int | float | bool) or v is None}
        return Record(
            source=self.name,
            record_type=str(item.get("record_type", "record"))[:64],
            record_id=str(item.get("record_id", index))[:200],
            category=str(item["category"])[:120] if item.get("category") else None,
            provenance=provenance,
            fields=fields,
            recorded_at=str(item["recorded_at"])[:40] if item.get("recorded_at") else None,
        )

    def run(self, operation: str, job: Job) -> Outcome:
        extra: dict[str, Any] = {}
        if operation == "rectify":
            extra["fields"] = dict(job.rectification)
        if operation in ("erase", "notify"):
            extra["retention_exceptions"] = [e.as_dict() for e in job.exceptions]
        reply = self._call(operation, job, extra)
        body = reply.body if isinstance(reply.body, dict) else {}
        status = body.get("status", "done")
        kept = (
            [k for k in body.get("retained", []) if isinstance(k, dict)]
            if isinstance(body.get("retained"), list)
            else []
        )
        counts = (
            {k: int(v) for k, v in (body.get("counts") or {}).items() if isinstance(v, int)}
            if isinstance(body.get("counts"), dict)
            else {}
        )
        clean_kept = [
            {
                "source": self.name,
                "categories": [str(c) for c in k.get("categories", [])][:20],
                "reason_code": str(k.get("reason_code", "retained"))[:60],
                "legal_basis": str(k.get("legal_basis", ""))[:120],
            }
            for k in kept
        ]
        outcome = "partial" if clean_kept or status == "partial" else "done"
        return Outcome(outcome, counts=counts, kept=clean_kept, attempts=reply.attempts)

    def status(self, session: Session) -> dict[str, Any]:
        row = session.scalar(select(DsrWebhook).where(DsrWebhook.connector_id == self.config.connector_id))
        return {
            "name": self.name,
            "kind": self.kind,
            "connector_id": self.config.connector_id,
            "operations": sorted(self.operations),
            "role": self.config.role,
            "enabled": bool(row and row.enabled),
            "last_success_at": row.last_success_at if row else None,
            "last_failure_at": row.last_failure_at if row else None,
            "last_error": row.last_error if row else None,
            "healthy": bool(
                row
                and (
                    row.last_failure_at is None
                    or (row.last_success_at or datetime.min.replace(tzinfo=row.last_failure_at.tzinfo))
                    > row.last_failure_at
                )
            ),
        }


def webhook_configs(session: Session, wrapper: KeyWrapper) -> list[WebhookConfig]:
    rows = session.scalars(select(DsrWebhook).where(DsrWebhook.enabled.is_(True)).order_by(DsrWebhook.pk)).all()
    return [
        WebhookConfig(
            connector_id=row.connector_id,
            name=row.name,
            url=row.url,
            secret=wrapper.unwrap(row.secret_wrapped, row.connector_id).encode(),
            operations=frozenset(json.loads(row.operations)),
            role=row.role,
            identifier_kinds=tuple(json.loads(row.identifier_kinds)),
            max_attempts=row.max_attempts,
            timeout_seconds=row.timeout_seconds,
        )
        for row in rows
    ]


def note_webhook_result(database: Database, connector_id: str, error: str | None) -> None:
    """Remember a webhook's last success or failure (its status)."""
    with database.transaction() as session:
        row = session.scalar(select(DsrWebhook).where(DsrWebhook.connector_id == connector_id))
        if row is None:
            return
        if error is None:
            row.last_success_at = utcnow()
        else:
            row.last_failure_at, row.last_error = utcnow(), error[:300]


def open_identifiers(session: Session, keys: FieldKeys, subject: Subject) -> list[dict[str, str]]:
    """The subject's identifier values, opened (for webhooks to find the person in their systems)."""
    rows = session.scalars(select(SubjectIdentifier).where(SubjectIdentifier.subject_pk == subject.pk)).all()
    opened = []
    for row in rows:
        try:
            value = keys.open(session, subject.subject_id, identifier_name(row.kind, row.system), row.value_enc)
        except ServiceError:
            continue
        opened.append({"kind": row.kind, "system": row.system, "value": value})
    return opened


# -- the registry ------------------------------------------------------------------------------------------------

ConnectorProvider = Callable[[Session], Iterable[Connector]]


class ConnectorRegistry:
    """The connectors fulfilment uses, in erasure order: external ones first (they need the identifiers), then
    the consent ledger, the audit log and the vault last (shredding destroys the keys of the identifiers)."""

    def __init__(self, builtins: Sequence[Connector], wrapper: KeyWrapper) -> None:
        self.builtins = list(builtins)
        self.wrapper = wrapper
        self.providers: list[ConnectorProvider] = []
        self.sleep: Callable[[float], None] | None = None  # tests shorten webhook back-off

    def add_provider(self, provider: ConnectorProvider) -> None:
        """Register more connectors (phase 2: the external SQL sources of govsvc/sources)."""
        self.providers.append(provider)

    def connectors(self, session: Session) -> list[Connector]:
        external: list[Connector] = [
            WebhookConnector(c, sleep=self.sleep) for c in webhook_configs(session, self.wrapper)
        ]
        for provider in self.providers:
            external.extend(provider(session))
        order = {"consent": 0, "audit": 1, "vault": 2}
        return external + sorted(self.builtins, key=lambda c: order.get(c.name, 0))
