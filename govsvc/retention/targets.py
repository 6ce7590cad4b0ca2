"""Where retention rules act: the service's own stores (profile vault, consent projection, DSR export files,
expired API keys) and registered external SQL sources. A target pages through its candidates in key order
(keyset paging: resumable, no table scans per chunk) and carries out the rule's action on a chunk."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from sqlalchemy import and_, delete, func, or_, select, update
from sqlalchemy.orm import Session, aliased

from govsvc.auth.models import ApiClient
from govsvc.consent.models import ConsentState
from govsvc.core.db import utcnow
from govsvc.crypto.models import CryptoKey
from govsvc.dsr.models import DsrExport, DsrExportChunk, DsrRequest
from govsvc.retention.models import RetentionEvent
from govsvc.retention.rules import Rule
from govsvc.sources.service import SourceConfig, Sources
from govsvc.subjects.models import Subject
from govsvc.vault.models import VaultField, VaultFieldHistory
from govsvc.vault.service import Vault, delete_history

TERMINAL_DSR = ("completed", "partially_completed", "denied", "cancelled", "expired")
EVENT_TRIGGER_NAMES = {
    "contract_end": ("contract_end", "account_cancelled"),
    "purpose_completed": ("purpose_completed",),
}


@dataclass
class Item:
    """One candidate: its key in the store, its subject (when known), a pseudonymous id for reports, the data
    categories the action would touch, and the time its retention is counted from (for minimum retention)."""

    key: Any
    subject_pk: int | None
    pseudonym: str | None
    categories: tuple[str | None, ...]
    ref_time: datetime | None
    subject_id: str | None = None
    index: str | None = None  # an external key's blind index (to find its subject when needed)


class Target:
    store: str = ""
    external = False

    def page(self, session: Session, rule: Rule, cutoff: datetime, after: Any, limit: int) -> list[Item]:
        raise NotImplementedError

    def act(self, session: Session, rule: Rule, items: Sequence[Item], cutoff: datetime) -> int:
        """Carry out the rule's action on items (in the service's transaction); returns the items acted on."""
        raise NotImplementedError


def _subject_ref_time(trigger: str, cutoff: datetime, after: int = 0) -> Any:
    """A (subject_pk, ref_time) selectable of the subjects above ``after`` whose trigger time lies before
    ``cutoff``. The bound is applied inside each aggregate, so a page of a run groups only the subjects from where
    the last page ended (outside it, every page grouped the whole table again: a run grew with its square)."""
    if trigger == "created_at":
        return select(Subject.pk.label("subject_pk"), Subject.created_at.label("ref_time")).where(
            Subject.created_at < cutoff, Subject.pk > after
        )
    if trigger == "last_activity":
        latest = (
            select(VaultField.subject_pk.label("subject_pk"), func.max(VaultField.updated_at).label("ref_time"))
            .where(VaultField.subject_pk > after)
            .group_by(VaultField.subject_pk)
            .subquery()
        )
        # the profile's own activity (administrative changes to the subject, like a hold, do not count)
        return select(latest.c.subject_pk, latest.c.ref_time).where(latest.c.ref_time < cutoff)
    if trigger == "consent_withdrawn":
        given = aliased(ConsentState)
        still_given = (
            select(given.subject_pk)
            # bounded too, so that a hash anti-join reads only the range (NOT IN a large set became a nested scan)
            .where(given.subject_pk == ConsentState.subject_pk, given.subject_pk > after, given.status == "given")
            .exists()
        )
        return (
            select(ConsentState.subject_pk.label("subject_pk"), func.max(ConsentState.updated_at).label("ref_time"))
            .where(ConsentState.status == "withdrawn", ConsentState.subject_pk > after, ~still_given)
            .group_by(ConsentState.subject_pk)
            .having(func.max(ConsentState.updated_at) < cutoff)
        )
    if trigger == "dsr_closed":
        return (
            select(DsrRequest.subject_pk.label("subject_pk"), func.max(DsrRequest.updated_at).label("ref_time"))
            .where(DsrRequest.status.in_(TERMINAL_DSR), DsrRequest.subject_pk > after)
            .group_by(DsrRequest.subject_pk)
            .having(func.max(DsrRequest.updated_at) < cutoff)
        )
    names = EVENT_TRIGGER_NAMES[trigger]
    return (
        select(RetentionEvent.subject_pk.label("subject_pk"), func.max(RetentionEvent.occurred_at).label("ref_time"))
        .where(RetentionEvent.trigger.in_(names), RetentionEvent.subject_pk > after)
        .group_by(RetentionEvent.subject_pk)
        .having(func.max(RetentionEvent.occurred_at) < cutoff)
    )


class VaultTarget(Target):
    """Profiles in the vault: delete the fields of the rule's categories (and their history), crypto-shred the
    whole profile (data key destroyed), or restrict the subject."""

    store = "vault"

    def __init__(self, vault: Vault) -> None:
        self.vault = vault

    def page(self, session: Session, rule: Rule, cutoff: datetime, after: Any, limit: int) -> list[Item]:
        due = _subject_ref_time(rule.trigger, cutoff, int(after or 0)).subquery()
        query = (
            select(Subject.pk, Subject.subject_id, due.c.ref_time)
            .join(due, due.c.subject_pk == Subject.pk)
            .where(Subject.pk > int(after or 0))
            .order_by(Subject.pk)
            .limit(limit)
        )
        if rule.action == "crypto_shred":
            live_key = select(CryptoKey.pk).where(
                CryptoKey.key_id == ("subject:" + Subject.subject_id), CryptoKey.status != "destroyed"
            )
            query = query.where(live_key.exists())
        elif rule.action == "restrict":
            query = query.where(Subject.restricted.is_(False))
        else:
            query = query.where(select(VaultField.pk).where(VaultField.subject_pk == Subject.pk).exists())
        rows = session.execute(query).all()
        if not rows:
            return []
        categories: dict[int, set[str]] = {}
        for subject_pk, category in session.execute(
            select(VaultField.subject_pk, VaultField.category).where(VaultField.subject_pk.in_([r[0] for r in rows]))
        ):
            categories.setdefault(subject_pk, set()).add(category)
        items = []
        for subject_pk, subject_id, ref_time in rows:
            cats = categories.get(subject_pk, set())
            if rule.action == "delete":
                cats = {c for c in cats if rule.covers(c)}
                if not cats:
                    continue
            items.append(
                Item(
                    key=subject_pk,
                    subject_pk=subject_pk,
                    pseudonym=subject_id,
                    categories=tuple(sorted(cats)) or ("*",),
                    ref_time=ref_time,
                    subject_id=subject_id,
                )
            )
        if not items:  # a page of subjects with nothing to act on: keep paging past them
            items.append(Item(key=rows[-1][0], subject_pk=None, pseudonym=None, categories=(), ref_time=None))
        return items

    def act(self, session: Session, rule: Rule, items: Sequence[Item], cutoff: datetime) -> int:
        done = 0
        for item in items:
            subject = session.get(Subject, item.subject_pk)
            if subject is None:
                continue
            if rule.action == "restrict":
                subject.restricted = True
                subject.updated_at = utcnow()
            elif rule.action == "crypto_shred":
                self.vault.shred(session, subject, via="retention", rule=rule.key)
                delete_history(session, subject)
            else:
                fields = [
                    row.field
                    for row in session.scalars(select(VaultField).where(VaultField.subject_pk == subject.pk))
                    if rule.covers(row.category)
                ]
                session.execute(
                    delete(VaultField).where(VaultField.subject_pk == subject.pk, VaultField.field.in_(fields))
                )
                session.execute(
                    delete(VaultFieldHistory).where(
                        VaultFieldHistory.subject_pk == subject.pk, VaultFieldHistory.field.in_(fields)
                    )
                )
            done += 1
        session.flush()
        return done


class ConsentTarget(Target):
    """The consent projection's withdrawn consents past their evidence period (the append-only ledger stays)."""

    store = "consent"

    def page(self, session: Session, rule: Rule, cutoff: datetime, after: Any, limit: int) -> list[Item]:
        rows = session.execute(
            select(Subject.pk, Subject.subject_id, func.max(ConsentState.updated_at))
            .join(ConsentState, ConsentState.subject_pk == Subject.pk)
            .where(
                ConsentState.status == "withdrawn",  # the partial index of the withdrawn states, read from ``after``
                ConsentState.updated_at < cutoff,
                ConsentState.subject_pk > int(after or 0),
                Subject.pk > int(after or 0),
            )
            .group_by(Subject.pk, Subject.subject_id)
            .order_by(Subject.pk)
            .limit(limit)
        ).all()
        return [Item(r[0], r[0], r[1], ("user.privacy_preferences",), r[2], r[1]) for r in rows]

    def act(self, session: Session, rule: Rule, items: Sequence[Item], cutoff: datetime) -> int:
        result = session.execute(
            delete(ConsentState).where(
                ConsentState.subject_pk.in_([i.subject_pk for i in items]),
                ConsentState.status == "withdrawn",
                ConsentState.updated_at < cutoff,
            )
        )
        return len(items) if result.rowcount else 0


