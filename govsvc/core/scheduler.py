"""APScheduler in serving processes: the periodic jobs registered by the domains (started with the first request,
like the audit sequencer; ``GOVSVC_SCHEDULER=off`` leaves them to another process or to cron and the CLI).

Two kinds of job:

- interval jobs (``Jobs.add``: the DSR maintenance job), kept in memory, run by every instance;
- cron jobs (``Jobs.add_cron``: one per retention rule), kept in APScheduler's ``SQLAlchemyJobStore`` in the
  service database (table ``apscheduler_jobs``, made by the migrations), so their schedule, pause state and next
  run survive restarts and are shared by every instance. Missed runs within ``misfire_grace_seconds`` run once
  (coalesced); older ones are skipped and logged. Instances share the store, so each of them may fire a due job:
  the jobs themselves must make sure only one does the work (retention runs take a lease row per rule).

Cron jobs call ``run_registered(name)`` (a textual reference, as a persistent store needs), which finds the
function this process registered under that name. ``JobControl`` pauses, resumes and lists them from any process
(API, CLI), whether or not that process runs a scheduler; "run now" is the caller running the function itself.

Interval jobs with a database first claim the job's lease (``job_leases``: a conditional update that moves ``due_at``
one period on), so of several instances firing the same job only one runs it per period; if that instance dies,
another takes over at its next firing. Jobs must still be safe to run twice (each claims its work with conditional
updates or leases).
"""

from __future__ import annotations

import logging
import os
import socket
import threading
from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

from apscheduler.job import Job
from apscheduler.jobstores.memory import MemoryJobStore
from apscheduler.jobstores.sqlalchemy import SQLAlchemyJobStore
from apscheduler.schedulers.background import BackgroundScheduler
from apscheduler.triggers.cron import CronTrigger
from flask import Flask
from sqlalchemy import Engine, insert, update
from sqlalchemy.exc import IntegrityError

from govsvc.core.db import Database, utcnow
from govsvc.core.models import JobLease

logger = logging.getLogger("govsvc.scheduler")
PERSISTENT_STORE = "db"
DEFAULT_MISFIRE_GRACE_SECONDS = 3600
_registry: dict[str, Callable[[], object]] = {}
_registry_lock = threading.Lock()


def run_registered(name: str) -> None:
    """The target of every persistent job: run the function this process registered as ``name``."""
    with _registry_lock:
        function = _registry.get(name)
    if function is None:
        logger.warning("job %s is scheduled but not registered in this process; skipped", name)
        return
    _logged(name, function)()


def cron_trigger(expression: str) -> CronTrigger:
    """A five-field cron expression (minute hour day month weekday) in UTC."""
    return CronTrigger.from_crontab(expression, timezone="UTC")


@dataclass(frozen=True)
class JobStatus:
    name: str
    schedule: str | None
    paused: bool
    next_run_at: datetime | None

    def as_dict(self) -> dict[str, Any]:
        return {
            "name": self.name,
            "schedule": self.schedule,
            "paused": self.paused,
            "next_run_at": self.next_run_at.isoformat() if self.next_run_at else None,
        }


