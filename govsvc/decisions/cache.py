"""What decisions read about subjects, kept in this instance's memory while its coherence lease holds.

A decision needs the subject row, its consent states, and a head of values every decision shares (policy and
taxonomy versions, category holds, key epoch) plus whether the caller's key is unrevoked. On PostgreSQL these
are kept here after the first read and dropped by the invalidations that ``govsvc.core.coherence`` applies, so a
decision on a known subject needs no round trip while every write still reaches every instance before it returns.
Unknown subjects are never cached (a later registration needs no invalidation to be seen).
"""

from __future__ import annotations

import threading
from typing import NamedTuple

from govsvc.core.coherence import Coherence
from govsvc.decisions.lookup import Snapshot, StoredConsent, SubjectView

Key = tuple[str, ...]
# What the cache keeps of a subject: SubjectView's fields but its age (computed per decision), as a plain tuple,
# its consent states as a tuple of (key, state) pairs. A tuple of strings, ints, bytes, datetimes and such tuples
# is untracked by the cyclic garbage collector once a collection has seen it; an object (a SubjectView, a named
# tuple, a list, a dict, and any tuple holding one) stays tracked, and a full collection walks every tracked
# object while it holds the GIL. With 100,000 cached subjects kept as objects, each full collection paused the
# worker for 250-330 ms (70-110 ms with the SubjectViews alone); a decision instead makes its SubjectView from the
# tuple (about 0.4 µs).
Stored = tuple[int, str, tuple[str, ...], bytes | None, bool, bool, tuple[tuple[tuple[str, str], StoredConsent], ...]]


def _stored(view: SubjectView) -> Stored:
    return (
        view.pk,
        view.subject_id,
        view.jurisdictions,
        view.birth_date_enc,
        view.restricted,
        view.legal_hold,
        tuple(view.states.items()),
    )


def _view(stored: Stored) -> SubjectView:
    pk, subject_id, jurisdictions, birth_date_enc, restricted, legal_hold, states = stored
    return SubjectView(pk, subject_id, jurisdictions, birth_date_enc, restricted, legal_hold, dict(states))


class Head(NamedTuple):
    policy_version: int | None
    taxonomy_version: int | None
    held_categories: frozenset[str]
    key_epoch: int


class SubjectCache:
    """Subjects by lookup key, the shared head and the callers' key validity; shared by the app's threads."""

    def __init__(self, coherence: Coherence, *, max_subjects: int = 200_000) -> None:
        self.coherence = coherence
        self.max_subjects = max_subjects
        self._lock = threading.Lock()
        self._entries: dict[Key, Stored] = {}  # each decision that reads one makes its SubjectView of it
        # tuples, not lists: untracked by the cyclic garbage collector (see Stored)
        self._keys_by_pk: dict[int, tuple[Key, ...]] = {}
        self._head: Head | None = None
        self._credentials: dict[str, bool] = {}
        self.hits = 0  # decisions' lookups answered without a round trip (approximate: not locked)
        self.misses = 0
        coherence.subscribe(self._invalidate)

    def __len__(self) -> int:
        return len(self._entries)

    def _invalidate(self, pks: frozenset[int] | None) -> None:
        with self._lock:
            if pks is None:
                self._entries, self._keys_by_pk, self._head, self._credentials = {}, {}, None, {}
                return
            for pk in pks:
                for key in self._keys_by_pk.pop(pk, ()):
                    self._entries.pop(key, None)

    def generation(self) -> int | None:
        """The coherence generation to fill under, or None when the cache may not answer now."""
        generation = self.coherence.generation
        return generation if self.coherence.serving() else None

    def lookup(
        self, keys: list[Key], client_id: str | None
    ) -> tuple[dict[Key, SubjectView], list[Key], Snapshot | None]:
        """The cached subjects, the keys missing, and a whole snapshot when nothing needs reading."""
        entries = self._entries
        found: dict[Key, SubjectView] = {}
        missing: list[Key] = []
        for key in keys:
            stored = entries.get(key)
            if stored is None:
                missing.append(key)
            else:
                found[key] = _view(stored)
        head = self._head
        credential = None if client_id is None else self._credentials.get(client_id)
        if missing or head is None or (client_id is not None and credential is None):
            self.misses += 1
            return found, missing, None
        self.hits += 1
        return found, missing, Snapshot(found, head[0], head[1], credential, head[2], head[3])

    def fill(self, generation: int, snapshot: Snapshot, client_id: str | None) -> None:
        """Keep what ``snapshot`` read, unless an invalidation came since ``generation`` (it may be older)."""
        with self._lock:
            if self.coherence.changed_since(generation) or not self.coherence.serving():
                return
            if len(self._entries) + len(snapshot.subjects) > self.max_subjects:
                self._entries, self._keys_by_pk = {}, {}
            for key, view in snapshot.subjects.items():
                if key not in self._entries:
                    self._entries[key] = _stored(view)
                    self._keys_by_pk[view.pk] = (*self._keys_by_pk.get(view.pk, ()), key)
            self._head = Head(
                snapshot.policy_version, snapshot.taxonomy_version, snapshot.held_categories, snapshot.key_epoch
            )
            if client_id is not None and snapshot.credential_valid is not None:
                self._credentials[client_id] = snapshot.credential_valid
