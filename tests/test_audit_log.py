"""The audit log: append-only storage, sequencing into a Merkle tree, signed checkpoints and proofs."""

from __future__ import annotations

import base64
import threading
from datetime import UTC, datetime, timedelta

import pytest
from sqlalchemy import create_engine, event, func, insert, select, text, update
from sqlalchemy.exc import DatabaseError

from audit import merkle
from audit.note import verify_note
from govsvc.audit.models import APPEND_ONLY_TABLES, AuditCheckpoint, AuditEvent, AuditLeaf
from govsvc.audit.sequencer import FOLLOW_SECONDS, Sequencer, fresh_events, straggler_events
from govsvc.audit.service import AuditContext, AuditPIIError, EventFilter, random_id, record, search, seq_floor
from govsvc.core.db import utcnow
from tests.conftest import TEST_AUDIT_ORIGIN, TEST_SECRET_KEY
from tests.support.asserts import assert_problem
from tests.support.audit import ACTOR, drain, record_events, tamper
from tests.support.plans import StatementCapture, fill, insert_placed_events, only_postgresql, rows_read


def _b64(text_: str) -> bytes:
    return base64.b64decode(text_)


@pytest.fixture
def auditor(auth_headers) -> dict[str, str]:
    return auth_headers("auditor")


def _leaves(app) -> list[bytes]:
    with app.extensions["govsvc.db"].transaction(write=False) as session:
        return [bytes(h) for h in session.scalars(select(AuditLeaf.leaf_hash).order_by(AuditLeaf.seq))]


def test_recorded_events_are_sequenced_and_checkpointed(app, client, auditor) -> None:
    record_events(app, 10)
    drain(app)
    leaves = _leaves(app)
    checkpoint = client.get("/v1/audit/checkpoints/latest", headers=auditor).get_json()
    assert checkpoint["tree_size"] == len(leaves) >= 10
    assert _b64(checkpoint["root_hash"]) == merkle.root_from_leaf_hashes(leaves)
    keys = [key["vkey"] for key in client.get("/v1/audit/keys").get_json()["keys"]]
    verified = verify_note(checkpoint["note"], keys)
    assert verified.origin == TEST_AUDIT_ORIGIN and verified.size == len(leaves)
    events = client.get("/v1/audit/events?action=data.read&limit=100", headers=auditor).get_json()["items"]
    assert [item["event"]["subject_ref"] for item in events] == [f"sub_{i}" for i in range(10)]
    first = events[0]
    assert first["event"]["actor"]["principal"] == "client:cl_test"
    assert set(first["event"]) >= {
        "seq",
        "time",
        "actor",
        "action",
        "subject_ref",
        "object_ref",
        "purpose",
        "data_categories",
        "outcome",
        "reason_code",
        "request_id",
    }
    assert first["event"]["time"].endswith("Z")
    assert _b64(first["leaf_hash"]) == merkle.event_leaf_hash(first["event"])


def test_events_of_a_failed_request_are_rolled_back_with_it(app) -> None:
    database = app.extensions["govsvc.db"]
    with pytest.raises(RuntimeError), database.transaction() as session:
        record(session, "data.read", subject_ref="sub_x", context=ACTOR)
        raise RuntimeError("the change failed")
    with database.transaction(write=False) as session:
        assert session.scalar(select(func.count()).where(AuditEvent.subject_ref == "sub_x")) == 0


@pytest.mark.parametrize("table", APPEND_ONLY_TABLES)
@pytest.mark.parametrize("statement", ["UPDATE {table} SET {column} = {column}", "DELETE FROM {table}"])
def test_database_triggers_make_audit_tables_append_only(app, database, table: str, statement: str) -> None:
    record_events(app, 3)
    drain(app)
    column = {"audit_events": "action", "audit_leaves": "seq", "audit_tree_nodes": "level"}.get(table, "tree_size")
    engine = create_engine(database.url)
    try:
        with pytest.raises(DatabaseError, match="append-only"), engine.begin() as connection:
            connection.execute(text(statement.format(table=table, column=column)))
        if engine.dialect.name == "postgresql":
            with pytest.raises(DatabaseError, match="append-only"), engine.begin() as connection:
                connection.execute(text(f"TRUNCATE {table} CASCADE"))
    finally:
        engine.dispose()