class Jobs:
    """The app's periodic jobs: ``add`` (interval) and ``add_cron`` (persistent), then ``start()`` once."""

    def __init__(
        self, database: Database | None = None, *, misfire_grace_seconds: int = DEFAULT_MISFIRE_GRACE_SECONDS
    ) -> None:
        self._jobs: list[tuple[str, int, Callable[[], object]]] = []
        self._cron: dict[str, tuple[str, Callable[[], object]]] = {}
        self._database = database
        self._engine: Engine | None = database.engine if database is not None else None
        self.holder = f"{socket.gethostname()}:{os.getpid()}"
        self._scheduler: BackgroundScheduler | None = None
        self.misfire_grace_seconds = misfire_grace_seconds
        self.on_start: list[Callable[[], object]] = []  # run once the scheduler runs (e.g. load the cron jobs)

    def add(self, name: str, seconds: int, function: Callable[[], object]) -> None:
        self._jobs.append((name, seconds, function))

    def add_cron(self, name: str, expression: str, function: Callable[[], object]) -> None:
        """A persistent cron job (stored in the service database); the function is registered for this process."""
        cron_trigger(expression)  # validates
        self._cron[name] = (expression, function)
        with _registry_lock:
            _registry[name] = function

    def set_cron(self, crons: dict[str, tuple[str, Callable[[], object]]]) -> None:
        """Replace the cron jobs (the retention rules changed); applied to the running scheduler at once."""
        removed = set(self._cron) - set(crons)
        self._cron = {}
        for name, (expression, function) in crons.items():
            self.add_cron(name, expression, function)
        if self._scheduler is not None:
            for name in removed:
                if self._scheduler.get_job(name, PERSISTENT_STORE) is not None:
                    self._scheduler.remove_job(name, PERSISTENT_STORE)
            self._sync()

    @property
    def names(self) -> list[str]:
        return [name for name, _, _ in self._jobs] + sorted(self._cron)

    @property
    def cron(self) -> dict[str, str]:
        return {name: expression for name, (expression, _) in self._cron.items()}

    def function(self, name: str) -> Callable[[], object] | None:
        """The function of the cron or interval job ``name`` (None: no such job)."""
        entry = self._cron.get(name)
        if entry is not None:
            return entry[1]
        return next((function for job_name, _, function in self._jobs if job_name == name), None)

    def start(self) -> None:
        if self._scheduler is not None:
            return
        stores: dict[str, Any] = {"default": MemoryJobStore()}
        if self._engine is not None:
            stores[PERSISTENT_STORE] = SQLAlchemyJobStore(engine=self._engine)
        scheduler = BackgroundScheduler(
            daemon=True,
            timezone="UTC",
            jobstores=stores,
            job_defaults={"coalesce": True, "max_instances": 1, "misfire_grace_time": self.misfire_grace_seconds},
        )
        for name, seconds, function in self._jobs:
            run = _logged(name, function)
            if self._database is not None:
                run = _leased(self._database, name, seconds, self.holder, run)
            scheduler.add_job(run, "interval", seconds=seconds, id=name, max_instances=1, coalesce=True)
        scheduler.start()
        self._scheduler = scheduler
        if self._engine is not None:
            self._sync()
        for hook in self.on_start:
            _logged("on_start", hook)()

    def _sync(self) -> None:
        """Put every cron job in the persistent store; keep an existing job's pause state and next run."""
        scheduler = self._scheduler
        assert scheduler is not None
        for name, (expression, _) in self._cron.items():
            existing = scheduler.get_job(name, PERSISTENT_STORE)
            trigger = cron_trigger(expression)
            if existing is None:
                scheduler.add_job(
                    run_registered,
                    trigger,
                    args=[name],
                    id=name,
                    name=name,
                    jobstore=PERSISTENT_STORE,
                    replace_existing=True,
                )
            elif str(existing.trigger) != str(trigger):
                paused = existing.next_run_time is None
                scheduler.reschedule_job(name, PERSISTENT_STORE, trigger=trigger)
                if paused:
                    scheduler.pause_job(name, PERSISTENT_STORE)

    def wakeup(self) -> None:
        if self._scheduler is not None:
            self._scheduler.wakeup()

    def shutdown(self) -> None:
        if self._scheduler is not None:
            self._scheduler.shutdown(wait=False)
            self._scheduler = None


