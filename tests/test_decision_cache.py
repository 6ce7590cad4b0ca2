"""Decisions answered from memory on PostgreSQL, kept coherent with every write on every instance.

The cache's promise is read-after-write across instances: once a write has returned, no instance answers from
what it replaced. These tests hold it to that with two apps on one database, and check that a cached decision
makes no round trip at all (else the cache would be for nothing).
"""

from __future__ import annotations

import gc
import threading
import time

import psycopg
import pytest
from sqlalchemy import event, select, text

from govsvc.audit.models import AuditEvent
from govsvc.core import db
from govsvc.core.coherence import parse, writes_watched_table
from govsvc.decisions import lookup
from govsvc.decisions.cache import SubjectCache
from tests.test_decisions import _codes, _consent, _decide, _subject

PURPOSE = "marketing.communications.sms"


@pytest.fixture
def postgres_only(database) -> None:
    if database.backend != "postgresql":
        pytest.skip("SQLite: decisions read the database every time (no notifications to keep a cache coherent)")


def _cache(app) -> SubjectCache:
    cache = app.extensions["govsvc.decisions"].cache
    assert cache is not None
    return cache


def _serving(app) -> SubjectCache:
    """The app's cache once its lease is held (the listener starts with the first decision)."""
    cache = _cache(app)
    deadline = time.monotonic() + 10
    while not cache.coherence.serving():
        assert time.monotonic() < deadline, "the coherence listener never took its lease"
        time.sleep(0.02)
    return cache


def _round_trips(app, monkeypatch) -> list[str]:
    """Every statement the app sends from now on (a list that grows): SQLAlchemy's, and the decision lookup's,
    which runs on the raw DBAPI cursor."""
    statements: list[str] = []
    database = app.extensions["govsvc.db"]
    for engine in (database.engine, database.autocommit_engine):
        event.listen(engine, "before_cursor_execute", lambda *args: statements.append(args[2]))
    read = lookup._read

    def counted(session, subject_ids, identifiers, **options):
        statements.append(f"lookup of {sorted(subject_ids)} {sorted(identifiers)}")
        return read(session, subject_ids, identifiers, **options)

    monkeypatch.setattr(lookup, "_read", counted)
    return statements


def _decide_sms(client, key, subject) -> dict:
    return _decide(client, key, subject, PURPOSE, fields=["mobile"])


def test_sqlite_has_no_decision_cache(app, database) -> None:
    if database.backend != "sqlite":
        pytest.skip("the SQLite case")
    assert app.extensions["govsvc.decisions"].cache is None


@pytest.mark.usefixtures("postgres_only")
def test_a_cached_decision_makes_no_round_trip_and_a_withdrawal_elsewhere_applies_to_the_next(
    app_factory, auth_headers, monkeypatch
) -> None:
    first, second = app_factory(), app_factory()
    key = auth_headers("app")
    writer, reader = first.test_client(), second.test_client()
    subject = _subject(writer, key)
    _consent(writer, key, subject, "given", PURPOSE)
    _decide_sms(reader, key, subject)  # starts B's listener
    cache = _serving(second)
    _serving(first)
    assert _decide_sms(reader, key, subject)["decision"] == "allow"  # read, and kept
    statements = _round_trips(second, monkeypatch)
    hits = cache.hits
    assert _decide_sms(reader, key, subject)["decision"] == "allow"
    assert cache.hits == hits + 1
    assert statements == [], "a decision on a cached subject must not touch the database"

    _consent(writer, key, subject, "withdrawn", PURPOSE)  # through A: returns once B has dropped the subject
    assert _codes(_decide_sms(reader, key, subject)) == {"consent_withdrawn"}
    assert any(subject in statement for statement in statements)  # B read it again
    _consent(writer, key, subject, "given", PURPOSE)
    assert _decide_sms(reader, key, subject)["decision"] == "allow"