@pytest.mark.parametrize(
    ("fields", "message"),
    [
        ({"subject_ref": "alice@example.com"}, "email"),
        ({"subject_ref": "13812345678"}, "phone"),
        ({"object_ref": "customer +86 138 1234 5678"}, "phone"),
        ({"object_ref": "id 11010519491231002X"}, "identity"),
        ({"details": {"card": "6222 0212 3456 7890 128"}}, "card"),
        ({"details": {"note": ["ok", "bob@example.org"]}}, "email"),
    ],
)
def test_record_refuses_raw_personal_data(app, fields: dict, message: str) -> None:
    with app.extensions["govsvc.db"].transaction() as session, pytest.raises(AuditPIIError, match=message):
        record(session, "data.read", context=ACTOR, **fields)


@pytest.mark.parametrize(
    "kwargs",
    [
        {"action": "Read"},
        {"action": "data"},
        {"action": "data.read", "outcome": "maybe"},
        {"action": "data.read", "purpose": "Marketing Emails"},
        {"action": "data.read", "data_categories": ["Contact Info"]},
        {"action": "data.read", "details": {"ratio": 0.5}},
    ],
)
def test_record_refuses_malformed_events(app, kwargs: dict) -> None:
    with app.extensions["govsvc.db"].transaction() as session, pytest.raises(ValueError):
        record(session, context=ACTOR, **kwargs)


def test_no_raw_personal_data_reaches_an_audit_row(app, client, auth_headers, database) -> None:
    """Drive the API with personal data in every place a caller can put it, then scan the audit tables."""
    email, phone, id_number = "wang.fang@example.cn", "13812345678", "110105194912310021"
    admin = auth_headers("admin")
    client.post(
        "/v1/clients",
        json={"name": f"{email} {phone} {id_number}", "role": "app"},
        headers={**admin, "X-Request-Id": phone, "Idempotency-Key": email},
    )
    client.get("/v1/me", headers={"Authorization": f"Bearer {email}", "X-Request-Id": id_number})
    client.get(f"/v1/clients/{email}", headers=admin)
    client.get(f"/v1/audit/reports/subjects/{id_number}", headers=auth_headers("auditor"))
    client.get("/v1/clients", headers={**auth_headers("app"), "X-Request-Id": email})
    drain(app)
    engine = create_engine(database.url)
    try:
        with engine.connect() as connection:
            dumped = " ".join(
                str(row) for table in APPEND_ONLY_TABLES for row in connection.execute(text(f"SELECT * FROM {table}"))
            )
            actions = set(connection.execute(text("SELECT action FROM audit_events")).scalars())
    finally:
        engine.dispose()
    assert {"credential.created", "auth.failed", "access.denied"} <= actions
    for value in (email, phone, id_number, "wang.fang"):
        assert value not in dumped


def test_refused_requests_are_audited_with_a_hashed_ip(app, client, auth_headers) -> None:
    client.get(
        "/v1/me",
        headers={"Authorization": "Bearer gsk_aaaaaaaa_" + "A" * 43},
        environ_base={"REMOTE_ADDR": "203.0.113.7"},
    )
    client.get("/v1/clients", headers=auth_headers("app"))
    with app.extensions["govsvc.db"].transaction(write=False) as session:
        failed = session.scalar(select(AuditEvent).where(AuditEvent.action == "auth.failed"))
        denied = session.scalar(select(AuditEvent).where(AuditEvent.action == "access.denied"))
    assert failed.outcome == "failure" and failed.reason_code == "invalid_credentials"
    assert failed.actor_ip_hash and "203.0.113.7" not in failed.actor_ip_hash and len(failed.actor_ip_hash) == 32
    assert denied.outcome == "denied" and denied.object_ref == "clients:read" and denied.actor_role == "app"


