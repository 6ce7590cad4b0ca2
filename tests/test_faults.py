"""Faults: the database stopped and restarted under load, a worker killed mid-request, a read-only database and a
full disk. Requests fail fast with problem documents (never a 500), decisions fail closed, nothing acknowledged is
lost, and the service recovers by itself."""

from __future__ import annotations

import hashlib
import os
import signal
import threading
import time
from collections import Counter
from http.client import HTTPException
from pathlib import Path

import pytest
from sqlalchemy import create_engine, event, select, text

from govsvc.auth.service import create_client
from govsvc.consent.models import ConsentEvent
from govsvc.core.db import Database
from govsvc.subjects.models import Subject
from tests.conftest import KNOWN_ROLES, _prepare
from tests.support.asserts import assert_problem
from tests.support.postgres import PostgresCluster
from tests.support.server import GunicornServer, http, live_env

NOTICE = {"id": "pn", "version": "1", "sha256": hashlib.sha256(b"n").hexdigest(), "language": "zh-CN"}
PURPOSE = "marketing.communications.sms"


@pytest.fixture
def own_cluster() -> PostgresCluster:
    """A PostgreSQL of this test's own, so stopping it disturbs no other test."""
    cluster = PostgresCluster().start()
    yield cluster
    cluster.stop()


def _key(url: str, role: str) -> dict[str, str]:
    database = Database(url)
    try:
        with database.transaction() as session:
            issued = create_client(session, name=f"faults-{role}", role=role, known_roles=KNOWN_ROLES)
    finally:
        database.dispose()
    return {"Authorization": f"Bearer {issued.api_key}"}


def _worker_pids(master: int) -> list[int]:
    children = Path(f"/proc/{master}/task/{master}/children")
    return [int(pid) for pid in children.read_text().split()] if children.exists() else []


class Load:
    """Writers create a subject and give it consent; deciders ask about a subject that never consented."""

    def __init__(self, url: str, app: dict[str, str], undecided_subject: str) -> None:
        self.url, self.app, self.undecided = url, app, undecided_subject
        self.subjects: list[str] = []  # acknowledged (201)
        self.consents: list[str] = []  # acknowledged event ids
        self.statuses: Counter[int] = Counter()
        self.no_answer = 0
        self.unexpected: list[tuple[str, int, bytes]] = []
        self.unavailable_types: Counter[str] = Counter()
        self.decisions: Counter[str] = Counter()  # decision field of every answer, 200 or 5xx
        self.stop = threading.Event()
        self.lock = threading.Lock()
        self.threads = [threading.Thread(target=self._write, args=(n,)) for n in range(3)]
        self.threads += [threading.Thread(target=self._decide) for _ in range(2)]

    def _call(self, method: str, path: str, body: dict):
        try:
            response = http(method, self.url + path, body=body, headers=self.app)
        except (OSError, HTTPException):
            with self.lock:
                self.no_answer += 1
            return None
        with self.lock:
            self.statuses[response.status] += 1
            if response.status not in (200, 201, 503):
                self.unexpected.append((path, response.status, response.body[:300]))
            if response.status >= 500:
                assert response.headers.get("Content-Type") == "application/problem+json"
                self.unavailable_types[response.json()["type"]] += 1
        return response

    def _write(self, number: int) -> None:
        sent = 0
        while not self.stop.is_set():
            sent += 1
            body = {"identifiers": [{"kind": "crm_id", "value": f"F-{number}-{sent}", "system": "crm"}]}
            created = self._call("POST", "/v1/subjects", body | {"jurisdictions": ["pipl"]})
            if created is None or created.status != 201:
                continue
            subject = created.json()["subject_id"]
            with self.lock:
                self.subjects.append(subject)
            act = {
                "subject": {"subject_id": subject},
                "event": "given",
                "channel": "app",
                "actor": "subject",
                "items": [{"purpose": PURPOSE, "scope": ""}],
                "consent_type": "express",
                "notice": NOTICE,
            }
            given = self._call("POST", "/v1/consents", act)
            if given is not None and given.status == 201:
                with self.lock:
                    self.consents.extend(e["event_id"] for e in given.json()["events"])

    def _decide(self) -> None:
        check = {"subject": {"subject_id": self.undecided}, "action": "read", "purpose": PURPOSE, "fields": ["mobile"]}
        while not self.stop.is_set():
            answer = self._call("POST", "/v1/decisions", check)
            if answer is not None and (answer.status == 200 or answer.status >= 500):
                with self.lock:
                    self.decisions[answer.json().get("decision", "none")] += 1

    def __enter__(self) -> Load:
        for thread in self.threads:
            thread.start()
        return self

    def __exit__(self, *_exc: object) -> None:
        self.stop.set()
        for thread in self.threads:
            thread.join()


