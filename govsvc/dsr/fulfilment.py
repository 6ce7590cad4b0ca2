"""Fulfilling a verified request across every store, through the connectors.

Each step commits on its own (no transaction is held while an app is called over HTTP): the request moves to
``in_progress``; each connector's operation is recorded as a ``dsr_connector_runs`` row (done, partial, failed,
skipped) with its counts and reasons; then the request closes as ``completed`` or ``partially_completed`` (data
kept for a legal hold or legal retention, with the reasons), or stays ``in_progress`` when a connector failed, so
that running it again retries only what did not finish (``accept_failures`` closes it as partially completed).

- access / portability: every connector's records streamed into one export bundle (portability: provided and
  observed data only); the one-time download link is returned once.
- erasure / account cancellation: asks ``RetentionExceptions`` first; apps (webhooks) erase or are notified
  while the identifiers still exist, then the consent ledger, the audit log, and the vault last (crypto-shredding).
- rectification: the vault's rectify (history kept) and the apps; restriction: the subject's restricted flag
  (decisions then deny everything but storage) and the apps; objection, consent withdrawal, opt-outs and limiting
  sensitive data: the consent ledger and the apps.
"""

from __future__ import annotations

import json
from collections.abc import Iterator, Mapping
from dataclasses import dataclass, field
from datetime import timedelta
from typing import Any

from sqlalchemy import select

from govsvc.audit.service import record
from govsvc.core.db import Database, utcnow
from govsvc.core.errors import ConflictError, ServiceError, ValidationFailed
from govsvc.crypto.service import FieldKeys
from govsvc.dsr import export
from govsvc.dsr.connectors import (
    Connector,
    ConnectorRegistry,
    Job,
    Outcome,
    Record,
    note_webhook_result,
    open_identifiers,
)
from govsvc.dsr.erasure import RetentionExceptions
from govsvc.dsr.models import DsrConnectorRun
from govsvc.dsr.rules import ERASING_TYPES, EXPORTING_TYPES, PORTABLE_PROVENANCE
from govsvc.dsr.service import DsrService
from govsvc.dsr.webhooks import WebhookError

DOWNLOAD_PATH = "/v1/dsr/downloads/"
# Which connector operation each request type runs; webhooks of recipients are told ("notify") instead.
OPERATION_OF = {
    "erasure": "erase",
    "account_cancellation": "erase",
    "rectification": "rectify",
    "restriction": "restrict",
    "objection": "object",
    "withdraw_consent": "object",
    "opt_out_sale_share": "object",
    "limit_spi": "object",
}


@dataclass
class Result:
    request_id: str
    status: str
    runs: list[dict[str, Any]] = field(default_factory=list)
    kept: list[dict[str, Any]] = field(default_factory=list)
    failed: list[str] = field(default_factory=list)
    download: dict[str, Any] | None = None