def test_inclusion_proofs_verify_against_the_signed_root(app, client, auditor) -> None:
    record_events(app, 37)
    drain(app)
    checkpoint = client.get("/v1/audit/checkpoints/latest", headers=auditor).get_json()
    size, root = checkpoint["tree_size"], _b64(checkpoint["root_hash"])
    for seq in (0, 1, 16, size - 2, size - 1):
        proof = client.get(f"/v1/audit/proofs/inclusion?seq={seq}", headers=auditor).get_json()
        assert proof["tree_size"] == size
        merkle.verify_inclusion(_b64(proof["leaf_hash"]), seq, size, [_b64(h) for h in proof["proof"]], root)
    bad = client.get(f"/v1/audit/proofs/inclusion?seq={size}&tree_size={size}", headers=auditor)
    assert bad.status_code in (404, 422)
    assert_problem(client.get("/v1/audit/proofs/inclusion?seq=0&tree_size=99999", headers=auditor), 404, "not-found")
    assert_problem(client.get("/v1/audit/proofs/inclusion?seq=-1", headers=auditor), 422, "validation-error")


def test_consistency_proofs_between_checkpoints(app, client, auditor) -> None:
    record_events(app, 5)
    drain(app)
    first = client.get("/v1/audit/checkpoints/latest", headers=auditor).get_json()
    record_events(app, 11, subject_prefix="later_")
    drain(app)
    second = client.get("/v1/audit/checkpoints/latest", headers=auditor).get_json()
    assert second["tree_size"] > first["tree_size"]
    proof = client.get(f"/v1/audit/proofs/consistency?first={first['tree_size']}", headers=auditor).get_json()
    merkle.verify_consistency(
        first["tree_size"],
        second["tree_size"],
        _b64(first["root_hash"]),
        _b64(second["root_hash"]),
        [_b64(h) for h in proof["proof"]],
    )
    assert_problem(client.get("/v1/audit/proofs/consistency?first=0", headers=auditor), 422, "validation-error")
    assert_problem(client.get("/v1/audit/proofs/consistency?first=3", headers=auditor), 404, "not-found")


def test_two_sequencers_on_one_database_place_each_event_once(app, database) -> None:
    record_events(app, 300)
    others = [
        Sequencer(app.extensions["govsvc.db"], TEST_SECRET_KEY, TEST_AUDIT_ORIGIN, batch_size=40) for _ in range(2)
    ]
    errors: list[BaseException] = []

    def run(sequencer: Sequencer) -> None:
        try:
            for _ in range(20):
                sequencer.run_once(force_checkpoint=True)
        except BaseException as error:
            errors.append(error)

    threads = [threading.Thread(target=run, args=(s,)) for s in others]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    drain(app)
    assert errors == []
    with app.extensions["govsvc.db"].transaction(write=False) as session:
        seqs = list(session.scalars(select(AuditLeaf.seq).order_by(AuditLeaf.seq)))
        events = session.scalar(select(func.count()).select_from(AuditEvent))
        checkpoints = list(session.scalars(select(AuditCheckpoint)))
    assert seqs == list(range(events))
    leaves = _leaves(app)
    for checkpoint in checkpoints:
        assert bytes(checkpoint.root_hash) == merkle.root_from_leaf_hashes(leaves[: checkpoint.tree_size])


