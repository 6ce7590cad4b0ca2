"""Data-subject requests at volume: an access request and an erasure for one subject with 10,000 records.

The records are spread over every connector the service has: the profile vault (20 fields and 2,000 sealed
rectification-history values), the consent ledger (1,500 events), the audit log (1,000 events about the subject),
one app behind a webhook connector (1,480 records in pages of 500, served by a local HTTP server) and, since
phase 2 (issue 8), two external SQL sources registered through ``govsvc/sources`` (2,000 order rows and 2,000
ticket rows of the subject among 20,000 rows of other customers, in a separate database of the same server).

Prints, in one run on PostgreSQL: the wall time of the access request's fulfilment (collect every record, stream
the ZIP of JSON and CSV, encrypt it into the database) against a baseline that only reads the same records the
same way (no bundle), the ratio; the download of the bundle; the erasure's fulfilment; and the peak Python heap
(tracemalloc) of each, to show memory stays bounded.
Run: ``.venv/bin/python -m bench.dsr [--records N] [--sqlite]``.
"""

from __future__ import annotations

import argparse
import json
import os
import tempfile
import threading
import time
import tracemalloc
import uuid
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

from sqlalchemy import create_engine, insert, text

from govsvc import create_app
from govsvc.audit.models import AuditEvent
from govsvc.bootstrap import seed_all
from govsvc.config import PROJECT_ROOT, Settings
from govsvc.consent.models import ConsentEvent
from govsvc.core import migrate
from govsvc.core.db import Database, utcnow
from govsvc.dsr import export
from govsvc.dsr.api import register_webhook
from govsvc.dsr.service import Intake
from govsvc.subjects.service import IdentifierInput, create_subject
from govsvc.vault.models import VaultFieldHistory
from tests.support.postgres import PostgresCluster

SECRET = "bench-secret-key-0123456789abcdef0123456789"  # noqa: S105 - a throwaway bench database
PROFILE = {
    "customer_id": "C-000123",
    "name": "张伟",
    "nickname": "伟哥",
    "email": "zhang.wei@example.cn",
    "mobile": "+8613812345678",
    "landline": "+861062345678",
    "address": "北京市海淀区中关村大街1号",
    "wechat_id": "wxid_zhangwei88",
    "birth_date": "1985-03-07",
    "gender": "男",
    "id_number": "11010519491231002X",
    "passport_number": "E12345678",
    "purchase_history": "2026-10: 3 orders",
    "preferences": "短信优先",
    "city": "北京",
    "gps_location": "39.9834,116.3162",
    "health_notes": "青霉素过敏",
    "postal_code": "100080",
    "loyalty_tier": "gold",
    "bank_card": "6222021234567890128",
}
PAGE = 500


def _app_server(records: int) -> ThreadingHTTPServer:
    """An app holding ``records`` order lines of the subject, served in pages of ``PAGE``."""

    class Handler(BaseHTTPRequestHandler):
        def do_POST(self) -> None:
            body = json.loads(self.rfile.read(int(self.headers["Content-Length"])))
            if body["operation"] == "collect":
                start = int(body.get("cursor") or 0)
                items = [
                    {
                        "record_type": "order",
                        "record_id": f"o{n}",
                        "category": "user.behavior.purchase_history",
                        "provenance": "observed",
                        "fields": {"sku": f"SKU-{n:06d}", "item": "乌龙茶 250g", "amount": n % 97},
                    }
                    for n in range(start, min(start + PAGE, records))
                ]
                reply = {"records": items, "next_cursor": str(start + PAGE) if start + PAGE < records else None}
            else:
                reply = {"status": "done", "counts": {"rows": records}}
            data = json.dumps(reply).encode()
            self.send_response(200)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(data)))
            self.end_headers()
            self.wfile.write(data)

        def log_message(self, *args: Any) -> None:
            pass

    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    return server