class DsrExportsTarget(Target):
    """DSR export bundles (encrypted chunks in the database) past their period, downloaded or not."""

    store = "dsr_exports"

    def page(self, session: Session, rule: Rule, cutoff: datetime, after: Any, limit: int) -> list[Item]:
        rows = session.execute(
            select(DsrExport.pk, DsrRequest.subject_pk, Subject.subject_id, DsrExport.created_at)
            .join(DsrRequest, DsrRequest.pk == DsrExport.request_pk)
            .outerjoin(Subject, Subject.pk == DsrRequest.subject_pk)
            .where(DsrExport.created_at < cutoff, DsrExport.purged_at.is_(None), DsrExport.pk > int(after or 0))
            .order_by(DsrExport.pk)
            .limit(limit)
        ).all()
        return [Item(r[0], r[1], r[2], ("*",), r[3], r[2]) for r in rows]

    def act(self, session: Session, rule: Rule, items: Sequence[Item], cutoff: datetime) -> int:
        keys = [i.key for i in items]
        session.execute(delete(DsrExportChunk).where(DsrExportChunk.export_pk.in_(keys)))
        session.execute(update(DsrExport).where(DsrExport.pk.in_(keys)).values(purged_at=utcnow()))
        return len(keys)


class ApiKeysTarget(Target):
    """API keys expired or revoked before the cutoff (``last_activity``) or made before it and no longer valid
    (``created_at``). Never a key that still works."""

    store = "api_keys"

    def page(self, session: Session, rule: Rule, cutoff: datetime, after: Any, limit: int) -> list[Item]:
        now = utcnow()
        ended = or_(
            ApiClient.revoked_at.is_not(None), and_(ApiClient.expires_at.is_not(None), ApiClient.expires_at < now)
        )
        if rule.trigger == "created_at":
            due = and_(ended, ApiClient.created_at < cutoff)
        else:
            due = or_(ApiClient.revoked_at < cutoff, ApiClient.expires_at < cutoff)
        rows = session.execute(
            select(ApiClient.pk, ApiClient.client_id, func.coalesce(ApiClient.revoked_at, ApiClient.expires_at))
            .where(due, ApiClient.pk > int(after or 0))
            .order_by(ApiClient.pk)
            .limit(limit)
        ).all()
        return [Item(r[0], None, r[1], ("*",), r[2]) for r in rows]

    def act(self, session: Session, rule: Rule, items: Sequence[Item], cutoff: datetime) -> int:
        return int(session.execute(delete(ApiClient).where(ApiClient.pk.in_([i.key for i in items]))).rowcount or 0)