def test_a_sequencer_stands_by_while_another_places_events_and_takes_over_when_it_stops(app) -> None:
    """Each process runs a sequencer. Once one places events, another that looks finds them placed since its last
    look: it runs no batch (whose fixed cost each would otherwise pay in turn) and looks again later. When the tree
    has not grown since its last look while events wait (the other stopped), it places them."""
    db = app.extensions["govsvc.db"]
    leader, standby = (Sequencer(db, TEST_SECRET_KEY, TEST_AUDIT_ORIGIN) for _ in range(2))
    record_events(app, 2)
    leader.drain()
    assert standby.run_once() == 0  # its first look: nothing pending
    record_events(app, 3, subject_prefix="a_")
    assert leader.run_once() == 3
    record_events(app, 4, subject_prefix="b_")
    assert standby.run_once() == 0 and standby.following  # the leader placed events since its last look
    assert standby._delay(0) >= 0.75 * FOLLOW_SECONDS > leader._delay(0)
    assert leader.run_once() == 4
    record_events(app, 5, subject_prefix="c_")  # the leader has stopped
    assert standby.run_once() == 0 and standby.following  # it had not seen the leader's last batch yet
    assert standby.run_once() == 5 and not standby.following  # no growth since: it takes over
    with db.transaction(write=False) as session:
        events = session.scalar(select(func.count()).select_from(AuditEvent))
        assert session.scalar(select(func.count()).select_from(AuditLeaf)) == events


def test_a_restarted_sequencer_continues_the_same_tree(app) -> None:
    record_events(app, 13)
    drain(app)
    restarted = Sequencer(app.extensions["govsvc.db"], TEST_SECRET_KEY, TEST_AUDIT_ORIGIN)
    record_events(app, 6, subject_prefix="after_")
    restarted.drain()
    leaves = _leaves(app)
    with app.extensions["govsvc.db"].transaction(write=False) as session:
        latest = session.scalar(select(AuditCheckpoint).order_by(AuditCheckpoint.tree_size.desc()))
    assert latest.tree_size == len(leaves)
    assert bytes(latest.root_hash) == merkle.root_from_leaf_hashes(leaves)


def _insert_event(app, event_pk: int, subject_ref: str) -> None:
    """An event with a chosen id, as a request's INSERT would leave it (committed, not yet placed)."""
    row = {"id": event_pk, "event_id": random_id(), "time": utcnow(), "action": "data.read", "outcome": "success"}
    with app.extensions["govsvc.db"].transaction() as session:
        session.execute(insert(AuditEvent.__table__).values(**row, subject_ref=subject_ref))


def test_a_restarted_sequencer_reads_the_whole_log_once_then_sweeps_from_a_floor(app, database) -> None:
    """A new sequencer's first sweep reads every id, and places an event committed below the highest placed id
    but never placed (its sequencer died); its later sweeps start from a floor taken from the log (the last id
    placed by a checkpoint old enough that no transaction can still hold a lower id), not from id 0 again."""
    db = app.extensions["govsvc.db"]
    record_events(app, 5)
    _insert_event(app, 100, "sub_hundred")
    _insert_event(app, 200, "sub_two_hundred")
    drain(app)
    fresh = Sequencer(db, TEST_SECRET_KEY, TEST_AUDIT_ORIGIN)
    fresh.drain()
    assert fresh._floor == 0  # every checkpoint is recent: an id below any of them may still be in flight

    backdated = utcnow() - timedelta(minutes=10)
    tamper(database.url, lambda connection: connection.execute(update(AuditCheckpoint).values(created_at=backdated)))
    _insert_event(app, 150, "sub_orphan")  # committed below the highest placed id, and never placed
    restarted = Sequencer(db, TEST_SECRET_KEY, TEST_AUDIT_ORIGIN)
    assert restarted.drain() == 1
    assert restarted._floor == 200
    with db.transaction(write=False) as session:
        placed = session.scalar(select(AuditLeaf.seq).where(AuditLeaf.event_pk == 150))
        assert placed is not None
    _insert_event(app, 120, "sub_below_the_floor")
    assert restarted.run_once(sweep=True) == 0  # below the floor: no longer read (no transaction is that old)
    assert Sequencer(db, TEST_SECRET_KEY, TEST_AUDIT_ORIGIN).drain() == 1  # a new one's complete sweep finds it