class JobControl:
    """Pause, resume and list the persistent jobs from any process, straight on the shared job store."""

    def __init__(self, engine: Engine, jobs: Jobs) -> None:
        self.jobs = jobs
        self._store = SQLAlchemyJobStore(engine=engine)
        self._scheduler = BackgroundScheduler(timezone="UTC")  # never started: only a reference for the store
        self._store.start(self._scheduler, PERSISTENT_STORE)

    def _job(self, name: str) -> Job:
        job = self._store.lookup_job(name)
        if job is not None:
            return job
        expression = self.jobs.cron.get(name)
        if expression is None:
            raise KeyError(name)
        trigger = cron_trigger(expression)
        job = Job(
            self._scheduler,
            id=name,
            func=run_registered,
            trigger=trigger,
            executor="default",
            args=[name],
            kwargs={},
            name=name,
            misfire_grace_time=self.jobs.misfire_grace_seconds,
            coalesce=True,
            max_instances=1,
            next_run_time=trigger.get_next_fire_time(None, utcnow()),
        )
        self._store.add_job(job)
        return job

    def status(self, name: str) -> JobStatus:
        expression = self.jobs.cron.get(name)
        job = self._store.lookup_job(name)
        if job is None:
            next_run = cron_trigger(expression).get_next_fire_time(None, utcnow()) if expression else None
            return JobStatus(name, expression, False, next_run)
        return JobStatus(name, expression, job.next_run_time is None, job.next_run_time)

    def pause(self, name: str) -> JobStatus:
        job = self._job(name)
        job._modify(next_run_time=None)
        self._store.update_job(job)
        self.jobs.wakeup()
        return self.status(name)

    def trigger(self, name: str) -> JobStatus:
        """Make the job due now: the next scheduler to wake up (on any instance) runs it."""
        return self.set_next_run(name, utcnow())

    def set_next_run(self, name: str, when: datetime) -> JobStatus:
        """Move the job's next run (a time in the past is a missed run: within the misfire grace time it runs once,
        beyond it it is skipped and the job goes back to its schedule)."""
        job = self._job(name)
        job._modify(next_run_time=when)
        self._store.update_job(job)
        self.jobs.wakeup()
        return self.status(name)

    def resume(self, name: str) -> JobStatus:
        job = self._job(name)
        job._modify(next_run_time=job.trigger.get_next_fire_time(None, utcnow()))
        self._store.update_job(job)
        self.jobs.wakeup()
        return self.status(name)


def _logged(name: str, function: Callable[[], object]) -> Callable[[], None]:
    def run() -> None:
        try:
            result = function()
            logger.info("job %s done: %s", name, result)
        except Exception:
            logger.exception("job %s failed", name)

    return run


def claim_lease(database: Database, name: str, seconds: float, holder: str) -> bool:
    """Take the job's lease for this period if it is due (True: run it now). Safe under any concurrency: only the
    conditional update that finds the lease due wins."""
    now = utcnow()
    next_due = now + timedelta(seconds=seconds * 0.8)  # a little under a period: the owner's next firing is due
    with database.transaction() as session:
        claimed = session.execute(
            update(JobLease)
            .where(JobLease.name == name, JobLease.due_at <= now)
            .values(due_at=next_due, holder=holder, last_run_at=now, runs=JobLease.runs + 1)
        ).rowcount
        if claimed:
            return True
        if session.get(JobLease, name) is not None:
            return False
        try:
            with session.begin_nested():
                session.execute(
                    insert(JobLease).values(name=name, due_at=next_due, holder=holder, last_run_at=now, runs=1)
                )
        except IntegrityError:  # another instance created it first, and runs this period
            return False
        return True


def _leased(database: Database, name: str, seconds: float, holder: str, run: Callable[[], None]) -> Callable[[], None]:
    def run_if_claimed() -> None:
        try:
            claimed = claim_lease(database, name, seconds, holder)
        except Exception as error:  # the database is unavailable: skip this period, try again at the next
            logger.warning("job %s skipped: lease not claimed (%s)", name, type(error).__name__)
            return
        if claimed:
            run()

    return run_if_claimed


def start_with_first_request(app: Flask, jobs: Jobs) -> None:
    started = False

    @app.before_request
    def _start_jobs() -> None:
        nonlocal started
        if not started:
            started = True
            jobs.start()
