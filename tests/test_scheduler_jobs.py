"""The persistent cron jobs of core/scheduler.py with a real APScheduler on both databases: misfire handling."""

from __future__ import annotations

import time
from datetime import timedelta

from govsvc.core.db import utcnow
from govsvc.core.scheduler import JobControl, Jobs


def _wait(condition, seconds: float = 10.0) -> bool:
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        if condition():
            return True
        time.sleep(0.05)
    return condition()


def test_a_missed_run_runs_once_within_the_grace_time_and_is_skipped_beyond_it(app) -> None:
    engine = app.extensions["govsvc.db"].engine
    jobs = Jobs(app.extensions["govsvc.db"], misfire_grace_seconds=60)
    ran: list[float] = []
    jobs.add_cron("test.misfire", "0 4 * * *", lambda: ran.append(time.monotonic()))
    jobs.start()
    try:
        control = JobControl(engine, jobs)
        control.set_next_run("test.misfire", utcnow() - timedelta(hours=2))  # e.g. every instance was down
        assert _wait(lambda: control.status("test.misfire").next_run_at > utcnow())  # back on its schedule
        time.sleep(0.3)
        assert ran == []  # beyond the grace time: skipped
        status = control.status("test.misfire")
        assert status.next_run_at.hour == 4 and status.next_run_at.minute == 0 and not status.paused
        control.set_next_run("test.misfire", utcnow() - timedelta(seconds=10))
        assert _wait(lambda: len(ran) == 1)  # within the grace time: runs, once
        time.sleep(0.3)
        assert len(ran) == 1 and control.status("test.misfire").next_run_at > utcnow()
    finally:
        jobs.shutdown()


def test_jobs_survive_a_restart_with_their_pause_state(app) -> None:
    engine = app.extensions["govsvc.db"].engine
    first = Jobs(app.extensions["govsvc.db"])
    first.add_cron("test.persistent", "30 1 * * *", lambda: None)
    first.start()
    JobControl(engine, first).pause("test.persistent")
    first.shutdown()
    second = Jobs(app.extensions["govsvc.db"])  # a new process: same job row, still paused
    second.add_cron("test.persistent", "30 1 * * *", lambda: None)
    second.start()
    try:
        assert JobControl(engine, second).status("test.persistent").paused is True
        second.set_cron({"test.persistent": ("45 1 * * *", lambda: None)})  # a changed schedule keeps the pause
        status = JobControl(engine, second).status("test.persistent")
        assert status.paused is True and status.schedule == "45 1 * * *"
    finally:
        second.shutdown()