def test_a_straggler_committed_after_higher_ids_is_still_sequenced(app, database) -> None:
    """On PostgreSQL an event id can become visible after higher ids were sequenced."""
    db = app.extensions["govsvc.db"]
    slow = db.new_session(write=True)
    record(slow, "data.read", subject_ref="sub_straggler", context=ACTOR)
    slow.flush()  # id allocated, not committed
    if database.backend == "postgresql":
        record_events(app, 3, subject_prefix="fast_")
        drain(app)
    slow.commit()
    slow.close()
    drain(app)
    with db.transaction(write=False) as session:
        placed = session.scalar(
            select(func.count())
            .select_from(AuditLeaf)
            .join(AuditEvent, AuditEvent.id == AuditLeaf.event_pk)
            .where(AuditEvent.subject_ref == "sub_straggler")
        )
    assert placed == 1


def test_a_batch_reads_its_id_window_not_the_whole_log(app, database) -> None:
    """The sequencer's reads of pending events touch the ids they cover, whatever the length of the log: with
    30,000 events placed, the fresh read and the straggler sweep of 500 ids each read a few hundred rows of the
    events and the leaves. (Unbounded, the planner read every leaf into a hash, or every event: 20 ms a batch.)"""
    only_postgresql(database)
    placed, backlog = 30_000, 200

    fill(database.url, lambda connection: insert_placed_events(connection, placed + backlog, placed))
    db = app.extensions["govsvc.db"]
    with db.transaction(write=False) as session:
        highest = session.scalar(select(func.max(AuditLeaf.event_pk)))
        for statement, most in (
            (fresh_events(highest, 120), 2 * 120),
            (straggler_events(highest - 500, highest, 5000), 3 * 500),
        ):
            sql = str(statement.compile(session.bind, compile_kwargs={"literal_binds": True}))
            plan = session.execute(text(f"EXPLAIN (ANALYZE, FORMAT JSON) {sql}")).scalar_one()[0]["Plan"]
            read = rows_read(plan, {"audit_events", "audit_leaves"})
            assert read <= most, (read, plan)
        assert len(session.execute(fresh_events(highest, 120)).all()) == 120
        assert session.execute(straggler_events(highest - 500, highest, 5000)).all() == []


def test_a_search_from_a_time_starts_at_a_checkpoint_old_enough(app, client, auditor, database) -> None:
    """Three hours of events, each hour checkpointed: a search from a time starts at the tree size of the newest
    checkpoint signed more than the clock margin before it, and finds exactly the events at or after that time."""
    db = app.extensions["govsvc.db"]
    drain(app)  # the set-up's events
    now = utcnow()
    hours = {}
    for hour in (3, 2, 1):
        record_events(app, 4, subject_prefix=f"h{hour}_")
        drain(app)
        with db.transaction(write=False) as session:
            hours[hour] = session.scalar(select(func.max(AuditCheckpoint.tree_size)))

    def backdate(connection) -> None:
        for hour, size in hours.items():
            at = now - timedelta(hours=hour)
            connection.execute(update(AuditEvent).where(AuditEvent.subject_ref.like(f"h{hour}_%")).values(time=at))
            connection.execute(
                update(AuditCheckpoint)
                .where(AuditCheckpoint.tree_size == size)
                .values(created_at=at + timedelta(seconds=1))
            )
        connection.execute(
            update(AuditEvent).where(~AuditEvent.subject_ref.like("h%")).values(time=now - timedelta(hours=4))
        )
        connection.execute(
            update(AuditCheckpoint)
            .where(AuditCheckpoint.tree_size < hours[3])
            .values(created_at=now - timedelta(hours=4))
        )

    tamper(database.url, backdate)
    time_from = now - timedelta(hours=2, minutes=30)
    with db.transaction(write=False) as session:
        assert seq_floor(session, time_from) == hours[3]  # the 3-hours-ago checkpoint: 2 h 59 min before
        assert seq_floor(session, now - timedelta(hours=2, seconds=30)) == hours[3]  # within the margin of hour 2's
        assert seq_floor(session, now - timedelta(hours=5)) == 0
        assert seq_floor(session, datetime.min.replace(tzinfo=UTC)) == 0  # a minute before it does not exist
        found = search(session, EventFilter(time_from=time_from))
    assert sorted(event.subject_ref for _, event in found) == sorted(f"h{h}_{i}" for h in (2, 1) for i in range(4))
    earliest = client.get("/v1/audit/events", query_string={"time_from": "0001-01-01T00:00:00Z"}, headers=auditor)
    assert earliest.status_code == 200 and len(earliest.get_json()["items"]) > 12
    exported = client.get(
        "/v1/audit/export", query_string={"format": "jsonl", "time_from": "0001-01-01T00:00:00Z"}, headers=auditor
    )
    assert exported.status_code == 200 and len(exported.get_data(as_text=True).splitlines()) > 12
    listed = client.get("/v1/audit/events", query_string={"time_from": time_from.isoformat()}, headers=auditor)
    assert listed.status_code == 200, listed.get_json()
    assert sorted(item["event"]["subject_ref"] for item in listed.get_json()["items"]) == sorted(
        event.subject_ref for _, event in found
    )