def _populate(app: Any, counts: dict[str, int], url: str) -> str:
    database: Database = app.extensions["govsvc.db"]
    keys = app.extensions["govsvc.keys"]
    with database.transaction() as session:
        subject = create_subject(
            session,
            app.extensions["govsvc.field_keys"],
            identifiers=[
                IdentifierInput("crm_id", "C-000123", "crm"),
                IdentifierInput("email", "zhang.wei@example.cn"),
            ],
            jurisdictions=["gdpr", "ccpa"],
            known_jurisdictions=["pipl", "gdpr", "ccpa"],
        )
        app.extensions["govsvc.vault"].write(
            session, app.extensions["govsvc.taxonomy"].current(session), subject, PROFILE, actor="bench"
        )
        ciphers = keys.subject_ciphers(session, subject.subject_id)
        fields = list(PROFILE)
        history = []
        for n in range(counts["history"]):
            field = fields[n % len(fields)]
            version = 1000 + n  # versions distinct from the current ones
            sealed = keys.seal_with(ciphers, subject.subject_id, f"history:{field}:{version}", f"{PROFILE[field]} #{n}")
            history.append(
                {
                    "subject_pk": subject.pk,
                    "field": field,
                    "version": version,
                    "value_enc": sealed,
                    "key_version": ciphers.version,
                    "change": "replaced",
                    "changed_at": utcnow(),
                    "changed_by": "bench",
                }
            )
        session.execute(insert(VaultFieldHistory), history)
        session.execute(
            insert(ConsentEvent),
            [
                {
                    "event_id": uuid.uuid4().hex,
                    "subject_pk": subject.pk,
                    "purpose_key": "marketing.communications.email",
                    "purpose_version": 1,
                    "scope": "",
                    "event_type": "given" if n % 2 == 0 else "withdrawn",
                    "consent_type": "express",
                    "channel": "web",
                    "actor": "subject",
                    "source": "api",
                    "recorded_at": utcnow(),
                }
                for n in range(counts["consent"])
            ],
        )
        session.execute(
            insert(AuditEvent),
            [
                {
                    "event_id": uuid.uuid4().hex,
                    "time": utcnow(),
                    "actor_principal": f"client:cl_{n % 7}",
                    "actor_role": "app",
                    "action": "data.read",
                    "subject_ref": subject.subject_id,
                    "purpose": "essential.service",
                    "outcome": "allow",
                }
                for n in range(counts["audit"])
            ],
        )
        with app.test_request_context():
            register_webhook(
                session,
                {
                    "name": "shop",
                    "url": url,
                    "operations": ["collect", "erase"],
                    "role": "processor",
                    "identifier_kinds": ["crm_id"],
                    "max_attempts": 3,
                    "timeout_seconds": 30,
                },
            )
        return subject.subject_id


SQL_TABLES = {
    "orders": {"note": "user.behavior.purchase_history", "amount": "user.financial"},
    "tickets": {"note": "user.behavior", "email": "user.contact.email"},
}


def _sql_sources(app: Any, url: str, counts: dict[str, int]) -> None:
    """Two tables in an external database, each with the subject's rows among other customers', registered."""
    engine = create_engine(url)
    with engine.begin() as connection:
        for table in SQL_TABLES:
            connection.execute(
                text(
                    f"CREATE TABLE {table} (id INTEGER PRIMARY KEY, customer_id VARCHAR(32) NOT NULL, "
                    "email VARCHAR(120), amount INTEGER, note VARCHAR(200), created_at TIMESTAMP NOT NULL)"
                )
            )
            connection.execute(text(f"CREATE INDEX ix_{table}_customer ON {table} (customer_id)"))
            mine = counts[f"sql_{table}"]
            rows = [
                {
                    "id": n + 1,
                    "customer": "C-000123" if n < mine else f"C-{n % 5000:06d}x",
                    "email": "zhang.wei@example.cn",
                    "amount": n % 997,
                    "note": f"{table} {n}: 订单备注 / ticket text",
                    "at": utcnow().replace(tzinfo=None),
                }
                for n in range(mine + 10_000)
            ]
            connection.execute(
                text(
                    f"INSERT INTO {table} (id, customer_id, email, amount, note, created_at) "
                    "VALUES (:id, :customer, :email, :amount, :note, :at)"
                ),
                rows,
            )
    engine.dispose()
    database: Database = app.extensions["govsvc.db"]
    with database.transaction() as session:
        for table, columns in SQL_TABLES.items():
            app.extensions["govsvc.sources"].register(
                session,
                {
                    "name": table,
                    "url": url,
                    "table": table,
                    "key_column": "id",
                    "subject_column": "customer_id",
                    "subject_kind": "crm_id",
                    "subject_system": "crm",
                    "timestamp_column": "created_at",
                    "columns": {"customer_id": "user.crm.customer_id", **columns},
                },
                actor="bench",
            )


def _request(app: Any, subject_id: str, request_type: str) -> str:
    dsr = app.extensions["govsvc.dsr"]
    database = app.extensions["govsvc.db"]
    with database.transaction() as session:
        created = dsr.service.create(
            session,
            app.extensions["govsvc.taxonomy"].current(session),
            Intake(request_type=request_type, channel="web", subject={"subject_id": subject_id}, allow_duplicate=True),
            actor="bench",
        )
        created.status, created.verification_method = "verified", "account_reauth"  # verified out of band
        return created.request_id


