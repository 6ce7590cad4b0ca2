"""APScheduler in serving processes: periodic jobs registered by the domains (started with the first request,
like the audit sequencer; ``GOVSVC_SCHEDULER=off`` leaves it to another process or to cron and the CLI).

With a database, each run first claims the job's lease (``job_leases``: a conditional update that moves ``due_at`` one
period on), so of several instances firing the same job only one runs it per period; if that instance dies, another
takes over at its next firing. Jobs must still be safe to run twice (each claims its work with conditional updates).
"""

from __future__ import annotations

import logging
import os
import socket
from collections.abc import Callable
from datetime import timedelta

from apscheduler.schedulers.background import BackgroundScheduler
from flask import Flask
from sqlalchemy import insert, update
from sqlalchemy.exc import IntegrityError

from govsvc.core.db import Database, utcnow
from govsvc.core.models import JobLease

logger = logging.getLogger("govsvc.scheduler")


class Jobs:
    """The app's periodic jobs: ``add(name, seconds, function)``, then ``start()`` once."""

    def __init__(self, database: Database | None = None) -> None:
        self._jobs: list[tuple[str, int, Callable[[], object]]] = []
        self._scheduler: BackgroundScheduler | None = None
        self._database = database
        self.holder = f"{socket.gethostname()}:{os.getpid()}"

    def add(self, name: str, seconds: int, function: Callable[[], object]) -> None:
        self._jobs.append((name, seconds, function))

    @property
    def names(self) -> list[str]:
        return [name for name, _, _ in self._jobs]

    def start(self) -> None:
        if self._scheduler is not None:
            return
        scheduler = BackgroundScheduler(daemon=True, timezone="UTC")
        for name, seconds, function in self._jobs:
            run = _logged(name, function)
            if self._database is not None:
                run = _leased(self._database, name, seconds, self.holder, run)
            scheduler.add_job(run, "interval", seconds=seconds, id=name, max_instances=1, coalesce=True)
        scheduler.start()
        self._scheduler = scheduler

    def shutdown(self) -> None:
        if self._scheduler is not None:
            self._scheduler.shutdown(wait=False)
            self._scheduler = None


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