def test_a_recent_search_reads_the_recent_leaves_not_the_log(app, database) -> None:
    """With 30,000 events over the last 30,000 seconds, checkpointed every 1,000, a search from 500 seconds ago
    reads about the last checkpoint interval of leaves, not the log from its first leaf."""
    only_postgresql(database)

    fill(
        database.url,
        lambda connection: insert_placed_events(connection, 30_000, 30_000, seconds_apart=1),
        lambda connection: connection.execute(
            text(
                "INSERT INTO audit_checkpoints (tree_size, root_hash, note, key_name, created_at) SELECT l.seq + 1, "
                "l.leaf_hash, 'test', 'test', e.time + interval '1 second' FROM audit_leaves l JOIN audit_events e "
                "ON e.id = l.event_pk WHERE l.seq % 1000 = 999"
            )
        ),
    )
    db = app.extensions["govsvc.db"]
    with StatementCapture(db.engine, "ORDER BY audit_leaves.seq") as captured, db.transaction(write=False) as session:
        found = search(session, EventFilter(time_from=utcnow() - timedelta(seconds=500)), limit=2000)
        assert 495 <= len(found) <= 505
        read = captured.rows_read(session, {"audit_leaves"})
    assert read <= 2500, read


def test_an_idle_sequencer_reads_once_and_still_signs_what_it_placed(app) -> None:
    """With nothing new to place, a batch is one read instead of a write transaction; but a sequencer that placed
    events before a checkpoint was due keeps running full batches until one is signed, and a new event is placed."""
    import time

    db = app.extensions["govsvc.db"]
    sequencer = Sequencer(db, TEST_SECRET_KEY, TEST_AUDIT_ORIGIN, checkpoint_seconds=0.4)
    statements: list[str] = []

    def count(_connection, _cursor, statement, *_args) -> None:
        statements.append(statement)

    def latest_checkpoint() -> int:
        with db.transaction(write=False) as session:
            return session.scalar(select(func.max(AuditCheckpoint.tree_size))) or 0

    drain(app)  # the events of the app's set-up
    before = len(_leaves(app))
    record_events(app, 3)
    assert sequencer.run_once() == 3 and latest_checkpoint() == before + 3  # the first checkpoint is due at once
    record_events(app, 2, subject_prefix="tail_")
    assert sequencer.run_once() == 2 and latest_checkpoint() == before + 3  # the next checkpoint is not due yet
    event.listen(db.engine, "before_cursor_execute", count)
    try:
        assert sequencer.run_once() == 0  # unsigned: a full batch (it reads the tree's size), which signs when due
        assert any("max(audit_leaves.seq)" in statement for statement in statements), statements
        time.sleep(0.5)
        assert sequencer.run_once() == 0 and latest_checkpoint() == before + 5
        statements.clear()
        assert sequencer.run_once() == 0 and sequencer.run_once() == 0
        reads = [statement for statement in statements if statement != "BEGIN"]  # SQLite's explicit BEGIN
        assert len(reads) == 2 and all("max(audit_leaves.seq)" not in read for read in reads), statements
        record_events(app, 1, subject_prefix="new_")
        assert sequencer.run_once() == 1
    finally:
        event.remove(db.engine, "before_cursor_execute", count)
    assert len(_leaves(app)) == before + 6


