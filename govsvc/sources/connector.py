"""External SQL sources as DSR connectors (issue 9 phase 2): access returns the subject's rows, erasure deletes
them (chunked) and leaves a tombstone in the deletion ledger; anything a legal hold or legal retention keeps stays,
and the subject is restricted."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from datetime import datetime
from typing import Any

from govsvc.audit.service import format_time
from govsvc.core.db import utcnow
from govsvc.core.errors import ServiceError
from govsvc.dsr.connectors import Job, Outcome, Record
from govsvc.retention.models import DeletionTombstone
from govsvc.sources.service import SourceConfig, Sources
from govsvc.subjects.service import normalise


class SqlSourceConnector:
    """One registered SQL source, reached for access (``collect``) and erasure (``erase``)."""

    kind = "sql"
    operations = frozenset({"collect", "erase"})

    def __init__(self, sources: Sources, config: SourceConfig, pseudonym: Callable[[str], str]) -> None:
        self.sources = sources
        self.config = config
        self.pseudonym = pseudonym
        self.name = f"sql_{config.name}"  # also the file name of its records in export bundles

    def _values(self, job: Job) -> list[str]:
        """The subject's key values in this source: its identifiers of the source's kind and system."""
        values = []
        for identifier in job.identifiers:
            if identifier["kind"] == self.config.subject_kind and identifier["system"] == self.config.subject_system:
                try:
                    values.append(normalise(identifier["kind"], identifier["value"]))
                except ServiceError:
                    continue
                if identifier["value"] not in values:
                    values.append(identifier["value"])
        return list(dict.fromkeys(values))

    def collect(self, job: Job) -> Iterator[Record]:
        columns = [c for c in self.config.columns if c != self.config.subject_column]
        for row in self.sources.rows_of(self.config, self._values(job), columns=columns):
            stamp = row.get(self.config.timestamp_column)
            yield Record(
                source=self.name,
                record_type="row",
                record_id=str(row[self.config.key_column]),
                category=None,
                provenance="provided",
                fields={
                    column: _plain(row.get(column))
                    for column in columns
                    if column not in (self.config.key_column, self.config.timestamp_column)
                },
                recorded_at=format_time(stamp) if isinstance(stamp, datetime) and stamp.tzinfo else _plain(stamp),
            )

    def run(self, operation: str, job: Job) -> Outcome:
        if operation != "erase":
            return Outcome("skipped", notes=[f"{self.name} has nothing to {operation}"])
        values = self._values(job)
        if not values:
            return Outcome("done", counts={"rows_deleted": 0}, notes=["no key of this subject in the source"])
        kept = [
            e
            for e in job.exceptions
            if any(e.covers(category) for category in self.config.columns.values()) or "*" in e.categories
        ]
        if kept:
            return Outcome(
                "partial",
                counts={"rows_deleted": 0},
                kept=[{**e.as_dict(), "source_table": self.name} for e in kept],
                notes=["rows kept (restricted) while a hold or legal retention applies"],
            )
        deleted = self.sources.delete_subject_rows(self.config, values)
        now = utcnow()
        with job.database.transaction() as session:
            session.execute(
                DeletionTombstone.__table__.insert(),
                [
                    {
                        "subject_key": self.pseudonym(value),
                        "store": self.config.store,
                        "deleted_before": now,
                        "action": "delete",
                        "run_id": f"dsr:{job.request_id}",
                        "recorded_at": now,
                    }
                    for value in values
                ],
            )
        return Outcome("done", counts={"rows_deleted": deleted})

    def status(self, session: Any) -> dict[str, Any]:
        return {
            "name": self.name,
            "kind": self.kind,
            "operations": sorted(self.operations),
            "healthy": self.sources.healthy(self.config),
        }


def _plain(value: Any) -> Any:
    if isinstance(value, datetime):
        return value.isoformat()
    if isinstance(value, bytes):
        return value.hex()
    return value