class Fulfilment:
    def __init__(
        self,
        service: DsrService,
        registry: ConnectorRegistry,
        exceptions: RetentionExceptions,
        keys: FieldKeys,
        *,
        export_ttl: timedelta,
        on_status_change: Any = None,
    ) -> None:
        self.service = service
        self.registry = registry
        self.exceptions = exceptions
        self.keys = keys
        self.export_ttl = export_ttl
        self.on_status_change = on_status_change  # OpenDSR callbacks: (session, request) -> None

    def _start(
        self, database: Database, request_id: str, actor: str, rectification: Mapping[str, str | None] | None
    ) -> tuple[Job, list[Connector], int, dict[str, str]]:
        with database.transaction() as session:
            request = self.service.get(session, request_id, for_update=True)
            if request.status not in ("verified", "in_progress", "extended"):
                raise ConflictError(
                    f"A request that is {request.status} cannot be fulfilled (verify it first).",
                    reason="illegal_transition",
                    current_status=request.status,
                )
            subject = self.service.subject_of(session, request)
            if subject is None:
                raise ConflictError("No subject matched this request: deny it (no_match) or cancel it.")
            if request.request_type == "rectification" and not rectification:
                raise ValidationFailed(
                    "A rectification needs the corrected values.",
                    errors=[{"field": "fields", "message": "field -> corrected value (null deletes)"}],
                )
            if request.status == "verified":
                self.service.transition(session, request, "in_progress", actor=actor)
                if self.on_status_change:
                    self.on_status_change(session, request)
            exceptions = self.exceptions.for_subject(session, subject) if request.request_type in ERASING_TYPES else []
            job = Job(
                database=database,
                request_id=request.request_id,
                request_type=request.request_type,
                subject_id=subject.subject_id,
                regimes=self.service.regimes(request),
                channel=request.channel,
                actor=actor,
                parameters=self.service.parameters(request),
                identifiers=open_identifiers(session, self.keys, subject),
                exceptions=exceptions,
                rectification=dict(rectification or {}),
            )
            done = {
                (run.connector, run.operation): run.status
                for run in session.scalars(select(DsrConnectorRun).where(DsrConnectorRun.request_pk == request.pk))
            }
            return job, self.registry.connectors(session), request.pk, {f"{c}|{o}": s for (c, o), s in done.items()}

    def run(
        self,
        database: Database,
        request_id: str,
        *,
        actor: str,
        rectification: Mapping[str, str | None] | None = None,
        accept_failures: bool = False,
    ) -> Result:
        """Fulfil a verified request; see the module documentation."""
        job, connectors, request_pk, previous = self._start(database, request_id, actor, rectification)
        result = Result(request_id=request_id, status="in_progress")
        if job.request_type in EXPORTING_TYPES:
            self._export(database, job, connectors, request_pk, result, accept_failures)
        else:
            if job.request_type == "restriction":
                self._restrict(database, job)
            operation = OPERATION_OF[job.request_type]
            for connector in connectors:
                op = self._operation_for(connector, operation)
                if op is None:
                    continue
                if previous.get(f"{connector.name}|{op}") in ("done", "partial"):
                    continue  # a re-run retries only what did not finish
                outcome = self._run_one(connector, op, job)
                self._store_run(database, request_pk, connector.name, op, outcome, job)
        return self._close(database, request_pk, job, result, accept_failures)

    def _operation_for(self, connector: Connector, operation: str) -> str | None:
        role = getattr(getattr(connector, "config", None), "role", "processor")
        if role == "recipient":
            return "notify" if "notify" in connector.operations else None
        if operation in connector.operations:
            return operation
        if connector.kind == "webhook" and "notify" in connector.operations:
            return "notify"
        return None

    def _run_one(self, connector: Connector, operation: str, job: Job) -> Outcome:
        try:
            outcome = connector.run(operation, job)
        except WebhookError as error:
            outcome = Outcome("failed", error=str(error), attempts=error.attempts)
        except ServiceError as error:
            outcome = Outcome("failed", error=error.detail)
        if connector.kind == "webhook":
            note_webhook_result(job.database, connector.config.connector_id, outcome.error)  # type: ignore[attr-defined]
        return outcome

    def _store_run(
        self,
        database: Database,
        request_pk: int,
        connector: str,
        operation: str,
        outcome: Outcome,
        job: Job,
        records: int = 0,
    ) -> None:
        with database.transaction() as session:
            run = session.scalar(
                select(DsrConnectorRun).where(
                    DsrConnectorRun.request_pk == request_pk,
                    DsrConnectorRun.connector == connector,
                    DsrConnectorRun.operation == operation,
                )
            )
            if run is None:
                run = DsrConnectorRun(request_pk=request_pk, connector=connector, operation=operation, attempts=0)
                session.add(run)
                run.started_at = utcnow()
            run.status = outcome.status
            run.attempts = (run.attempts or 0) + outcome.attempts
            run.records = records
            run.detail = json.dumps(outcome.as_dict(), ensure_ascii=False, default=str)
            run.finished_at = utcnow()
            record(
                session,
                "dsr.connector_run",
                outcome="success" if outcome.status in ("done", "partial", "skipped") else "failure",
                subject_ref=job.subject_id,
                object_ref=f"dsr:{job.request_id}",
                details={
                    "connector": connector,
                    "operation": operation,
                    "status": outcome.status,
                    "records": records,
                    "counts": outcome.counts,
                    "kept": len(outcome.kept),
                },
            )

    def _restrict(self, database: Database, job: Job) -> None:
        with database.transaction() as session:
            from govsvc.subjects.service import get_subject

            subject = get_subject(session, job.subject_id)
            subject.restricted = True
            subject.updated_at = utcnow()
            record(session, "subject.restricted", subject_ref=subject.subject_id, object_ref=f"dsr:{job.request_id}")

    def _export(
        self,
        database: Database,
        job: Job,
        connectors: list[Connector],
        request_pk: int,
        result: Result,
        accept_failures: bool,
    ) -> None:
        outcomes: dict[str, tuple[Outcome, int]] = {}

        def guarded(connector: Connector) -> Iterator[Record]:
            count = 0
            try:
                for item in connector.collect(job):
                    count += 1
                    yield item
                outcomes[connector.name] = (Outcome("done", counts={"records": count}), count)
            except (WebhookError, ServiceError) as error:
                message = error.detail if isinstance(error, ServiceError) else str(error)
                outcomes[connector.name] = (Outcome("failed", error=message), count)

        sources = [(c.name, guarded(c)) for c in connectors if "collect" in c.operations]
        issued = export.build(
            database,
            request_pk=request_pk,
            request_id=job.request_id,
            request_type=job.request_type,
            subject_id=job.subject_id,
            sources=sources,
            ttl=self.export_ttl,
            portable_only=PORTABLE_PROVENANCE if job.request_type == "portability" else None,
        )
        for connector in connectors:
            if connector.name in outcomes:
                outcome, count = outcomes[connector.name]
                if connector.kind == "webhook":
                    note_webhook_result(database, connector.config.connector_id, outcome.error)  # type: ignore[attr-defined]
                self._store_run(database, request_pk, connector.name, "collect", outcome, job, records=count)
        failed = [name for name, (outcome, _) in outcomes.items() if outcome.status == "failed"]
        if failed and not accept_failures:
            export.purge(database, self._export_pk(database, issued.export_id))
            return
        with database.transaction() as session:
            record(
                session,
                "data.exported",
                subject_ref=job.subject_id,
                object_ref=f"dsr:{job.request_id}",
                details={
                    "export_id": issued.export_id,
                    "records": sum(s["records"] for s in issued.manifest["sources"]),
                    "sources": len(issued.manifest["sources"]),
                    "via": "dsr_bundle",
                },
            )
        result.download = {
            "url": DOWNLOAD_PATH + issued.token,
            "expires_at": issued.expires_at,
            "export_id": issued.export_id,
            "records": {s["source"]: s["records"] for s in issued.manifest["sources"]},
        }

    @staticmethod
    def _export_pk(database: Database, export_id: str) -> int:
        from govsvc.dsr.models import DsrExport

        with database.transaction(write=False) as session:
            pk = session.scalar(select(DsrExport.pk).where(DsrExport.export_id == export_id))
        assert pk is not None
        return pk

    def _close(self, database: Database, request_pk: int, job: Job, result: Result, accept_failures: bool) -> Result:
        with database.transaction() as session:
            from govsvc.dsr.models import DsrRequest

            request = session.get(DsrRequest, request_pk, with_for_update=True)
            assert request is not None
            runs = session.scalars(
                select(DsrConnectorRun).where(DsrConnectorRun.request_pk == request_pk).order_by(DsrConnectorRun.pk)
            ).all()
            for run in runs:
                detail = json.loads(run.detail) if run.detail else {}
                result.runs.append(
                    {
                        "connector": run.connector,
                        "operation": run.operation,
                        "status": run.status,
                        "attempts": run.attempts,
                        "records": run.records,
                        **detail,
                    }
                )
                result.kept.extend(detail.get("kept", []))
                if run.status == "failed":
                    result.failed.append(run.connector)
            if result.failed and not accept_failures:
                request.outcome = json.dumps(
                    {"runs": result.runs, "failed": result.failed}, ensure_ascii=False, default=str
                )
                result.status = request.status
                return result
            reasons = [{"reason_code": "connector_failed", "source": name} for name in result.failed]
            partial = bool(result.kept or reasons)
            request.outcome = json.dumps(
                {"runs": result.runs, "kept": result.kept + reasons}, ensure_ascii=False, default=str
            )
            status = "partially_completed" if partial else "completed"
            self.service.transition(session, request, status, actor=job.actor)
            if self.on_status_change:
                self.on_status_change(session, request)
            result.status = status
            return result