class SourceTarget(Target):
    """A registered external SQL table: rows whose timestamp lies before the cutoff are deleted or anonymized
    by primary key, one short transaction per chunk in the source's own database."""

    external = True

    def __init__(
        self,
        sources: Sources,
        config: SourceConfig,
        keys: Any,  # the Retention engine: source_keys(), watched()
        masker: Any,
    ) -> None:
        self.sources = sources
        self.config = config
        self.store = config.store
        self.keys = keys
        self.masker = masker

    def page(self, session: Session, rule: Rule, cutoff: datetime, after: Any, limit: int) -> list[Item]:
        due_since: dict[str, datetime] | None = None
        if rule.trigger in ("created_at", "last_activity"):  # the row's own timestamp
            rows = self.sources.page(self.config, before=cutoff, after=after, limit=limit)
        else:  # a subject event (consent withdrawn, contract end...): every row of the subjects it made due
            due = session.execute(_subject_ref_time(rule.trigger, cutoff)).all()
            due_since = self.keys.subject_values(session, self.config, {pk: at for pk, at in due})
            if not due_since:
                return []
            rows = self.sources.page(self.config, before=None, after=after, limit=limit, subjects=list(due_since))
        if rule.action == "anonymize":
            rows = [r for r in rows if not str(r[1] or "").startswith(ANON_PREFIX)]
            if not rows:
                more = self.sources.page(self.config, before=cutoff, after=after, limit=limit)
                if more:
                    return [Item(more[-1][0], None, None, (), None)]
        values = {str(r[1]) for r in rows if r[1] is not None}
        keyed = self.keys.source_keys(self.config, values)
        watched = self.keys.watched(session, self.config, rule) if values else {}
        if rule.action == "delete":
            categories = tuple(sorted(set(self.config.columns.values())))
        else:
            categories = tuple(sorted({c for c in self.config.columns.values() if rule.covers(c)}))
        none: tuple[str | None, str | None] = (None, None)
        items = []
        for key, value, stamp in rows:
            pseudonym, index = keyed[str(value)] if value is not None else none
            items.append(
                Item(
                    key=key,
                    subject_pk=watched.get(index) if index else None,
                    pseudonym=pseudonym,
                    categories=categories,
                    ref_time=_ref_time(stamp, due_since, value),
                    index=index,
                )
            )
        return items

    def act_external(self, rule: Rule, keys: Sequence[Any], cutoff: datetime) -> int:
        if rule.action == "delete":
            return self.sources.delete_keys(self.config, keys, before=cutoff)
        if rule.action == "anonymize":
            return self.anonymize(rule, keys)
        return 0

    def anonymize(self, rule: Rule, keys: Sequence[Any]) -> int:
        import secrets

        columns = [c for c, category in self.config.columns.items() if rule.covers(category)]
        table = self.sources.table(self.config)
        key_column = table.c[self.config.key_column]
        with self.sources.engine(self.config).connect() as connection:
            rows = connection.execute(
                select(key_column, *[table.c[c] for c in columns]).where(key_column.in_(list(keys)))
            ).all()
        changes = []
        for row in rows:
            values: dict[str, Any] = {self.config.subject_column: ANON_PREFIX + secrets.token_hex(8)}
            for column, value in zip(columns, row[1:], strict=True):
                if value is None or column == self.config.subject_column:
                    continue
                category = self.config.columns[column]
                operator = self.masker.rules.operator(rule.masking_profile, category)
                if operator in ("pseudonymize", "encrypt"):
                    operator = "redact"  # anonymization must be irreversible (PIPL Art 73(4))
                values[column] = self.masker.replace_value(operator, category, str(value), label=column)
            changes.append((row[0], values))
        return self.sources.update_rows(self.config, changes)


ANON_PREFIX = "anon_"


def _ref_time(stamp: Any, due_since: dict[str, datetime] | None, value: Any) -> datetime | None:
    """When the row's retention started: its timestamp, or the subject's event."""
    if due_since is not None:
        return _aware(due_since.get(str(value)))
    return stamp if isinstance(stamp, datetime) and stamp.tzinfo is not None else _aware(stamp)


def _aware(moment: Any) -> datetime | None:
    from datetime import UTC

    if not isinstance(moment, datetime):
        return None
    return moment.replace(tzinfo=UTC) if moment.tzinfo is None else moment.astimezone(UTC)