def test_database_outage_and_a_killed_worker_under_load(own_cluster, tmp_path) -> None:
    own_cluster.admin_execute("CREATE DATABASE govsvc")
    url = own_cluster.url("govsvc")
    _prepare(url)
    app = _key(url, "app")
    env = live_env(url, tmp_path, GOVSVC_AUDIT_SEQUENCER="thread")
    with GunicornServer(env, workers=2, threads=4, log_path=tmp_path / "gunicorn.log") as server:
        body = {"identifiers": [{"kind": "crm_id", "value": "F-undecided", "system": "crm"}], "jurisdictions": ["pipl"]}
        undecided = http("POST", server.url + "/v1/subjects", body=body, headers=app).json()["subject_id"]

        with Load(server.url, app, undecided) as load:
            deadline = time.monotonic() + 30
            while len(load.subjects) < 5:
                assert time.monotonic() < deadline, "the load did not get going"
                time.sleep(0.1)
            own_cluster.pause()  # every connection is cut; new ones are refused
            time.sleep(2.0)
            outage = Counter(load.statuses)
            own_cluster.resume()
            deadline = time.monotonic() + 30
            while http("GET", server.url + "/readyz").status != 200:  # recovers by itself: no restart
                assert time.monotonic() < deadline, "the service did not recover after the database returned"
                time.sleep(0.2)
            after_recovery = len(load.subjects)
            time.sleep(1.5)
            assert len(load.subjects) > after_recovery, "writes did not resume after the database returned"
            no_answer_before_kill = load.no_answer

            victim = _worker_pids(server.process.pid)[0]
            os.kill(victim, signal.SIGKILL)  # a worker dies mid-request; the master starts another
            time.sleep(2.0)
            assert len(load.subjects) > after_recovery

        assert outage[503] > 0, f"the outage was not seen: {outage}"
        assert 500 not in load.statuses, (load.statuses, load.unexpected)
        # Every request is an answer or a 503: a valid key refused 403 around the restart (seen twice in ~10 runs under
        # heavy machine load, before a worker whose first policy load was cut off loaded it at the next request; see
        # test_decisions.py) fails the run. 37 runs under a 3-process CPU hog gave none after that fix.
        assert load.unexpected == [] and set(load.statuses) <= {200, 201, 503}, (load.statuses, load.unexpected)
        assert set(load.unavailable_types) == {"urn:govsvc:problem:service-unavailable"}, load.unavailable_types
        assert no_answer_before_kill == 0, "requests hung or were dropped during the outage instead of failing fast"
        assert load.decisions["allow"] == 0 and load.decisions["deny"] > 0, load.decisions

        engine = create_engine(url)
        try:
            with engine.connect() as connection:
                stored_subjects = set(connection.execute(select(Subject.subject_id)).scalars())
                stored_consents = set(connection.execute(select(ConsentEvent.event_id)).scalars())
        finally:
            engine.dispose()
        assert set(load.subjects) - stored_subjects == set(), "acknowledged subjects lost"
        assert set(load.consents) - stored_consents == set(), "acknowledged consent events lost"
        assert http("GET", server.url + "/readyz").status == 200


