"""An acknowledged audit event is never lost: SIGKILL the server during a write load, restart, check everything."""

from __future__ import annotations

import json
import threading
import time
from http.client import HTTPException

from sqlalchemy import create_engine, func, select

from govsvc.audit.models import AuditEvent, AuditLeaf
from tests.conftest import TEST_AUDIT_ORIGIN, TEST_ROOT_KEYS, TEST_SECRET_KEY
from tests.support.server import GunicornServer, http


def test_sigkill_during_writes_loses_no_acknowledged_event(database, issue_key, tmp_path) -> None:
    env = {
        "GOVSVC_ENV": "production",
        "GOVSVC_SECRET_KEY": TEST_SECRET_KEY,
        "GOVSVC_ROOT_KEYS": TEST_ROOT_KEYS,
        "GOVSVC_DATABASE_URL": database.url,
        "GOVSVC_INSTANCE_DIR": str(tmp_path),
        "GOVSVC_AUDIT_ORIGIN": TEST_AUDIT_ORIGIN,
        "GOVSVC_AUDIT_SEQUENCER": "thread",
        "GOVSVC_AUDIT_CHECKPOINT_SECONDS": "1",
        "GOVSVC_LOG_LEVEL": "WARNING",
    }
    admin = {"Authorization": f"Bearer {issue_key('admin')}"}
    auditor = {"Authorization": f"Bearer {issue_key('auditor')}"}
    acknowledged: list[str] = []
    lock = threading.Lock()
    stop = threading.Event()
    log = tmp_path / "gunicorn.log"

    server = GunicornServer(env, log_path=log).__enter__()

    def writer(number: int) -> None:
        sent = 0
        while not stop.is_set():
            sent += 1
            try:
                response = http(
                    "POST", server.url + "/v1/clients", body={"name": f"w{number}-{sent}", "role": "app"}, headers=admin
                )
            except (OSError, HTTPException):
                continue  # the server is gone, or died mid-response: not acknowledged
            if response.status == 201:
                with lock:
                    acknowledged.append(response.json()["client_id"])

    writers = [threading.Thread(target=writer, args=(n,)) for n in range(4)]
    for thread in writers:
        thread.start()
    deadline = time.monotonic() + 60  # a fixed warm-up is too short on a loaded machine: wait for the load itself
    while len(acknowledged) <= 20 and time.monotonic() < deadline:
        time.sleep(0.1)
    server.kill()  # mid-load: requests are in flight
    stop.set()
    for thread in writers:
        thread.join()
    assert len(acknowledged) > 20, "the load did not get going"

    with GunicornServer(env, log_path=log) as restarted:
        assert http("GET", restarted.url + "/readyz").status == 200
        engine = create_engine(database.url)
        try:
            deadline = time.monotonic() + 30
            while True:  # the restarted service sequences what was recorded before the crash, by itself
                with engine.connect() as connection:
                    events = connection.execute(select(func.count()).select_from(AuditEvent)).scalar()
                checkpoint = http("GET", restarted.url + "/v1/audit/checkpoints/latest", headers=auditor)
                if checkpoint.status == 200 and checkpoint.json()["tree_size"] == events:
                    break
                assert time.monotonic() < deadline, "the restarted sequencer did not catch up"
                time.sleep(0.3)
            with engine.connect() as connection:
                sequenced = {
                    json.loads(row)["object_ref"]
                    for row in connection.execute(select(AuditLeaf.event_json)).scalars()
                    if '"credential.created"' in row
                }
        finally:
            engine.dispose()
        missing = [client_id for client_id in acknowledged if f"client:{client_id}" not in sequenced]
        assert missing == [], f"{len(missing)} acknowledged events lost"
        report = http("GET", restarted.url + "/v1/audit/verify", headers=auditor).json()
        assert report["ok"] is True, report
        assert report["event_count"] == events
