"""The scheduled side of retention: one persistent cron job per rule with a ``schedule`` (APScheduler, see
``govsvc.core.scheduler``), and what a scheduled run does: execute directly, or, when the policy requires an
approved dry run, execute the approved one, or make a dry run for a compliance officer to approve."""

from __future__ import annotations

from collections.abc import Callable
from datetime import timedelta
from typing import Any

from sqlalchemy import select
from sqlalchemy.orm import Session

from govsvc.audit.service import AuditContext, record
from govsvc.core.db import Database, utcnow
from govsvc.core.errors import ConflictError
from govsvc.core.scheduler import JobControl, Jobs, JobStatus
from govsvc.retention.models import RetentionRun
from govsvc.retention.service import Retention, as_job

JOB_PREFIX = "retention."


def job_name(rule_key: str) -> str:
    return JOB_PREFIX + rule_key


def set_paused(
    session: Session, control: JobControl, rule_key: str, *, paused: bool, context: AuditContext | None = None
) -> JobStatus:
    """Pause or resume a rule's scheduled runs on every instance, audited (``retention.job_paused`` or
    ``retention.job_resumed``); KeyError if the rule has no schedule."""
    name = job_name(rule_key)
    status = control.pause(name) if paused else control.resume(name)
    action = "retention.job_paused" if paused else "retention.job_resumed"
    record(session, action, object_ref=f"retention_rule:{rule_key}", context=context)
    return status


def scheduled_run(database: Database, retention: Retention, rule_key: str, *, actor: str = "job:retention") -> dict:
    """One scheduled (or "run now") pass of a rule; returns what it did."""
    with database.transaction(write=False) as session:
        policy, rule = retention.rule(session, rule_key)
        dry_run_id = None
        if policy.require_approved_dry_run:
            since = utcnow() - timedelta(days=policy.approval_valid_days)
            used = select(RetentionRun.dry_run_id).where(RetentionRun.dry_run_id.is_not(None))
            candidates = session.scalars(
                select(RetentionRun)
                .where(
                    RetentionRun.rule_key == rule.key,
                    RetentionRun.mode == "dry_run",
                    RetentionRun.status == "completed",
                    RetentionRun.policy_version == policy.version,
                    RetentionRun.started_at >= since,
                    RetentionRun.run_id.not_in(used),
                )
                .order_by(RetentionRun.pk.desc())
            ).all()
            approved = next((r for r in candidates if r.approved_at is not None), None)
            unfinished = session.scalar(
                select(RetentionRun.pk).where(
                    RetentionRun.rule_key == rule.key, RetentionRun.mode == "execute", RetentionRun.status == "running"
                )
            )
            if approved is not None:
                dry_run_id = approved.run_id
            elif unfinished is None:
                if candidates:
                    return {"rule": rule.key, "action": "awaiting_approval", "dry_run_id": candidates[0].run_id}
                run = as_job(lambda: retention.dry_run(database, rule.key, actor=actor))
                return {"rule": rule.key, "action": "dry_run", "run_id": run.run_id}
    try:
        run = as_job(lambda: retention.execute(database, rule_key, actor=actor, dry_run_id=dry_run_id))
    except ConflictError as error:
        return {"rule": rule_key, "action": "skipped", "reason": error.extensions.get("reason") or error.detail}
    return {"rule": rule_key, "action": "executed", "run_id": run.run_id, "status": run.status}


def rule_jobs(database: Database, retention: Retention) -> dict[str, tuple[str, Callable[[], Any]]]:
    """The cron jobs of the stored rules: job name -> (schedule, function)."""
    with database.transaction(write=False) as session:
        policy = retention.policy(session)
    jobs: dict[str, tuple[str, Callable[[], Any]]] = {}
    for rule in policy.rules.values():
        if rule.schedule:
            jobs[job_name(rule.key)] = (rule.schedule, _runner(database, retention, rule.key))
    return jobs


def _runner(database: Database, retention: Retention, rule_key: str) -> Callable[[], Any]:
    return lambda: scheduled_run(database, retention, rule_key)


class RuleJobSync:
    """Keeps the cron jobs in line with the stored rules (checked by an interval job on every instance)."""

    def __init__(self, database: Database, retention: Retention, jobs: Jobs) -> None:
        self.database = database
        self.retention = retention
        self.jobs = jobs
        self.version: int | None = None

    def __call__(self) -> dict[str, int]:
        with self.database.transaction(write=False) as session:
            version = self.retention.policy(session).version
        if version != self.version:
            self.jobs.set_cron(rule_jobs(self.database, self.retention))
            self.version = version
        return {"policy_version": version}


class EventWatch:
    """Proactive triggers (PIPL Art 47): a consent withdrawal, an account cancellation, a contract end or a
    completed purpose makes the scheduled rules with that trigger and no waiting period due at once (on every
    instance the next scheduler wake-up runs them; the lease lets one do it), instead of at their next cron time.
    Checked by an interval job; the first check only notes where the event streams are."""

    def __init__(self, database: Database, retention: Retention, jobs: Jobs) -> None:
        self.database = database
        self.retention = retention
        self.jobs = jobs
        self.last_event: int | None = None
        self.last_consent_event: int | None = None
        self.started = False

    def __call__(self) -> dict[str, Any]:
        from sqlalchemy import func

        from govsvc.consent.models import ConsentEvent
        from govsvc.retention.models import RetentionEvent

        with self.database.transaction(write=False) as session:
            # Both streams are read by primary key, above where the last check left them: the newest ids from the
            # index, then only the new rows (a scan of every consent state, for the newest withdrawal, grew with
            # the ledger in every process at every check).
            last_event = session.scalar(select(func.max(RetentionEvent.pk))) or 0
            last_consent_event = session.scalar(select(func.max(ConsentEvent.pk))) or 0
            triggers: set[str] = set()
            if self.started and last_event > (self.last_event or 0):
                for (name,) in session.execute(
                    select(RetentionEvent.trigger).where(RetentionEvent.pk > (self.last_event or 0)).distinct()
                ):
                    triggers.add("contract_end" if name == "account_cancelled" else name)
            if self.started and last_consent_event > (self.last_consent_event or 0):
                withdrawal = session.scalar(
                    select(ConsentEvent.pk)
                    .where(
                        ConsentEvent.pk > (self.last_consent_event or 0),
                        ConsentEvent.pk <= last_consent_event,
                        ConsentEvent.event_type == "withdrawn",
                    )
                    .limit(1)
                )
                if withdrawal is not None:
                    triggers.add("consent_withdrawn")
            due = [
                rule.key
                for rule in self.retention.policy(session).rules.values()
                if rule.trigger in triggers and rule.period_days == 0 and rule.schedule
            ]
        self.last_event, self.last_consent_event, self.started = last_event, last_consent_event, True
        if due:
            from govsvc.core.scheduler import JobControl

            control = JobControl(self.database.engine, self.jobs)
            for key in due:
                control.trigger(job_name(key))
        return {"triggered": len(due)}