@pytest.mark.usefixtures("postgres_only")
def test_what_the_cache_keeps_of_a_subject_is_invisible_to_the_garbage_collector(app, auth_headers) -> None:
    """A full collection walks every object the cyclic garbage collector tracks, holding the GIL: with 100,000
    cached subjects kept as objects (a SubjectView, its consent states as named tuples), that was a 250-330 ms pause
    of the worker. Once the collector has seen them, nothing the cache keeps of a subject is tracked: its entry,
    its consent states and the cache's keys of it are plain tuples."""
    key = auth_headers("app")
    client = app.test_client()
    subject = _subject(client, key)
    _consent(client, key, subject, "given", PURPOSE)
    _consent(client, key, subject, "given", "marketing.communications.email")
    _decide_sms(client, key, subject)
    cache = _serving(app)
    assert _decide_sms(client, key, subject)["decision"] == "allow"  # read, and kept
    assert len(cache) == 1
    for _ in range(4):  # a collection untracks a tuple when what it holds was untracked already: inner ones first
        gc.collect()
    (stored,) = cache._entries.values()
    states = stored[-1]
    assert len(states) == 2
    assert not gc.is_tracked(stored)  # nor, then, anything it holds
    assert not any(gc.is_tracked(keys) for keys in cache._keys_by_pk.values())
    assert not any(gc.is_tracked(cache_key) for cache_key in cache._entries)
    hits = cache.hits
    assert _decide_sms(client, key, subject)["decision"] == "allow"  # answered from them
    assert cache.hits == hits + 1
    _consent(client, key, subject, "withdrawn", PURPOSE)
    assert _codes(_decide_sms(client, key, subject)) == {"consent_withdrawn"}


@pytest.mark.usefixtures("postgres_only")
def test_a_cached_deny_opens_no_session_and_its_event_is_committed_before_the_answer(
    app, auth_headers, monkeypatch
) -> None:
    """A refusal answered from memory writes its audit event itself, in one self-committing INSERT on a direct
    connection (``Database.direct``): no ORM session is opened, and the event is readable from another connection
    once the answer is back. A batch's refusals go in the same way, one event each."""
    key = auth_headers("app")
    client = app.test_client()
    subject = _subject(client, key)
    _decide_sms(client, key, subject)  # no consent: a deny, and the subject is read
    cache = _serving(app)
    _decide_sms(client, key, subject)  # kept, now that the lease is held
    opened: list[str] = []
    open_session = db.get_session
    monkeypatch.setattr(db, "get_session", lambda: opened.append("session") or open_session())
    statements = _round_trips(app, monkeypatch)
    hits = cache.hits
    denied = _decide_sms(client, key, subject)
    checks = [
        {"subject": {"subject_id": subject}, "action": "read", "purpose": purpose, "fields": [field]}
        for purpose, field in (
            ("marketing.communications.email", "email"),
            (PURPOSE, "mobile"),
            ("essential.service", "email"),
        )
    ]
    batch = client.post("/v1/decisions:batch", json={"checks": checks}, headers=key)
    assert batch.status_code == 200, batch.get_json()
    outcomes = [item["decision"] for item in batch.get_json()["results"]]
    assert [outcome["decision"] for outcome in outcomes] == ["deny", "deny", "allow"]
    assert denied["decision"] == "deny" and cache.hits == hits + 2  # one lookup per call
    assert opened == [] and statements == [], "a cached decision opens no session, even to record a refusal"

    database = app.extensions["govsvc.db"]
    wanted = [denied["decision_id"], outcomes[0]["decision_id"], outcomes[1]["decision_id"]]
    with database.transaction(write=False) as session:  # another connection: the events are committed
        events = session.scalars(select(AuditEvent).where(AuditEvent.event_id.in_(wanted))).all()
    assert sorted(event.event_id for event in events) == sorted(wanted)
    assert {(event.action, event.reason_code, event.subject_ref) for event in events} == {
        ("policy.deny", "no_consent", subject)
    }


@pytest.mark.usefixtures("postgres_only")
def test_a_refusal_whose_event_cannot_be_written_is_a_503_and_the_next_is_on_record(
    app, auth_headers, database, caplog
) -> None:
    """The connection a cached deny writes its event on was cut (a database restart, say): that decision is not
    given (503, retry: a refusal is never answered unaudited), the connection is closed rather than used again or
    reset (no traceback from the pool), and the next refusal is written on a new one."""
    key = auth_headers("app")
    client = app.test_client()
    subject = _subject(client, key)
    _decide_sms(client, key, subject)
    _serving(app)
    _decide_sms(client, key, subject)  # fills the cache (its event written on the session's connection)
    _decide_sms(client, key, subject)  # answered from the cache: its event written on a direct connection
    direct = app.extensions["govsvc.db"].direct
    assert direct.idle_connections == 1
    with psycopg.connect(database.url.replace("+psycopg", ""), autocommit=True) as connection:
        # every connection of this database but the cache's listener and lease (which would empty the cache)
        connection.execute(
            "SELECT pg_terminate_backend(pid) FROM pg_stat_activity "
            "WHERE datname = current_database() AND pid <> pg_backend_pid() "
            "AND NOT (query LIKE 'LISTEN%%' OR query LIKE '%%cache_leases%%')"
        )
    body = {"subject": {"subject_id": subject}, "action": "read", "purpose": PURPOSE, "fields": ["mobile"]}
    lost = client.post("/v1/decisions", json=body, headers=key)
    assert lost.status_code == 503 and lost.mimetype == "application/problem+json", lost.get_json()
    assert lost.get_json()["type"].endswith(":service-unavailable")
    assert direct.idle_connections == 0  # the lost connection was closed, not kept
    denied = _decide_sms(client, key, subject)
    assert _codes(denied) == {"no_consent"}
    with psycopg.connect(database.url.replace("+psycopg", "")) as connection:
        written = connection.execute(
            "SELECT reason_code FROM audit_events WHERE event_id = %s", [denied["decision_id"]]
        )
        assert written.fetchall() == [("no_consent",)]
    assert direct.idle_connections == 1
    assert not [r for r in caplog.records if r.name.startswith("sqlalchemy.pool") and r.levelno >= 40]