def test_signing_keys_rotate_and_old_keys_stay_published(app, client, auth_headers, auditor) -> None:
    record_events(app, 3)
    drain(app)
    before = client.get("/v1/audit/checkpoints/latest", headers=auditor).get_json()
    rotated = client.post("/v1/audit/keys:rotate", headers=auth_headers("admin"))
    assert rotated.status_code == 201
    assert_problem(client.post("/v1/audit/keys:rotate", headers=auditor), 403, "forbidden")
    record_events(app, 3, subject_prefix="new_")
    drain(app)
    after = client.get("/v1/audit/checkpoints/latest", headers=auditor).get_json()
    keys = client.get("/v1/audit/keys").get_json()["keys"]
    assert len(keys) == 2 and [key["active"] for key in keys] == [False, True]
    old_key, new_key = keys[0]["vkey"], keys[1]["vkey"]
    assert rotated.get_json()["vkey"] == new_key
    verify_note(before["note"], [old_key])
    verify_note(after["note"], [new_key])
    with pytest.raises(ValueError):
        verify_note(after["note"], [old_key])


def test_audit_routes_are_guarded_by_role(client, auth_headers) -> None:
    assert_problem(client.get("/v1/audit/events"), 401, "unauthenticated")
    assert_problem(client.get("/v1/audit/events", headers=auth_headers("app")), 403, "forbidden")
    assert_problem(client.get("/v1/audit/export", headers=auth_headers("compliance_officer")), 403, "forbidden")
    assert client.get("/v1/audit/events", headers=auth_headers("dpo")).status_code == 200


def test_search_filters_and_pagination(app, client, auditor) -> None:
    record_events(app, 5, subject_prefix="a_", action="data.read")
    record_events(app, 4, subject_prefix="b_", action="data.unmasked", outcome="success", purpose="support")
    with app.extensions["govsvc.db"].transaction() as session:
        record(
            session,
            "policy.deny",
            outcome="deny",
            subject_ref="a_1",
            reason_code="no_consent",
            context=AuditContext(principal_id="client:cl_other", role="app"),
        )
    drain(app)

    def seqs(query: str) -> list[dict]:
        return client.get(f"/v1/audit/events?{query}", headers=auditor).get_json()["items"]

    assert len(seqs("action=data.unmasked")) == 4
    assert len(seqs("action=data.*")) == 9
    assert [i["event"]["action"] for i in seqs("subject=a_1")] == ["data.read", "policy.deny"]
    assert len(seqs("actor=client:cl_other")) == 1
    assert len(seqs("outcome=deny")) == 1
    walked, cursor = [], None
    while True:
        body = client.get(
            "/v1/audit/events?action=data.*&limit=4" + (f"&cursor={cursor}" if cursor else ""), headers=auditor
        ).get_json()
        walked += [item["seq"] for item in body["items"]]
        cursor = body["next_cursor"]
        if not cursor:
            break
    assert len(walked) == len(set(walked)) == 9 and walked == sorted(walked)
    for query in ("action=Bad", "outcome=perhaps", "time_from=yesterday", "seq_from=-1"):
        assert_problem(client.get(f"/v1/audit/events?{query}", headers=auditor), 422, "validation-error")
    assert_problem(client.get("/v1/audit/events/999999", headers=auditor), 404, "not-found")


