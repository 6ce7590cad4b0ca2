"""Idempotency-Key on creating POSTs: replays, mismatches, secrets never stored, and concurrent duplicates."""

from __future__ import annotations

import threading
from datetime import timedelta

import pytest
from sqlalchemy import func, select, text, update

from govsvc.auth.models import ApiClient
from govsvc.core.db import utcnow
from govsvc.core.models import IdempotencyRecord
from tests.support.asserts import assert_problem
from tests.support.audit import tamper


@pytest.fixture
def admin(auth_headers) -> dict[str, str]:
    return auth_headers("admin")


def _count_clients(app, name: str) -> int:
    with app.extensions["govsvc.db"].transaction(write=False) as session:
        return session.scalar(select(func.count()).select_from(ApiClient).where(ApiClient.name == name))


def test_a_repeated_key_replays_the_first_response_without_acting_twice(app, client, admin) -> None:
    headers = {**admin, "Idempotency-Key": "create-crm-1"}
    first = client.post("/v1/clients", json={"name": "crm", "role": "app"}, headers=headers)
    second = client.post("/v1/clients", json={"name": "crm", "role": "app"}, headers=headers)
    assert first.status_code == second.status_code == 201
    assert second.headers["Idempotent-Replayed"] == "true"
    assert "Idempotent-Replayed" not in first.headers
    assert second.get_json()["client_id"] == first.get_json()["client_id"]
    assert second.headers["Location"] == first.headers["Location"]
    assert first.get_json()["api_key"] and second.get_json()["api_key"] is None  # the secret is shown once
    assert _count_clients(app, "crm") == 1


def test_the_stored_response_never_holds_the_key(app, client, admin) -> None:
    response = client.post(
        "/v1/clients", json={"name": "crm", "role": "app"}, headers={**admin, "Idempotency-Key": "k"}
    )
    key = response.get_json()["api_key"]
    with app.extensions["govsvc.db"].transaction(write=False) as session:
        stored = " ".join(str(row) for row in session.execute(text("SELECT * FROM idempotency_records")).all())
    assert key not in stored and key.split("_")[-1] not in stored


def test_the_same_key_with_another_body_is_refused(app, client, admin) -> None:
    headers = {**admin, "Idempotency-Key": "reuse"}
    assert client.post("/v1/clients", json={"name": "a", "role": "app"}, headers=headers).status_code == 201
    response = client.post("/v1/clients", json={"name": "b", "role": "app"}, headers=headers)
    assert_problem(response, 422, "idempotency-key-reused")
    assert _count_clients(app, "b") == 0


def test_keys_are_scoped_to_the_principal(app, client, auth_headers) -> None:
    first, second = auth_headers("admin"), auth_headers("admin")
    body = {"name": "shared", "role": "app"}
    a = client.post("/v1/clients", json=body, headers={**first, "Idempotency-Key": "same"})
    b = client.post("/v1/clients", json=body, headers={**second, "Idempotency-Key": "same"})
    assert a.get_json()["client_id"] != b.get_json()["client_id"]
    assert _count_clients(app, "shared") == 2


def test_failed_requests_are_not_stored_so_a_retry_can_succeed(app, client, admin) -> None:
    headers = {**admin, "Idempotency-Key": "retry-me"}
    assert client.post("/v1/clients", json={"name": "x", "role": "nope"}, headers=headers).status_code == 422
    assert client.post("/v1/clients", json={"name": "x", "role": "app"}, headers=headers).status_code == 201
    # a retry after the failure may use another body: the failure was not recorded
    with app.extensions["govsvc.db"].transaction(write=False) as session:
        assert session.scalar(select(func.count()).select_from(IdempotencyRecord)) == 1


@pytest.mark.parametrize("key", ["", "x" * 256, "caf\u00e9"])
def test_malformed_keys_are_400(client, admin, key: str) -> None:
    headers = {**admin, "Idempotency-Key": key}
    response = client.post("/v1/clients", json={"name": "x", "role": "app"}, headers=headers)
    assert_problem(response, 400, "bad-request")


def test_concurrent_requests_with_one_key_create_one_client(app, admin) -> None:
    barrier = threading.Barrier(6)
    results: list[tuple[int, str | None]] = []
    lock = threading.Lock()

    def send() -> None:
        client = app.test_client()
        barrier.wait()
        response = client.post(
            "/v1/clients", json={"name": "racer", "role": "app"}, headers={**admin, "Idempotency-Key": "race-1"}
        )
        body = response.get_json()
        with lock:
            results.append((response.status_code, body.get("client_id")))

    threads = [threading.Thread(target=send) for _ in range(6)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert _count_clients(app, "racer") == 1
    ids = {client_id for status, client_id in results if status == 201}
    assert len(ids) == 1, results
    assert all(status in (201, 409) for status, _ in results), results


def test_responses_past_the_ttl_are_purged_by_the_periodic_job(app, client, admin, database) -> None:
    """The stored responses older than GOVSVC_IDEMPOTENCY_TTL_HOURS are deleted by the idempotency.purge job (a
    key is never replayed after it); younger ones stay and still replay."""
    for key in ("old-1", "old-2", "fresh"):
        response = client.post(
            "/v1/clients", json={"name": key, "role": "app"}, headers={**admin, "Idempotency-Key": key}
        )
        assert response.status_code == 201
    backdated = utcnow() - timedelta(hours=25)
    tamper(
        database.url,
        lambda connection: connection.execute(
            update(IdempotencyRecord)
            .where(IdempotencyRecord.idempotency_key.like("old-%"))
            .values(created_at=backdated)
        ),
    )
    job = app.extensions["govsvc.jobs"].function("idempotency.purge")
    assert job is not None and job() == {"purged": 2}
    assert job() == {"purged": 0}
    with app.extensions["govsvc.db"].transaction(write=False) as session:
        assert session.scalars(select(IdempotencyRecord.idempotency_key)).all() == ["fresh"]
    again = client.post(
        "/v1/clients", json={"name": "fresh", "role": "app"}, headers={**admin, "Idempotency-Key": "fresh"}
    )
    assert again.headers["Idempotent-Replayed"] == "true"
