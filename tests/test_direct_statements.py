"""DirectStatements: one prepared, self-committing statement on libpq connections (PostgreSQL only)."""

from __future__ import annotations

import os
import threading
from collections.abc import Iterator

import psycopg
import pytest

from govsvc.core.direct import DirectStatements
from tests.support.postgres import PostgresCluster

INSERT = b"INSERT INTO direct_items (name) VALUES ($1)"


@pytest.fixture
def cluster_url(request: pytest.FixtureRequest) -> Iterator[str]:
    if "postgresql" not in os.environ.get("GOVSVC_TEST_BACKENDS", "postgresql"):
        pytest.skip("PostgreSQL only, and this run asked for SQLite alone")
    postgres_cluster: PostgresCluster = request.getfixturevalue("postgres_cluster")
    postgres_cluster.admin_execute("DROP DATABASE IF EXISTS direct_test WITH (FORCE)")
    postgres_cluster.admin_execute("CREATE DATABASE direct_test")
    url = postgres_cluster.url("direct_test").replace("+psycopg", "")
    with psycopg.connect(url, autocommit=True) as connection:
        connection.execute("CREATE TABLE direct_items (name text PRIMARY KEY, CHECK (length(name) < 20))")
    yield url
    postgres_cluster.admin_execute("DROP DATABASE IF EXISTS direct_test WITH (FORCE)")


@pytest.fixture
def direct(cluster_url: str) -> Iterator[DirectStatements]:
    statements = DirectStatements(cluster_url)
    yield statements
    statements.close()


def _names(url: str) -> list[str]:
    with psycopg.connect(url) as connection:
        return [row[0] for row in connection.execute("SELECT name FROM direct_items ORDER BY name")]


def test_a_statement_commits_by_itself_and_its_connection_is_reused(direct: DirectStatements, cluster_url: str) -> None:
    direct.execute(b"item", INSERT, [b"first"])
    direct.execute(b"item", INSERT, [b"second"])
    assert _names(cluster_url) == ["first", "second"]  # seen from another connection: committed
    assert direct.idle_connections == 1
    with psycopg.connect(cluster_url) as connection:
        states = connection.execute(
            "SELECT state FROM pg_stat_activity WHERE application_name = 'govsvc-direct'"
        ).fetchall()
    assert states == [("idle",)]  # one backend, in autocommit: not "idle in transaction"


def test_a_statement_error_raises_its_sqlstate_class_and_keeps_the_connection(
    direct: DirectStatements, cluster_url: str
) -> None:
    direct.execute(b"item", INSERT, [b"same"])
    with pytest.raises(psycopg.errors.UniqueViolation, match="duplicate key"):
        direct.execute(b"item", INSERT, [b"same"])
    with pytest.raises(psycopg.errors.CheckViolation):
        direct.execute(b"item", INSERT, [b"x" * 30])
    assert direct.idle_connections == 1  # a statement error leaves the connection sound
    direct.execute(b"item", INSERT, [b"after"])
    assert _names(cluster_url) == ["after", "same"]
    with pytest.raises(psycopg.errors.UndefinedTable):
        direct.execute(b"missing", b"INSERT INTO nowhere VALUES ($1)", [b"x"])


def test_a_lost_connection_is_an_operational_error_and_the_next_call_reconnects(
    direct: DirectStatements, cluster_url: str
) -> None:
    direct.execute(b"item", INSERT, [b"before"])
    with psycopg.connect(cluster_url, autocommit=True) as connection:
        connection.execute(
            "SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE application_name = 'govsvc-direct'"
        )
    with pytest.raises(psycopg.OperationalError):
        direct.execute(b"item", INSERT, [b"lost"])
    assert direct.idle_connections == 0
    direct.execute(b"item", INSERT, [b"again"])  # a new connection, the statement prepared on it again
    assert _names(cluster_url) == ["again", "before"]


def test_an_unreachable_database_is_an_operational_error(tmp_path) -> None:
    direct = DirectStatements(f"postgresql://nobody@/nowhere?host={tmp_path}", connect_timeout=1)
    with pytest.raises(psycopg.OperationalError, match="connection failed"):
        direct.execute(b"item", INSERT, [b"x"])
    assert direct.idle_connections == 0


def test_threads_at_once_each_get_a_connection_and_every_row_is_written(
    direct: DirectStatements, cluster_url: str
) -> None:
    errors: list[BaseException] = []

    def write(thread: int) -> None:
        try:
            for number in range(50):
                direct.execute(b"item", INSERT, [f"t{thread}-{number}".encode()])
        except BaseException as error:  # reported below
            errors.append(error)

    threads = [threading.Thread(target=write, args=(number,)) for number in range(4)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert errors == []
    assert len(_names(cluster_url)) == 200
    assert 1 <= direct.idle_connections <= 4  # no more connections than threads at once
    direct.close()
    assert direct.idle_connections == 0


@pytest.mark.skipif(not hasattr(os, "fork"), reason="needs fork")
def test_a_forked_child_opens_its_own_connection_and_leaves_its_parents_alone(
    direct: DirectStatements, cluster_url: str
) -> None:
    """A gunicorn worker is forked: it must not talk on the socket of a connection its parent opened."""
    with_backend = b"INSERT INTO direct_items (name) SELECT $1 || pg_backend_pid()"
    direct.execute(b"tagged", with_backend, [b"a"])
    child = os.fork()
    if child == 0:  # the child: write through a connection of its own, then exit without any cleanup
        status = 0
        try:
            direct.execute(b"tagged", with_backend, [b"c"])
        except BaseException:
            status = 1
        os._exit(status)
    _, status = os.waitpid(child, 0)
    assert os.waitstatus_to_exitcode(status) == 0
    direct.execute(b"tagged", with_backend, [b"b"])  # the parent's connection still works
    backends = {name[0]: name[1:] for name in _names(cluster_url)}
    assert sorted(backends) == ["a", "b", "c"]
    assert backends["a"] == backends["b"]  # the parent kept its connection
    assert backends["c"] != backends["a"]  # the child was served by a backend of its own
