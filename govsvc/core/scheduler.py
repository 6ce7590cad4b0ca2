"""APScheduler in serving processes: periodic jobs registered by the domains (started with the first request,
like the audit sequencer; ``GOVSVC_SCHEDULER=off`` leaves it to another process or to cron and the CLI).

Jobs must be safe to run on several instances at once (each claims its work with conditional updates)."""

from __future__ import annotations

import logging
from collections.abc import Callable

from apscheduler.schedulers.background import BackgroundScheduler
from flask import Flask

logger = logging.getLogger("govsvc.scheduler")


class Jobs:
    """The app's periodic jobs: ``add(name, seconds, function)``, then ``start()`` once."""

    def __init__(self) -> None:
        self._jobs: list[tuple[str, int, Callable[[], object]]] = []
        self._scheduler: BackgroundScheduler | None = None

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
            scheduler.add_job(
                _logged(name, function), "interval", seconds=seconds, id=name, max_instances=1, coalesce=True
            )
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


def start_with_first_request(app: Flask, jobs: Jobs) -> None:
    started = False

    @app.before_request
    def _start_jobs() -> None:
        nonlocal started
        if not started:
            started = True
            jobs.start()
