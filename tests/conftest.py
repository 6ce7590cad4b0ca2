"""Shared fixtures: every database test runs on SQLite and on a real PostgreSQL 15 cluster.

Each test gets its own database, copied from a template that was migrated and seeded once per backend, so tests
commit for real (as the service does) and never see each other's data.

PostgreSQL is required. Without its binaries the run stops with an error, unless a developer sets
``GOVSVC_TEST_BACKENDS=sqlite`` outside CI; in CI (``CI=true``) that opt-out is refused.
"""

from __future__ import annotations

import itertools
import os
import shutil
import sqlite3
import tempfile
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

from govsvc import create_app
from govsvc.auth.service import create_client
from govsvc.bootstrap import seed_all
from govsvc.config import PROJECT_ROOT, Settings
from govsvc.core import migrate
from govsvc.core.db import Database
from govsvc.policy.service import load_policy_file, roles_of
from tests.support.logscan import COLLECTOR
from tests.support.postgres import DEFAULT_BINDIR, PostgresCluster, binaries_available
from tests.support.sources import external_db  # noqa: F401 (a fixture: an external SQL database of the backend)

TEST_ROOT_KEYS = "1:" + "QUFBQUFBQUFBQUFBQUFBQUFBQUFBQUFBQUFBQUFBQUE="  # 32 bytes of "A": tests only
TEST_SECRET_KEY = "test-secret-key-0123456789abcdef0123456789"
TEST_AUDIT_ORIGIN = "govsvc.test/audit"
POLICY_DIR = PROJECT_ROOT / "policies"
KNOWN_ROLES = frozenset(roles_of(load_policy_file(POLICY_DIR)))
_database_numbers = itertools.count(1)


def _requested_backends() -> list[str]:
    requested = os.environ.get("GOVSVC_TEST_BACKENDS", "sqlite,postgresql")
    backends = [name.strip() for name in requested.split(",") if name.strip()]
    if os.environ.get("CI", "").lower() in ("1", "true", "yes") and "postgresql" not in backends:
        raise pytest.UsageError("CI must run the PostgreSQL tests: unset GOVSVC_TEST_BACKENDS")
    return backends


BACKENDS = _requested_backends()


def pytest_configure(config: pytest.Config) -> None:
    if "postgresql" in BACKENDS and not binaries_available():
        raise pytest.UsageError(
            f"PostgreSQL 15 server binaries not found in {DEFAULT_BINDIR}: install postgresql-15 "
            "(make test does), or set GOVSVC_PG_BINDIR. The suite never skips PostgreSQL silently."
        )
    COLLECTOR.attach()
    for secret in (TEST_SECRET_KEY, TEST_ROOT_KEYS.split(":", 1)[1]):
        COLLECTOR.add_secret(secret)


def pytest_sessionfinish(session: pytest.Session, exitstatus: int) -> None:
    """Fail the run if any log line of the suite holds a secret or a personal value the tests used."""
    leaks = COLLECTOR.leaks()
    if leaks:
        reporter = session.config.pluginmanager.get_plugin("terminalreporter")
        message = "secrets or personal values in the logs:\n  " + "\n  ".join(sorted(set(leaks))[:50])
        if reporter is not None:
            reporter.write_line(message, red=True)
        session.exitstatus = pytest.ExitCode.TESTS_FAILED


@pytest.fixture(scope="session")
def postgres_cluster() -> Iterator[PostgresCluster]:
    cluster = PostgresCluster().start()
    yield cluster
    cluster.stop()


def _prepare(url: str) -> None:
    """What `govsvc init` does: migrate, seed the policy and taxonomy, create the audit signing key."""
    migrate.upgrade(url)
    database = Database(url)
    try:
        seed_all(database, make_settings(url, Path(tempfile.gettempdir())), actor="tests")
    finally:
        database.dispose()


@dataclass
class Template:
    backend: str
    url: str
    path: Path | None = None  # SQLite file


@pytest.fixture(scope="session", params=BACKENDS)
def db_template(request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory) -> Template:
    """A migrated, seeded database per backend, copied for each test."""
    if request.param == "sqlite":
        path = tmp_path_factory.mktemp("sqlite-template") / "template.db"
        url = f"sqlite:///{path}"
        _prepare(url)
        with sqlite3.connect(path) as connection:
            connection.execute("PRAGMA wal_checkpoint(TRUNCATE)")
            connection.execute("PRAGMA journal_mode=DELETE")
        return Template("sqlite", url, path)
    cluster: PostgresCluster = request.getfixturevalue("postgres_cluster")
    cluster.admin_execute("CREATE DATABASE govsvc_template")
    url = cluster.url("govsvc_template")
    _prepare(url)
    return Template("postgresql", url)


@dataclass
class TestDatabase:
    backend: str
    url: str


@pytest.fixture
def database(db_template: Template, tmp_path: Path, request: pytest.FixtureRequest) -> Iterator[TestDatabase]:
    """A fresh database for one test, at the newest migration and with the default policy."""
    if db_template.backend == "sqlite":
        assert db_template.path is not None
        path = tmp_path / "govsvc.db"
        shutil.copyfile(db_template.path, path)
        yield TestDatabase("sqlite", f"sqlite:///{path}")
        return
    cluster: PostgresCluster = request.getfixturevalue("postgres_cluster")
    name = f"govsvc_test_{next(_database_numbers)}"
    cluster.admin_execute(f"CREATE DATABASE {name} TEMPLATE govsvc_template")
    yield TestDatabase("postgresql", cluster.url(name))
    cluster.admin_execute(f"DROP DATABASE IF EXISTS {name} WITH (FORCE)")


def make_settings(database_url: str, instance_dir: Path, **overrides: object) -> Settings:
    return Settings(
        environment="testing",
        database_url=database_url,
        secret_key=TEST_SECRET_KEY,
        instance_dir=str(instance_dir),
        policy_dir=str(POLICY_DIR),
        log_level="INFO",
        audit_origin=TEST_AUDIT_ORIGIN,
        audit_sequencer="off",  # tests drive the sequencer (app.extensions["govsvc.sequencer"].drain())
        scheduler="off",  # tests run the periodic jobs themselves
    ).with_overrides(**overrides)


@pytest.fixture
def app_factory(database: TestDatabase, tmp_path: Path) -> Iterator[Callable[..., object]]:
    """Build apps on the test's database (several apps = several instances sharing it)."""
    apps = []

    def build(**overrides: object):
        app = create_app(make_settings(database.url, tmp_path, **overrides))
        apps.append(app)
        return app

    yield build
    for app in apps:
        app.extensions["govsvc.db"].dispose()


@pytest.fixture
def app(app_factory: Callable[..., object]):
    return app_factory()


@pytest.fixture
def client(app):
    return app.test_client()


@pytest.fixture
def issue_key(app) -> Callable[..., str]:
    """Create an API client with a role (committed) and return its bearer key."""

    def issue(role: str = "app", *, name: str | None = None, expires_at=None) -> str:
        with app.extensions["govsvc.db"].transaction() as session:
            issued = create_client(
                session, name=name or f"test-{role}", role=role, known_roles=KNOWN_ROLES, expires_at=expires_at
            )
        COLLECTOR.add_secret(issued.api_key)
        return issued.api_key

    return issue


@pytest.fixture
def auth_headers(issue_key: Callable[..., str]) -> Callable[[str], dict[str, str]]:
    """``auth_headers("admin")`` -> an Authorization header for a new client of that role."""

    def headers(role: str = "app") -> dict[str, str]:
        return {"Authorization": f"Bearer {issue_key(role)}"}

    return headers