@pytest.mark.usefixtures("postgres_only")
def test_policy_and_key_changes_elsewhere_empty_the_cache(app_factory, auth_headers, issue_key) -> None:
    first, second = app_factory(), app_factory()
    admin = auth_headers("admin")
    key = {"Authorization": f"Bearer {issue_key('app')}"}
    writer, reader = first.test_client(), second.test_client()
    subject = _subject(writer, key)
    _consent(writer, key, subject, "given", PURPOSE)
    _decide_sms(reader, key, subject)
    cache = _serving(second)
    _decide_sms(reader, key, subject)
    assert len(cache) >= 1
    clients = writer.get("/v1/clients", headers=admin).get_json()["items"]
    client_id = next(item["client_id"] for item in clients if item["role"] == "app")
    assert writer.post(f"/v1/clients/{client_id}:revoke", headers=admin).status_code == 200
    assert len(cache) == 0  # an api_clients change says "*": the key's validity was cached
    response = reader.post(
        "/v1/decisions", json={"subject": {"subject_id": subject}, "action": "read", "purpose": PURPOSE}, headers=key
    )
    assert response.status_code == 401


@pytest.mark.usefixtures("postgres_only")
def test_a_write_made_outside_the_service_reaches_the_cache_through_the_triggers(app, auth_headers, database) -> None:
    """An operator's SQL does not wait for a barrier, but its notification still drops the cached subject."""
    key = auth_headers("app")
    client = app.test_client()
    subject = _subject(client, key)
    _consent(client, key, subject, "given", PURPOSE)
    _decide_sms(client, key, subject)
    cache = _serving(app)
    assert _decide_sms(client, key, subject)["decision"] == "allow"
    with psycopg.connect(database.url.replace("+psycopg", ""), autocommit=True) as connection:
        connection.execute("UPDATE subjects SET restricted = true WHERE subject_id = %s", [subject])
    deadline = time.monotonic() + 5
    while any(stored[1] == subject for stored in list(cache._entries.values())):  # (pk, subject_id, ...)
        assert time.monotonic() < deadline, "the trigger's notification never dropped the subject"
        time.sleep(0.01)
    assert "restricted" in _codes(_decide_sms(client, key, subject))


@pytest.mark.usefixtures("postgres_only")
def test_an_instance_that_loses_its_listener_stops_answering_from_memory(app_factory, auth_headers, database) -> None:
    first, second = app_factory(), app_factory()
    key = auth_headers("app")
    writer, reader = first.test_client(), second.test_client()
    subject = _subject(writer, key)
    _consent(writer, key, subject, "given", PURPOSE)
    _decide_sms(reader, key, subject)
    cache = _serving(second)
    _decide_sms(reader, key, subject)
    with psycopg.connect(database.url.replace("+psycopg", ""), autocommit=True) as connection:
        # B's listener and lease connections (LISTEN shows as its last statement) are cut
        connection.execute(
            "SELECT pg_terminate_backend(pid) FROM pg_stat_activity "
            "WHERE datname = current_database() AND pid <> pg_backend_pid() "
            "AND (query LIKE 'LISTEN%%' OR query LIKE '%%cache_leases%%')"
        )
    deadline = time.monotonic() + 5
    while cache.coherence.serving() and len(cache):  # the lost connection empties the cache at once
        assert time.monotonic() < deadline
        time.sleep(0.01)
    _consent(writer, key, subject, "withdrawn", PURPOSE)
    assert _codes(_decide_sms(reader, key, subject)) == {"consent_withdrawn"}
    _serving(second)  # the listener comes back with a new lease
    _consent(writer, key, subject, "given", PURPOSE)
    assert _decide_sms(reader, key, subject)["decision"] == "allow"