def test_access_reports_and_anomalies(app, client, auditor) -> None:
    record_events(app, 30, subject_prefix="s_")
    with app.extensions["govsvc.db"].transaction() as session:
        support = AuditContext(principal_id="client:cl_support", role="support_agent")
        record(session, "data.read", subject_ref="s_3", context=support)
        record(session, "data.unmasked", subject_ref="s_3", context=support)
    drain(app)
    subject = client.get("/v1/audit/reports/subjects/s_3", headers=auditor).get_json()
    principals = {(row["principal"], row["action"]) for row in subject["accesses"]}
    assert principals == {
        ("client:cl_test", "data.read"),
        ("client:cl_support", "data.read"),
        ("client:cl_support", "data.unmasked"),
    }
    activity = client.get("/v1/audit/reports/principals/client:cl_test", headers=auditor).get_json()
    assert activity["distinct_subjects"] == 30
    flagged = client.get("/v1/audit/reports/anomalies?threshold=20", headers=auditor).get_json()
    assert [row["principal"] for row in flagged["anomalies"]] == ["client:cl_test"]
    assert flagged["anomalies"][0]["distinct_subjects"] == 30
    assert client.get("/v1/audit/reports/anomalies?threshold=30", headers=auditor).get_json()["anomalies"] == []
    default = client.get("/v1/audit/reports/anomalies", headers=auditor).get_json()
    assert default["threshold"] == app.config["GOVSVC_SETTINGS"].audit_anomaly_subjects_per_hour


def test_cli_sequences_verifies_and_rotates(app, database) -> None:
    record_events(app, 4)
    runner = app.test_cli_runner()
    sequenced = runner.invoke(args=["audit", "sequence"])
    assert sequenced.exit_code == 0 and "sequenced" in sequenced.output
    verified = runner.invoke(args=["audit", "verify"])
    assert verified.exit_code == 0 and verified.output.startswith("OK"), verified.output
    rotated = runner.invoke(args=["audit", "rotate-key"])
    assert rotated.exit_code == 0 and TEST_AUDIT_ORIGIN in rotated.output
    with app.extensions["govsvc.db"].transaction(write=False) as session:
        event = session.scalar(select(AuditEvent).where(AuditEvent.action == "key.rotated"))
    assert event.actor_principal == "cli" and event.object_ref.startswith("audit-signing-key:kid")
    tamper(database.url, "DELETE FROM audit_leaves WHERE seq = 2")
    failed = runner.invoke(args=["audit", "verify"])
    assert failed.exit_code == 1 and "deleted at seq 2" in failed.output


def test_a_failing_sequencer_backs_off_and_does_not_flood_the_log(app, database, caplog) -> None:
    import logging
    import time

    record_events(app, 3)
    tamper(database.url, "DELETE FROM audit_signing_keys")  # checkpoints cannot be signed now
    sequencer = Sequencer(app.extensions["govsvc.db"], TEST_SECRET_KEY, TEST_AUDIT_ORIGIN, checkpoint_seconds=0)
    with caplog.at_level(logging.ERROR, logger="govsvc.audit.sequencer"):
        sequencer.start()
        time.sleep(1.5)
        sequencer.stop()
    failures = [r for r in caplog.records if r.name == "govsvc.audit.sequencer"]
    assert len(failures) == 1, [r.getMessage() for r in failures]
    assert "no audit signing key" in caplog.text


def test_the_postgresql_fast_insert_names_every_column_record_fills(app) -> None:
    from govsvc.audit import service as audit_service

    with app.extensions["govsvc.db"].transaction() as session:
        audit_service.record(session, "test.columns", outcome="success", details={"n": 1})
        rows = session.info[audit_service._PENDING_EVENTS][1]
        assert set(rows[0]) == set(audit_service._ROW_COLUMNS)


@pytest.mark.parametrize("path", ["/v1/audit/events/{}", "/v1/audit/checkpoints/{}"])
def test_a_number_past_64_bits_is_not_found_rather_than_an_error(client, auditor, path: str) -> None:
    response = client.get(path.format(2**64), headers=auditor)  # the database's integers end at 2**63 - 1
    assert response.status_code == 404 and response.mimetype == "application/problem+json"
    assert client.get(path.format(2**63 - 1), headers=auditor).status_code == 404  # in range: looked up, none