def _measure(label: str, function: Any) -> tuple[float, Any]:
    tracemalloc.start()
    started = time.perf_counter()
    result = function()
    elapsed = time.perf_counter() - started
    _current, peak = tracemalloc.get_traced_memory()
    tracemalloc.stop()
    print(f"{label:<52} {elapsed:>7.2f} s   peak Python heap {peak / 1e6:>6.1f} MB")
    return elapsed, result


def run(settings: Settings, records: int, external_url: str) -> None:
    counts = {
        "history": records * 20 // 100,
        "consent": records * 15 // 100,
        "audit": records * 10 // 100,
        "sql_orders": records * 20 // 100,
        "sql_tickets": records * 20 // 100,
    }
    counts["webhook"] = records - sum(counts.values()) - len(PROFILE)
    server = _app_server(counts["webhook"])
    url = f"http://127.0.0.1:{server.server_address[1]}/dsr"
    migrate.upgrade(settings.resolved_database_url)
    seed = Database(settings.resolved_database_url)
    seed_all(seed, settings, actor="bench")
    seed.dispose()
    app = create_app(settings)
    database: Database = app.extensions["govsvc.db"]
    dsr = app.extensions["govsvc.dsr"]
    subject_id = _populate(app, counts, url)
    _sql_sources(app, external_url, counts)
    total = sum(counts.values()) + len(PROFILE)
    print(
        f"records of the subject: {total:,} = vault {len(PROFILE)} fields + {counts['history']:,} history, "
        f"consent {counts['consent']:,}, audit {counts['audit']:,}, webhook app {counts['webhook']:,}, "
        f"SQL orders {counts['sql_orders']:,}, SQL tickets {counts['sql_tickets']:,}"
    )

    def baseline() -> int:  # the same collection, records read and dropped: no bundle, no encryption
        request_id = _request(app, subject_id, "access")
        job, connectors, _pk, _done = dsr.fulfilment._start(database, request_id, "bench", None)
        return sum(1 for connector in connectors if "collect" in connector.operations for _ in connector.collect(job))

    base_time, collected = _measure("baseline: collect every record, no bundle", baseline)
    access_request = _request(app, subject_id, "access")
    access_time, result = _measure(
        "access request: collect + ZIP (JSON, CSV) + encrypt",
        lambda: dsr.fulfilment.run(database, access_request, actor="bench"),
    )
    print(
        f"  status {result.status}, records {sum(result.download['records'].values()):,} (baseline read {collected:,})"
    )
    print(f"  ratio access/baseline: {access_time / base_time:.2f}")
    token = result.download["url"].rsplit("/", 1)[1]

    def download() -> int:
        pk, export_id, secret, _request_id = export.claim(database, token)
        return sum(len(chunk) for chunk in export.stream(database, pk, export_id, secret))

    _, size = _measure("download: decrypt and stream the bundle", download)
    print(f"  bundle {size / 1e6:.1f} MB")
    erasure_request = _request(app, subject_id, "erasure")
    erase_time, erased = _measure(
        "erasure: SQL sources, apps, consent, audit, vault (shred)",
        lambda: dsr.fulfilment.run(database, erasure_request, actor="bench"),
    )
    print(f"  status {erased.status}; " + ", ".join(f"{r['connector']} {r['status']}" for r in erased.runs))
    print(
        f"targets (issue 9, 2 cores): access <= 10 s: {'met' if access_time <= 10 else 'NOT met'}; "
        f"erasure <= 10 s: {'met' if erase_time <= 10 else 'NOT met'}"
    )
    database.dispose()
    server.shutdown()


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--records", type=int, default=10_000)
    parser.add_argument("--sqlite", action="store_true", help="SQLite instead of a throwaway PostgreSQL cluster")
    args = parser.parse_args(argv)
    print(f"machine: {os.cpu_count()} cores; backend: {'SQLite' if args.sqlite else 'PostgreSQL'}")
    with tempfile.TemporaryDirectory(prefix="govsvc-bench-") as directory:

        def settings(url: str) -> Settings:
            return Settings(
                environment="testing",
                database_url=url,
                secret_key=SECRET,
                instance_dir=directory,
                policy_dir=str(PROJECT_ROOT / "policies"),
                log_level="WARNING",
                audit_sequencer="off",
                scheduler="off",
            )

        if args.sqlite:
            run(
                settings(f"sqlite:///{Path(directory) / 'bench.db'}"),
                args.records,
                f"sqlite:///{Path(directory) / 'crm.db'}",
            )
            return
        cluster = PostgresCluster().start()
        try:
            cluster.admin_execute("CREATE DATABASE bench")
            cluster.admin_execute("CREATE DATABASE crm")
            run(settings(cluster.url("bench")), args.records, cluster.url("crm"))
        finally:
            cluster.stop()


if __name__ == "__main__":
    main()
