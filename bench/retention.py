"""Retention purge throughput: a simple delete rule over a 1,000,000-row external PostgreSQL table.

The service database and the external "CRM" database live in one throwaway PostgreSQL 15 cluster. The table has
1,000,000 order rows of 100,000 customers, every row past the rule's 365-day period. Printed, in one run:

- the chunked purge through the service (``Retention.execute``: keyset pages on the primary key, exclusion checks
  against holds and open DSRs, the chunk journal and the deletion ledger in the service database, then one short
  ``DELETE ... WHERE id IN (...)`` transaction per chunk in the source): rows per second, chunks, and the longest
  chunk transaction (the longest time any row lock is held);
- the baseline: one ``DELETE FROM ... WHERE created_at < cutoff`` over a copy of the same table in one
  transaction (fast, but it holds every row lock for its whole duration and cannot resume);
- the ratio of the two.
Run: ``.venv/bin/python -m bench retention [--rows N] [--chunk N]``.
"""

from __future__ import annotations

import argparse
import json
import os
import tempfile
import time

import psycopg

from govsvc import create_app
from govsvc.bootstrap import seed_all
from govsvc.config import PROJECT_ROOT, Settings
from govsvc.core import migrate
from govsvc.core.db import Database
from govsvc.retention import rules as rule_store
from tests.support.postgres import PostgresCluster

SECRET = "bench-secret-key-0123456789abcdef0123456789"  # noqa: S105 - a throwaway bench database
RULES = """
require_approved_dry_run: false
rules:
  - key: old_orders
    store: source:orders
    categories: ["*"]
    trigger: created_at
    period_days: 365
    action: delete
    exceptions: [legal_hold, open_dsr, open_contract]
"""
TABLE = """CREATE TABLE {name} (id BIGINT PRIMARY KEY, customer_id VARCHAR(32) NOT NULL, email VARCHAR(120),
    amount INTEGER, note VARCHAR(120), created_at TIMESTAMP WITH TIME ZONE NOT NULL)"""
FILL = """INSERT INTO {name} SELECT g, 'C-' || (g % {customers}), 'c' || (g % {customers}) || '@example.com',
    g % 1000, 'order ' || g, now() - interval '400 days' - (g % 1000) * interval '1 minute'
    FROM generate_series(1, {rows}) AS g"""


def _fill(cluster: PostgresCluster, rows: int) -> None:
    customers = max(1, rows // 10)
    with psycopg.connect(host=str(cluster.socket_dir), user="postgres", dbname="crm", autocommit=True) as conn:
        for name in ("orders", "orders_baseline"):
            conn.execute(TABLE.format(name=name))
            conn.execute(FILL.format(name=name, customers=customers, rows=rows))
            conn.execute(f"CREATE INDEX ix_{name}_customer ON {name} (customer_id)")
            conn.execute(f"VACUUM ANALYZE {name}")


def _baseline(cluster: PostgresCluster) -> tuple[int, float]:
    with psycopg.connect(host=str(cluster.socket_dir), user="postgres", dbname="crm") as conn:
        started = time.perf_counter()
        deleted = conn.execute("DELETE FROM orders_baseline WHERE created_at < now() - interval '365 days'").rowcount
        conn.commit()
        return deleted, time.perf_counter() - started


def _count(cluster: PostgresCluster, table: str) -> int:
    with psycopg.connect(host=str(cluster.socket_dir), user="postgres", dbname="crm") as conn:
        row = conn.execute(f"SELECT count(*) FROM {table}").fetchone()
        return int(row[0]) if row else 0


def run(cluster: PostgresCluster, settings: Settings, rows: int) -> None:
    migrate.upgrade(settings.resolved_database_url)
    seed = Database(settings.resolved_database_url)
    seed_all(seed, settings, actor="bench")
    with seed.transaction() as session:
        rule_store.store(session, RULES, actor="bench", comment="bench rule")
    seed.dispose()
    started = time.perf_counter()
    _fill(cluster, rows)
    print(f"filled 2 x {rows:,} rows in {time.perf_counter() - started:.1f} s")
    app = create_app(settings)
    database = app.extensions["govsvc.db"]
    with database.transaction() as session:
        app.extensions["govsvc.sources"].register(
            session,
            {
                "name": "orders",
                "url": cluster.url("crm"),
                "table": "orders",
                "key_column": "id",
                "subject_column": "customer_id",
                "subject_kind": "crm_id",
                "subject_system": "crm",
                "timestamp_column": "created_at",
                "columns": {
                    "customer_id": "user.crm.customer_id",
                    "email": "user.contact.email",
                    "amount": "user.financial",
                    "note": "user.behavior.purchase_history",
                },
            },
            actor="bench",
        )
    retention = app.extensions["govsvc.retention"]

    baseline_rows, baseline_seconds = _baseline(cluster)

    started = time.perf_counter()
    run_ = retention.execute(database, "old_orders", actor="bench")
    chunked_seconds = time.perf_counter() - started
    counts = json.loads(run_.counts)
    assert run_.status == "completed", run_.errors
    assert _count(cluster, "orders") == 0 and counts["rows"] == rows, counts
    again = retention.execute(database, "old_orders", actor="bench")
    chunked_rate = counts["rows"] / chunked_seconds
    baseline_rate = baseline_rows / baseline_seconds
    print(
        f"chunked purge (service)  {counts['rows']:>10,} rows  {chunked_seconds:7.2f} s  {chunked_rate:10,.0f} rows/s  "
        f"{counts['chunks']} chunks of {retention.chunk_size:,}; longest chunk transaction "
        f"{counts['longest_chunk_ms']:.0f} ms; {counts['subjects']:,} tombstones"
    )
    print(
        f"single DELETE (baseline) {baseline_rows:>10,} rows  {baseline_seconds:7.2f} s  "
        f"{baseline_rate:10,.0f} rows/s  "
        f"1 transaction: every row lock held {baseline_seconds * 1000:.0f} ms"
    )
    print(
        f"ratio chunked/baseline: {chunked_rate / baseline_rate:.2f}x throughput; longest lock "
        f"{counts['longest_chunk_ms']:.0f} ms against {baseline_seconds * 1000:.0f} ms; re-run purged "
        f"{json.loads(again.counts)['rows']} rows"
    )
    database.dispose()
    app.extensions["govsvc.sources"].dispose()


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rows", type=int, default=1_000_000)
    parser.add_argument("--chunk", type=int, default=10_000, help="rows per purge transaction")
    args = parser.parse_args(argv)
    print(f"machine: {os.cpu_count()} cores; PostgreSQL 15 (one throwaway cluster: service and source databases)")
    with tempfile.TemporaryDirectory(prefix="govsvc-bench-") as directory:
        cluster = PostgresCluster().start()
        try:
            cluster.admin_execute("CREATE DATABASE bench")
            cluster.admin_execute("CREATE DATABASE crm")
            settings = Settings(
                environment="testing",
                database_url=cluster.url("bench"),
                secret_key=SECRET,
                instance_dir=directory,
                policy_dir=str(PROJECT_ROOT / "policies"),
                log_level="WARNING",
                audit_sequencer="off",
                scheduler="off",
                retention_chunk_size=args.chunk,
            )
            run(cluster, settings, args.rows)
        finally:
            cluster.stop()


if __name__ == "__main__":
    main()
