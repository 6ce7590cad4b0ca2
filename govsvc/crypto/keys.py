"""The key hierarchy: root key (provider) -> tenant key -> one data key (DEK) per subject.

Every stored key is wrapped. Unwrapped keys live only in a bounded LRU with a TTL and are dropped on rotation or
destruction; a destruction through any instance bumps ``crypto_state.epoch``, and every instance empties its cache
when it sees the epoch move (checked once per request, before any cached key is used). Destroying a subject's data
key (crypto-shredding) makes every ciphertext of that subject unreadable for good, including copies in backups.
"""

from __future__ import annotations

import os
import threading
import time
from collections import OrderedDict
from dataclasses import dataclass
from typing import Any

from cryptography.exceptions import InvalidTag
from sqlalchemy import ScalarSelect, bindparam, func, insert, select, update
from sqlalchemy.engine import Row
from sqlalchemy.orm import Session

from govsvc.core.db import utcnow
from govsvc.core.errors import KeyDestroyed, NotFoundError, Undecryptable
from govsvc.crypto import tokens
from govsvc.crypto.models import CryptoKey, CryptoState
from govsvc.crypto.providers import KeyProvider, KeyUnwrapError
from govsvc.crypto.tokens import Ciphers, TokenError

DEFAULT_TENANT = "default"
_NONCE = 12
KEY_EPOCH_INFO = "govsvc.key_epoch"  # session.info: the key epoch this session has read
_state = CryptoState.__table__.c
_CURRENT_EPOCH = select(_state.epoch).where(_state.id == 1)
_monotonic = time.monotonic
_keys = CryptoKey.__table__.c
_PRELOAD = select(_keys.key_id, _keys.version, _keys.status, _keys.wrapped, _keys.wrapped_by).where(
    _keys.key_id.in_(bindparam("key_ids", expanding=True)), _keys.wrapped.is_not(None)
)
_FORMAT_GCM = tokens.FORMAT_GCM
_seal_gcm, _open_gcm = tokens.seal_gcm, tokens.open_gcm  # bound once: the per-value hot path


def subject_key_id(subject_id: str) -> str:
    return f"subject:{subject_id}"


def tenant_key_id(tenant: str) -> str:
    return f"tenant:{tenant}"


_CacheEntry = tuple[float, Ciphers, tuple[str, int]]  # expires at (monotonic), the key, its (key id, version)


class KeyCache:
    """Unwrapped keys: least recently used first out, each for ``ttl`` seconds at most. Thread-safe.

    Keys are found by (key id, version), or by a token's header bytes (no parsing on the hot path of ``open``).
    """

    def __init__(self, size: int = 10_000, ttl: float = 300.0) -> None:
        self._size, self._ttl = size, ttl
        # (key id, version) -> (expires at, ciphers, (key id, version)); the same entries by token header bytes
        self._entries: OrderedDict[tuple[str, int], _CacheEntry] = OrderedDict()
        self._by_header: dict[bytes, _CacheEntry] = {}
        self._latest: _CacheEntry | None = None  # the entry last moved to the end (a hint; races only cost a move)
        self._lock = threading.Lock()

    def get(self, key_id: str, version: int) -> Ciphers | None:
        # Lock-free: each OrderedDict call is atomic in CPython; an entry evicted meanwhile is simply a miss.
        return self._use(self._entries.get((key_id, version)))

    def for_token(self, token: bytes) -> Ciphers | None:
        """The cached key whose header starts ``token``, if any (a miss means: parse the header and look up)."""
        if len(token) < 2:
            return None
        return self._use(self._by_header.get(token[: 6 + token[1]]))  # the same entries as get's (see put)

    def _use(self, entry: _CacheEntry | None) -> Ciphers | None:
        """An entry found by ``get`` or ``for_token``: its key unless it expired, moved to the LRU end."""
        if entry is None:
            return None
        if entry[0] < _monotonic():
            self._expire(entry)
            return None
        if entry is not self._latest:  # the most recently used already is last: nothing to move
            try:
                self._entries.move_to_end(entry[2])
            except KeyError:  # evicted by another thread just now: still valid for this call
                return entry[1]
            self._latest = entry
        return entry[1]

    def _expire(self, entry: _CacheEntry) -> None:
        with self._lock:
            if self._entries.get(entry[2]) is entry:
                del self._entries[entry[2]]
                self._forget_headers(entry[1])
            self._latest = None

    def put(self, ciphers: Ciphers) -> None:
        key = (ciphers.key_id, ciphers.version)
        entry = (_monotonic() + self._ttl, ciphers, key)
        with self._lock:
            self._entries[key] = entry
            self._entries.move_to_end(key)
            self._latest = entry
            self._by_header[ciphers.gcm_header] = self._by_header[ciphers.siv_header] = entry
            while len(self._entries) > self._size:
                _, (_, evicted, _) = self._entries.popitem(last=False)
                self._forget_headers(evicted)

    def _forget_headers(self, ciphers: Ciphers) -> None:
        self._by_header.pop(ciphers.gcm_header, None)
        self._by_header.pop(ciphers.siv_header, None)

    def drop(self, key_id: str) -> None:
        """Forget every version of a key (rotated or destroyed)."""
        with self._lock:
            for cached in [entry for entry in self._entries if entry[0] == key_id]:
                self._forget_headers(self._entries.pop(cached)[1])
            self._latest = None  # no reference to a dropped key is kept

    def clear(self) -> None:
        with self._lock:
            self._entries.clear()
            self._by_header.clear()
            self._latest = None

    def __len__(self) -> int:
        return len(self._entries)