def test_a_read_only_or_full_database_is_a_clear_problem(app_factory, database, auth_headers) -> None:
    app_key = auth_headers("app")
    body = {"identifiers": [{"kind": "crm_id", "value": "R-1", "system": "crm"}], "jurisdictions": ["pipl"]}
    if database.backend == "postgresql":
        engine = create_engine(database.url)
        name = engine.url.database
        with engine.connect().execution_options(isolation_level="AUTOCOMMIT") as connection:
            connection.execute(text(f"ALTER DATABASE {name} SET default_transaction_read_only = on"))
        engine.dispose()
        client = app_factory().test_client()
        refused = client.post("/v1/subjects", json=body, headers=app_key)
        assert_problem(refused, 503, "database-read-only")
        assert refused.headers["Retry-After"]
        assert client.get("/v1/taxonomy/purposes", headers=app_key).status_code == 200  # reads still served
        assert client.get("/healthz").status_code == 200
        return
    app = app_factory()

    @event.listens_for(app.extensions["govsvc.db"].engine, "connect")
    def _small_disk(dbapi_connection, _record) -> None:  # SQLite's own limit, as a full disk would be
        pages = dbapi_connection.execute("PRAGMA page_count").fetchone()[0]
        dbapi_connection.execute(f"PRAGMA max_page_count = {pages}")

    app.extensions["govsvc.db"].engine.dispose()
    client = app.test_client()
    big = {**body, "identifiers": [{"kind": "crm_id", "value": f"R-{n}", "system": "crm"} for n in range(50)]}
    statuses = []
    for attempt in range(40):
        response = client.post("/v1/subjects", json=big | {"identifiers": big["identifiers"][:1]}, headers=app_key)
        statuses.append(response.status_code)
        if response.status_code != 201:
            break
        big["identifiers"] = [{**i, "value": f"{i['value']}-{attempt}"} for i in big["identifiers"]]
    assert statuses[-1] == 507, statuses
    assert_problem(response, 507, "insufficient-storage")
    assert 500 not in statuses


def test_postgresql_out_of_disk_space_is_a_507_and_the_write_is_not_half_done(app_factory, database, auth_headers):
    """PostgreSQL's own "disk full" error (SQLSTATE 53100) in the middle of a request's writes: the subject row is
    already inserted when its identifier's INSERT fails. Filling a real disk is not possible in a test, so the
    server raises the error from a trigger, as it would when extending the table's file fails; its message leaves
    out the operating system's "No space left on device", so that the SQLSTATE alone must carry the meaning."""
    if database.backend != "postgresql":
        pytest.skip("SQLite's full database is tested in test_a_read_only_or_full_database_is_a_clear_problem")
    app_key = auth_headers("app")
    engine = create_engine(database.url)
    try:
        with engine.begin() as connection:
            connection.execute(
                text(
                    "CREATE FUNCTION test_disk_full() RETURNS trigger LANGUAGE plpgsql AS $$ BEGIN "
                    "RAISE EXCEPTION 'could not extend file' USING ERRCODE = 'disk_full'; "
                    "END $$"
                )
            )
            connection.execute(
                text(
                    "CREATE TRIGGER test_disk_full BEFORE INSERT ON subject_identifiers "
                    "FOR EACH ROW EXECUTE FUNCTION test_disk_full()"
                )
            )
            subjects_before = connection.execute(text("SELECT count(*) FROM subjects")).scalar_one()
        client = app_factory().test_client()
        body = {"identifiers": [{"kind": "crm_id", "value": "DF-1", "system": "crm"}], "jurisdictions": ["pipl"]}
        refused = client.post("/v1/subjects", json=body, headers=app_key)
        assert_problem(refused, 507, "insufficient-storage")
        with engine.begin() as connection:
            assert connection.execute(text("SELECT count(*) FROM subjects")).scalar_one() == subjects_before
            connection.execute(text("DROP TRIGGER test_disk_full ON subject_identifiers"))
        created = client.post("/v1/subjects", json=body, headers=app_key)  # space again: the same request succeeds
        assert created.status_code == 201, created.get_json()
    finally:
        engine.dispose()