@pytest.mark.usefixtures("postgres_only")
def test_a_writer_waits_for_every_unexpired_lease_and_no_longer(app) -> None:
    database = app.extensions["govsvc.db"]
    assert database.coherence is not None
    with database.autocommit_engine.connect() as connection:  # an instance that took a lease and then hung
        connection.execute(
            text(
                "INSERT INTO cache_leases (instance_id, expires_at, acked_seq) "
                "VALUES ('hung', now() + interval '1.5 seconds', 0)"
            )
        )
    started = time.monotonic()
    with database.transaction() as session:
        session.execute(text("UPDATE policy_state SET version = version WHERE id = 1"))
    waited = time.monotonic() - started
    assert waited >= 1.0, f"the write returned after {waited:.2f} s while a lease was unexpired"
    started = time.monotonic()
    with database.transaction() as session:  # the hung lease has expired: nobody to wait for
        session.execute(text("UPDATE policy_state SET version = version WHERE id = 1"))
    assert time.monotonic() - started < 1.0
    with database.transaction() as session:  # a write to no watched table sends no barrier at all
        session.execute(text("UPDATE job_leases SET runs = runs WHERE 1 = 0"))


@pytest.mark.usefixtures("postgres_only")
def test_a_fill_read_before_an_invalidation_is_refused(app, auth_headers) -> None:
    """A decision that read a subject just before a write must not put the old state in the cache afterwards."""
    key = auth_headers("app")
    client = app.test_client()
    subject = _subject(client, key)
    _consent(client, key, subject, "given", PURPOSE)
    _decide_sms(client, key, subject)
    cache = _serving(app)
    cache._invalidate(None)
    generation = cache.generation()
    assert generation is not None
    engine = app.extensions["govsvc.decisions"]
    database = app.extensions["govsvc.db"]
    with database.transaction() as session:
        old = lookup.load(session, [subject], [], client_id=None)  # read, not cached yet
    _consent(client, key, subject, "withdrawn", PURPOSE)  # the invalidation moves the generation
    cache.fill(generation, old, None)
    assert len(cache) == 0
    assert engine.cache is cache
    assert _codes(_decide_sms(client, key, subject)) == {"consent_withdrawn"}


@pytest.mark.usefixtures("postgres_only")
def test_a_bulk_change_empties_the_cache_and_concurrent_writes_lose_nothing(app_factory, auth_headers) -> None:
    first, second = app_factory(), app_factory()
    key = auth_headers("app")
    writer, reader = first.test_client(), second.test_client()
    subjects = [_subject(writer, key, email=f"s{number}@example.cn") for number in range(4)]
    for subject in subjects:
        _consent(writer, key, subject, "given", PURPOSE)
        _decide_sms(reader, key, subject)
    cache = _serving(second)
    for subject in subjects:
        _decide_sms(reader, key, subject)
    errors: list[BaseException] = []

    def withdraw(subject: str) -> None:
        try:
            client = first.test_client()
            _consent(client, key, subject, "withdrawn", PURPOSE)
            assert _codes(_decide_sms(second.test_client(), key, subject)) == {"consent_withdrawn"}
        except BaseException as error:  # reported below
            errors.append(error)

    threads = [threading.Thread(target=withdraw, args=(subject,)) for subject in subjects]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert errors == []
    database = first.extensions["govsvc.db"]
    for subject in subjects:
        _consent(writer, key, subject, "given", PURPOSE)
        _decide_sms(reader, key, subject)
    assert len(cache) >= len(subjects)
    with database.transaction() as session:  # more subjects than one notification names: "*"
        session.execute(text("UPDATE subjects SET updated_at = updated_at WHERE pk IN (SELECT pk FROM subjects)"))
        session.execute(
            text(
                "INSERT INTO subjects (subject_id, jurisdictions, restricted, legal_hold, created_at, "
                "updated_at) SELECT 'sub_bulk' || g, '[\"pipl\"]', false, false, now(), now() "
                "FROM generate_series(1, 500) g"
            )
        )
    assert len(cache) == 0


def test_notifications_and_statements_are_read_as_meant() -> None:
    assert parse("b42") == ("barrier", None, 42)
    assert parse("s1,2,30") == ("subjects", frozenset({1, 2, 30}), 0)
    assert parse("*") == ("all", None, 0)
    assert parse("s1,x") == ("all", None, 0)  # anything unreadable empties everything
    assert writes_watched_table("UPDATE consent_state SET status=%(status)s WHERE pk = %(pk)s")
    assert writes_watched_table('INSERT INTO "subjects" (subject_id) VALUES (%s)')
    assert writes_watched_table("delete from subject_identifiers where pk = 1")
    assert not writes_watched_table("INSERT INTO audit_events (event_id) VALUES (%s)")
    assert not writes_watched_table("SELECT * FROM consent_state")