@dataclass(frozen=True)
class KeyStatus:
    key_id: str
    version: int
    kind: str
    status: str
    wrapped_by: str | None


class KeyStore:
    """Creates, unwraps, rotates and destroys the wrapped keys; seals and opens field values."""

    def __init__(self, provider: KeyProvider, *, tenant: str = DEFAULT_TENANT, cache: KeyCache | None = None) -> None:
        self.provider = provider
        self.tenant = tenant
        self.cache = cache or KeyCache()
        self._epoch: int | None = None  # the key epoch the cache holds keys of
        self._epoch_lock = threading.Lock()

    # -- the cache across instances ----------------------------------------------------------------------------

    @staticmethod
    def epoch_column() -> ScalarSelect[int]:
        """The key epoch as a column of another query (``sync(session, read_epoch=...)``): no round trip of its own."""
        return _CURRENT_EPOCH.scalar_subquery()

    def sync(self, session: Session, *, read_epoch: int | None = None) -> None:
        """Empty the cache if a key was destroyed anywhere since it was filled; one indexed read per session.

        ``read_epoch``: the epoch this session just read along with its data (``epoch_column``), used when the
        session has not read one yet; the read then needs no statement of its own.
        """
        epoch = session.info.get(KEY_EPOCH_INFO)
        if epoch is None:
            if read_epoch is None:
                read_epoch = session.connection().execute(_CURRENT_EPOCH).scalar()
            epoch = int(read_epoch or 0)
            session.info[KEY_EPOCH_INFO] = epoch
        if epoch != self._epoch:
            with self._epoch_lock:
                if epoch >= 0 and (self._epoch is None or epoch > self._epoch):
                    self.cache.clear()
                    self._epoch = epoch

    def _cache_usable(self, session: Session) -> bool:
        return session.info.get(KEY_EPOCH_INFO) == self._epoch

    def _cached(self, session: Session, key_id: str, version: int) -> Ciphers | None:
        return self.cache.get(key_id, version) if self._cache_usable(session) else None

    def cached_for_token(self, session: Session, token: bytes) -> Ciphers | None:
        """The cached key a token was sealed under, found by its header, if this session may use the cache."""
        return self.cache.for_token(token) if self._cache_usable(session) else None

    def _remember(self, session: Session, ciphers: Ciphers) -> None:
        """Cache an unwrapped key, unless this session read an older epoch than the cache's (it may have unwrapped
        a key that another instance destroyed meanwhile)."""
        if self._cache_usable(session):
            self.cache.put(ciphers)

    # -- tenant key --------------------------------------------------------------------------------------------

    def _root_label(self, version: int) -> str:
        return f"root:{self.provider.name}:{version}"

    def _tenant_context(self, version: int) -> str:
        return f"{tenant_key_id(self.tenant)}:{version}"

    def tenant_ciphers(self, session: Session, version: int | None = None) -> Ciphers:
        """The tenant key (the active version unless one is named); created at first use."""
        self.sync(session)
        key_id = tenant_key_id(self.tenant)
        if version is not None and (cached := self._cached(session, key_id, version)) is not None:
            return cached
        query = select(CryptoKey).where(CryptoKey.key_id == key_id)
        row = session.scalar(
            query.where(CryptoKey.version == version)
            if version is not None
            else query.where(CryptoKey.status == "active").order_by(CryptoKey.version.desc()).limit(1)
        )
        if row is None:
            if version is not None:
                raise NotFoundError(f"No tenant key version {version}.")
            row = self._new_tenant_key(session, 1)
        cached = self._cached(session, key_id, row.version)
        if cached is not None:
            return cached
        ciphers = Ciphers.of(key_id, row.version, self._unwrap_tenant(row))
        self._remember(session, ciphers)
        return ciphers

    def _new_tenant_key(self, session: Session, version: int) -> CryptoKey:
        root_version, wrapped = self.provider.wrap(os.urandom(32), self._tenant_context(version))
        row = CryptoKey(
            key_id=tenant_key_id(self.tenant),
            version=version,
            kind="tenant",
            wrapped=wrapped,
            wrapped_by=self._root_label(root_version),
            status="active",
        )
        session.add(row)
        session.flush()
        return row

    def _unwrap_tenant(self, row: CryptoKey) -> bytes:
        if row.wrapped is None or row.wrapped_by is None:
            raise KeyDestroyed(f"The tenant key version {row.version} was destroyed.")
        root_version = int(row.wrapped_by.rsplit(":", 1)[1])
        return self.provider.unwrap(root_version, row.wrapped, self._tenant_context(row.version))

    def rotate_root(self, session: Session) -> int:
        """Re-wrap every tenant key under the provider's current root version; no data is touched."""
        count = 0
        current = self._root_label(self.provider.current_version)
        for row in session.scalars(select(CryptoKey).where(CryptoKey.kind == "tenant", CryptoKey.wrapped.is_not(None))):
            if row.wrapped_by == current:
                continue
            key = self._unwrap_tenant(row)
            root_version, row.wrapped = self.provider.wrap(key, self._tenant_context(row.version))
            row.wrapped_by = self._root_label(root_version)
            count += 1
        session.flush()
        return count

    def rotate_tenant(self, session: Session) -> int:
        """A new tenant key version; every subject key is re-wrapped under it (data untouched). Returns the
        number of subject keys re-wrapped."""
        old = self.tenant_ciphers(session)
        self._new_tenant_key(session, old.version + 1)
        session.execute(
            update(CryptoKey)
            .where(CryptoKey.key_id == tenant_key_id(self.tenant), CryptoKey.version == old.version)
            .values(status="retired", retired_at=utcnow())
        )
        session.flush()
        new = self.tenant_ciphers(session)
        count = 0
        rows = session.scalars(
            select(CryptoKey).where(CryptoKey.kind == "subject", CryptoKey.wrapped.is_not(None))
        ).all()
        for row in rows:
            key = self._unwrap_subject(session, row)
            row.wrapped = self._wrap_subject(new, row.key_id, row.version, key)
            row.wrapped_by = f"{tenant_key_id(self.tenant)}:{new.version}"
            count += 1
        session.flush()
        self.cache.drop(tenant_key_id(self.tenant))
        return count

    # -- subject keys ------------------------------------------------------------------------------------------

    def _wrap_subject(self, tenant: Ciphers, key_id: str, version: int, key: bytes) -> bytes:
        nonce = os.urandom(_NONCE)
        return nonce + tenant.gcm.encrypt(nonce, key, f"{key_id}:{version}".encode())

    def _unwrap_subject(self, session: Session, row: CryptoKey | Row[Any]) -> bytes:
        if row.wrapped is None or row.wrapped_by is None:
            raise KeyDestroyed(
                "The data key of this subject was destroyed (crypto-shredded); its data cannot be decrypted.",
            )
        tenant = self.tenant_ciphers(session, int(row.wrapped_by.rsplit(":", 1)[1]))
        try:
            return tenant.gcm.decrypt(
                row.wrapped[:_NONCE], row.wrapped[_NONCE:], f"{row.key_id}:{row.version}".encode()
            )
        except InvalidTag as error:  # the wrapped key was altered or moved
            raise KeyUnwrapError(f"the data key {row.key_id} v{row.version} does not unwrap") from error

    def new_subject_key(self, session: Session, subject_id: str, version: int = 1) -> Ciphers:
        key_id = subject_key_id(subject_id)
        tenant = self.tenant_ciphers(session)
        key = os.urandom(32)
        session.add(
            CryptoKey(
                key_id=key_id,
                version=version,
                kind="subject",
                wrapped=self._wrap_subject(tenant, key_id, version, key),
                wrapped_by=f"{tenant_key_id(self.tenant)}:{tenant.version}",
                status="active",
            )
        )
        session.flush()
        ciphers = Ciphers.of(key_id, version, key)
        self._remember(session, ciphers)
        return ciphers

    def subject_ciphers(
        self, session: Session, subject_id: str, version: int | None = None, *, create: bool = False
    ) -> Ciphers:
        """A subject's data key: the given version, or the active one (created when ``create``)."""
        self.sync(session)
        key_id = subject_key_id(subject_id)
        if version is not None and (cached := self._cached(session, key_id, version)) is not None:
            return cached
        query = select(CryptoKey).where(CryptoKey.key_id == key_id)
        if version is not None:
            row = session.scalar(query.where(CryptoKey.version == version))
        else:
            row = session.scalar(query.order_by(CryptoKey.version.desc()).limit(1))
            if row is not None and row.status == "destroyed":
                raise KeyDestroyed("The data key of this subject was destroyed (crypto-shredded).")
        if row is None:
            if create and version is None:
                return self.new_subject_key(session, subject_id)
            raise NotFoundError("This subject has no data key.")
        cached = self._cached(session, key_id, row.version)
        if cached is not None:
            return cached
        ciphers = Ciphers.of(key_id, row.version, self._unwrap_subject(session, row))
        self._remember(session, ciphers)
        return ciphers

    def preload(self, session: Session, subject_ids: list[str]) -> dict[str, Ciphers]:
        """Every usable key version of these subjects unwrapped into the cache with one query per 500 subjects;
        returns each subject's active key (subjects without one are left out)."""
        self.sync(session)
        session.flush()  # keys this session added are read back (a no-op when nothing is pending)
        active: dict[str, Ciphers] = {}
        for offset in range(0, len(subject_ids), 500):
            key_ids = [subject_key_id(subject_id) for subject_id in subject_ids[offset : offset + 500]]
            rows = session.execute(_PRELOAD, {"key_ids": key_ids}).all()  # columns: no ORM objects to build
            for row in rows:
                ciphers = self._cached(session, row.key_id, row.version)
                if ciphers is None:
                    ciphers = Ciphers.of(row.key_id, row.version, self._unwrap_subject(session, row))
                    self._remember(session, ciphers)
                if row.status == "active":
                    active[row.key_id.split(":", 1)[1]] = ciphers
        return active

    def start_subject_rotations(self, session: Session, subject_ids: list[str]) -> int:
        """A new active data key version for each subject (in bulk); the previous one is ``retiring`` until its
        data is re-encrypted. Returns the number of keys rotated."""
        current = self.preload(session, subject_ids)
        tenant = self.tenant_ciphers(session)
        wrapped_by = f"{tenant_key_id(self.tenant)}:{tenant.version}"
        key_ids = [subject_key_id(subject_id) for subject_id in current]
        for offset in range(0, len(key_ids), 500):
            session.execute(
                update(CryptoKey)
                .where(CryptoKey.key_id.in_(key_ids[offset : offset + 500]), CryptoKey.status == "active")
                .values(status="retiring")
            )
        rows = []
        for old in current.values():
            key = os.urandom(32)
            version = old.version + 1
            rows.append(
                {
                    "key_id": old.key_id,
                    "version": version,
                    "kind": "subject",
                    "wrapped": self._wrap_subject(tenant, old.key_id, version, key),
                    "wrapped_by": wrapped_by,
                    "status": "active",
                    "created_at": utcnow(),
                }
            )
            self._remember(session, Ciphers.of(old.key_id, version, key))
        if rows:
            session.execute(insert(CryptoKey), rows)
        return len(rows)

    def retire_rotated(self, session: Session, key_id: str | None = None) -> int:
        """After re-encryption: the ``retiring`` versions (of one key, or all) become ``retired``, in one statement.

        A retired version never seals again but still opens: apps may hold tokens of it (``/v1/crypto/encrypt``)
        and move them to the active version with ``rewrap``. Only destruction (crypto-shredding) erases a version.
        Returns how many versions were retired.
        """
        query = update(CryptoKey).where(CryptoKey.kind == "subject", CryptoKey.status == "retiring")
        if key_id is not None:
            query = query.where(CryptoKey.key_id == key_id)
        return int(session.execute(query.values(status="retired", retired_at=utcnow())).rowcount or 0)

    def destroy_subject_keys(self, session: Session, subject_id: str) -> int:
        """Crypto-shred: every version's wrapped key is erased. Returns how many versions were destroyed."""
        key_id = subject_key_id(subject_id)
        result = session.execute(
            update(CryptoKey)
            .where(CryptoKey.key_id == key_id, CryptoKey.status != "destroyed")
            .values(status="destroyed", wrapped=None, destroyed_at=utcnow())
        )
        session.execute(update(CryptoState).where(CryptoState.id == 1).values(epoch=CryptoState.epoch + 1))
        session.info[KEY_EPOCH_INFO] = -1  # until it commits: use no cached key, cache none, move no epoch
        self.cache.drop(key_id)
        return int(result.rowcount or 0)

    # -- values ------------------------------------------------------------------------------------------------

    def seal(
        self, session: Session, subject_id: str, field: str, plaintext: str, *, deterministic: bool = False
    ) -> bytes:
        """A token of ``plaintext`` bound to (tenant, subject, field, key version), under the active data key."""
        ciphers = self.subject_ciphers(session, subject_id, create=True)
        return self.seal_with(ciphers, subject_id, field, plaintext, deterministic=deterministic)

    def seal_with(
        self, ciphers: Ciphers, subject_id: str, field: str, plaintext: str, *, deterministic: bool = False
    ) -> bytes:
        """As ``seal``, with the subject's active key already in hand (several values in one write)."""
        if deterministic:
            return tokens.seal(
                ciphers, plaintext.encode(), tokens.context(self.tenant, subject_id, field), deterministic=True
            )
        return _seal_gcm(ciphers, plaintext.encode(), ciphers.gcm_associated(self.tenant, subject_id, field))

    def open(self, session: Session, subject_id: str, field: str, token: bytes) -> str:
        """The plaintext of a token; Undecryptable if it was altered or moved, KeyDestroyed after shredding."""
        epoch = session.info.get(KEY_EPOCH_INFO)
        if epoch is None or epoch != self._epoch:
            self.sync(session)
            epoch = session.info.get(KEY_EPOCH_INFO)
        cached = self.cache.for_token(token) if epoch == self._epoch else None
        if cached is not None and cached.subject_id == subject_id:
            try:
                if token[0] == _FORMAT_GCM:  # the token starts with the key's GCM header (found by it)
                    associated = cached.gcm_associated(self.tenant, subject_id, field)
                    return _open_gcm(cached, token, associated).decode()
                return tokens.open_sealed(cached, token, tokens.context(self.tenant, subject_id, field)).decode()
            except TokenError as error:
                raise Undecryptable(str(error)) from None
        try:
            parsed = tokens.parse_header(token)
        except TokenError as error:
            raise Undecryptable(str(error)) from None
        if parsed.key_id != subject_key_id(subject_id):
            raise Undecryptable("The token belongs to another subject.")
        ciphers = self.subject_ciphers(session, subject_id, parsed.key_version)
        try:
            return tokens.open_sealed(ciphers, token, tokens.context(self.tenant, subject_id, field), parsed).decode()
        except TokenError as error:
            raise Undecryptable(str(error)) from None

    def rewrap(self, session: Session, subject_id: str, field: str, token: bytes) -> bytes:
        """The same plaintext sealed under the subject's active key version (the token itself if it already is);
        the plaintext never leaves this call."""
        active = self.subject_ciphers(session, subject_id)
        if token.startswith((active.gcm_header, active.siv_header)):
            self.open(session, subject_id, field, token)  # still proves the token belongs here
            return token
        deterministic = token[:1] == bytes((tokens.FORMAT_SIV,))
        plaintext = self.open(session, subject_id, field, token)
        return self.seal_with(active, subject_id, field, plaintext, deterministic=deterministic)

    def status(self, session: Session) -> dict[str, object]:
        """What an admin sees: root versions, tenant key versions, subject key counts by status. No key material."""
        tenant_rows = session.scalars(
            select(CryptoKey).where(CryptoKey.kind == "tenant").order_by(CryptoKey.version)
        ).all()
        counts = {
            status: int(count)
            for status, count in session.execute(
                select(CryptoKey.status, func.count()).where(CryptoKey.kind == "subject").group_by(CryptoKey.status)
            )
        }
        return {
            "root": {
                "provider": self.provider.name,
                "current_version": self.provider.current_version,
                "versions": list(self.provider.versions),
            },
            "tenant": self.tenant,
            "tenant_keys": [
                {
                    "version": row.version,
                    "status": row.status,
                    "wrapped_by": row.wrapped_by,
                    "created_at": row.created_at,
                }
                for row in tenant_rows
            ],
            "subject_keys": counts,
            "cached_keys": len(self.cache),
        }
