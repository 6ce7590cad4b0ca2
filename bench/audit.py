"""The audit log: append throughput with the sequencer running, offline verification of a 1M-event export,
and inclusion proofs over HTTP at 1M events.

Prints, measured in the same run:
1. append throughput on PostgreSQL (a throwaway cluster) and SQLite (a temp file): N events recorded through
   ``govsvc.audit.service.record()`` with a commit every B events, by 1 and by 2 writer threads, while the
   sequencer runs in its background thread. "record" is until the last commit; "end to end" until the sequencer
   has placed every event in the tree AND a signed checkpoint covers them (checkpoints are at most
   ``--checkpoint-seconds`` apart, the service default 2 s). Baseline: raw Core ``insert()`` executemany of the
   same rows with the same batch size and writers, no sequencer;
2. ``python -m audit.verify`` (a subprocess, wall time) over the JSONL range bundle of a 1,000,000-event SQLite log,
   written by the real export code (``plan_export`` + ``bundle_lines``). The log is built fast: Core executemany
   of the events, then ``Sequencer.drain()``. Baseline: reading and ``json.loads`` of every bundle line;
3. ``GET /v1/audit/proofs/inclusion?seq=<random>`` over HTTP (gunicorn, the 1M-event database, sequencer off,
   an auditor key, keep-alive connections). Baseline: ``GET /healthz`` the same way. Also the in-process time
   of ``proofs.inclusion_proof``.

Run: ``make bench`` or ``.venv/bin/python -m bench.audit [--help]``. Figures only; nothing is asserted.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import random
import shutil
import signal
import sqlite3
import statistics
import subprocess
import sys
import tempfile
import threading
import time
import uuid
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from sqlalchemy import func, insert, select

from govsvc.audit import proofs
from govsvc.audit.export import bundle_lines, plan_export
from govsvc.audit.models import AuditCheckpoint, AuditEvent, AuditLeaf
from govsvc.audit.sequencer import Sequencer
from govsvc.audit.service import AuditContext, EventFilter, hash_ip, ip_hash_key, record
from govsvc.audit.signing import ensure_key, published_keys
from govsvc.config import PROJECT_ROOT
from govsvc.core import migrate
from govsvc.core.db import Database, utcnow
from govsvc.policy.service import load_policy_file, roles_of, seed_policy

POLICY_DIR = PROJECT_ROOT / "policies"
SECRET_KEY = "bench-secret-key-0123456789abcdef0123456789"  # noqa: S105 - a throwaway database
ORIGIN = "govsvc.bench/audit"
IP_KEY = ip_hash_key(SECRET_KEY)
ACTIONS = ("consent.read", "data.read", "data.updated", "consent.withdrawn", "pii.masked")
CATEGORIES = (["contact"], ["contact", "identity"], ["financial"], [], ["behavioural", "contact"])


# -- set-up ------------------------------------------------------------------------------------------------------


def prepare(url: str) -> None:
    """What `govsvc init` (and tests/conftest.py) does: migrate, seed the policy, create the signing key."""
    migrate.upgrade(url)
    database = Database(url)
    try:
        seed_policy(database.engine, POLICY_DIR, actor="bench")
        with database.transaction() as session:
            ensure_key(session, SECRET_KEY, ORIGIN)
    finally:
        database.dispose()


class Backends:
    """Fresh databases on demand: SQLite files in a temp dir, PostgreSQL databases in one throwaway cluster."""

    def __init__(self, root: Path) -> None:
        self.root = root
        self.cluster: Any = None
        self._count = 0

    def postgres_cluster(self) -> Any:
        if self.cluster is None:
            from tests.support.postgres import PostgresCluster

            cluster = PostgresCluster()
            self.cluster = cluster  # set before start(): stop() also removes a half-started cluster
            cluster.start()
        return self.cluster

    def new(self, backend: str) -> str:
        self._count += 1
        if backend == "sqlite":
            url = f"sqlite:///{self.root / f'bench{self._count}.db'}"
        else:
            cluster = self.postgres_cluster()
            cluster.admin_execute(f"CREATE DATABASE bench{self._count}")
            url = cluster.url(f"bench{self._count}")
        prepare(url)
        return url

    def close(self) -> None:
        if self.cluster is not None:
            self.cluster.stop()
            self.cluster = None


def event_fields(index: int) -> dict[str, Any]:
    """The arguments of one realistic record() call (pseudonymous subject, purpose, categories, details)."""
    return {
        "action": ACTIONS[index % len(ACTIONS)],
        "subject_ref": f"sub_{index * 7919 % 1_000_003:07d}",
        "object_ref": f"crm:contact:{index % 50_000}",
        "purpose": "customer_support" if index % 3 else "marketing",
        "data_categories": CATEGORIES[index % len(CATEGORIES)],
        "outcome": "success" if index % 17 else "denied",
        "reason_code": None if index % 17 else "no_consent",
        "details": {"fields": 3 + index % 5, "channel": "api"},
    }


def actor(writer: int, batch: int) -> AuditContext:
    return AuditContext(
        principal_id=f"client:cl_bench{writer}",
        role="app",
        client_id=f"cl_bench{writer}",
        ip_hash=hash_ip(f"10.0.0.{writer + 1}", IP_KEY),
        request_id=f"req-{writer}-{batch}",
    )


def event_row(index: int, context: AuditContext) -> dict[str, Any]:
    """The audit_events row record() would write for ``event_fields(index)`` (for raw inserts)."""
    fields = event_fields(index)
    return {
        "event_id": uuid.uuid4().hex,
        "time": utcnow(),
        "actor_principal": context.principal_id,
        "actor_role": context.role,
        "actor_client": context.client_id,
        "actor_ip_hash": context.ip_hash,
        "action": fields["action"],
        "subject_ref": fields["subject_ref"],
        "object_ref": fields["object_ref"],
        "purpose": fields["purpose"],
        "data_categories": json.dumps(fields["data_categories"]) if fields["data_categories"] else None,
        "outcome": fields["outcome"],
        "reason_code": fields["reason_code"],
        "request_id": context.request_id,
        "details": json.dumps(fields["details"], sort_keys=True, separators=(",", ":")),
    }


def run_writers(writers: int, total: int, batch: int, write_batch: Callable[[int, int, range], None]) -> float:
    """Split ``total`` events over ``writers`` threads, each committing every ``batch``; returns seconds."""
    errors: list[BaseException] = []
    share = [total // writers + (1 if w < total % writers else 0) for w in range(writers)]
    starts = [sum(share[:w]) for w in range(writers)]
    barrier = threading.Barrier(writers + 1)

    def work(writer: int) -> None:
        barrier.wait()
        try:
            first, end = starts[writer], starts[writer] + share[writer]
            for number, offset in enumerate(range(first, end, batch)):
                write_batch(writer, number, range(offset, min(offset + batch, end)))
        except BaseException as error:  # reported by the caller
            errors.append(error)

    threads = [threading.Thread(target=work, args=(w,), daemon=True) for w in range(writers)]
    for thread in threads:
        thread.start()
    barrier.wait()
    started = time.perf_counter()
    for thread in threads:
        thread.join()
    if errors:
        raise errors[0]
    return time.perf_counter() - started


# -- 1. append throughput ----------------------------------------------------------------------------------------


@dataclass
class AppendResult:
    backend: str
    writers: int
    events: int
    record_seconds: float
    end_to_end_seconds: float
    raw_seconds: float


def append_with_sequencer(
    url: str, events: int, batch: int, writers: int, checkpoint_seconds: float
) -> tuple[float, float]:
    """(record seconds, end-to-end seconds) for ``events`` recorded through record() with the sequencer running."""
    database = Database(url, pool_size=writers + 2)
    sequencer = Sequencer(database, SECRET_KEY, ORIGIN, checkpoint_seconds=checkpoint_seconds)
    with database.transaction(write=False) as session:
        base = int(session.scalar(select(func.count()).select_from(AuditEvent)) or 0)
    target = base + events

    def write_batch(writer: int, number: int, indexes: range) -> None:
        context = actor(writer, number)
        with database.transaction() as session:
            for index in indexes:
                record(session, context=context, **event_fields(index))

    done = threading.Event()
    finished: list[float] = []
    poller = Database(url)

    def watch() -> None:  # polls the latest checkpoint on its own connection, as an auditor would
        while not done.is_set():
            with poller.transaction(write=False) as session:
                size = session.scalar(select(func.max(AuditCheckpoint.tree_size))) or 0
            if size >= target:
                finished.append(time.perf_counter())
                return
            time.sleep(0.01)

    sequencer.start()
    watcher = threading.Thread(target=watch, daemon=True)
    try:
        started = time.perf_counter()
        watcher.start()
        record_seconds = run_writers(writers, events, batch, write_batch)
        watcher.join(timeout=300)
        if not finished:
            raise RuntimeError("the sequencer did not checkpoint every event within 300 s")
        end_to_end = finished[0] - started
    finally:
        done.set()
        sequencer.stop()
        poller.dispose()
    with database.transaction(write=False) as session:
        placed = session.scalar(select(func.count()).select_from(AuditLeaf))
        if placed != target:
            raise RuntimeError(f"{placed} leaves for {target} events")
    database.dispose()
    return record_seconds, end_to_end


def append_raw(url: str, events: int, batch: int, writers: int) -> float:
    """Seconds for a raw Core executemany of the same rows (same batch size and writers), no sequencer."""
    database = Database(url, pool_size=writers + 2)
    table = AuditEvent.__table__

    def write_batch(writer: int, number: int, indexes: range) -> None:
        context = actor(writer, number)
        rows = [event_row(index, context) for index in indexes]
        with database.transaction() as session:
            session.execute(insert(table), rows)

    seconds = run_writers(writers, events, batch, write_batch)
    database.dispose()
    return seconds


def bench_append(backends: Backends, names: list[str], args: argparse.Namespace) -> None:
    print(
        f"\n== 1. append: {args.events:,} events through record(), a commit every {args.batch} events, "
        "sequencer running (targets: end to end >= 5,000 ev/s PostgreSQL, >= 2,000 ev/s SQLite) =="
    )
    results: list[AppendResult] = []
    for backend in names:
        for writers in args.writers:
            raw = append_raw(backends.new(backend), args.events, args.batch, writers)
            recorded, end_to_end = append_with_sequencer(
                backends.new(backend), args.events, args.batch, writers, args.checkpoint_seconds
            )
            results.append(AppendResult(backend, writers, args.events, recorded, end_to_end, raw))
    print(
        f"{'backend':<11} {'writers':>7} {'raw INSERT ev/s':>16} {'record() ev/s':>14} {'end-to-end ev/s':>16} "
        f"{'e2e/raw':>8} {'record/raw':>11} {'tail s':>7}"
    )
    for r in results:
        raw_rate, rec_rate, e2e_rate = (
            r.events / r.raw_seconds,
            r.events / r.record_seconds,
            r.events / r.end_to_end_seconds,
        )
        print(
            f"{r.backend:<11} {r.writers:>7} {raw_rate:>16,.0f} {rec_rate:>14,.0f} {e2e_rate:>16,.0f} "
            f"{e2e_rate / raw_rate:>8.2f} {rec_rate / raw_rate:>11.2f} {r.end_to_end_seconds - r.record_seconds:>7.2f}"
        )
    print(
        "record = first record() until the last commit; end to end = until every event is in the tree and a "
        f"signed checkpoint covers it (checkpoints at most {args.checkpoint_seconds:g} s apart: 'tail s' is the wait "
        "after the last commit). Raw INSERT: Core executemany, same rows, batch and writers, no sequencer.\n"
        "PostgreSQL: throwaway cluster, fsync=off, synchronous_commit=off; SQLite: WAL, synchronous=FULL (default)"
    )


# -- 2. verify a 1M-event bundle ---------------------------------------------------------------------------------


def build_log(url: str, events: int, *, chunk: int = 20_000) -> tuple[float, float]:
    """Fill the log up to ``events`` events with Core executemany, then drain the sequencer; (insert s, drain s)."""
    database = Database(url, sqlite_synchronous="NORMAL")
    table = AuditEvent.__table__
    with database.transaction(write=False) as session:
        first = int(session.scalar(select(func.count()).select_from(AuditEvent)) or 0)  # set-up's own events
    started = time.perf_counter()
    for offset in range(first, events, chunk):
        context = actor(offset // chunk % 8, offset // chunk)
        rows = [event_row(index, context) for index in range(offset, min(offset + chunk, events))]
        with database.transaction() as session:
            session.execute(insert(table), rows)
    inserted = time.perf_counter()
    sequencer = Sequencer(database, SECRET_KEY, ORIGIN, batch_size=50_000)
    sequencer.drain()
    drained = time.perf_counter()
    with database.transaction(write=False) as session:
        placed = int(session.scalar(select(func.max(AuditCheckpoint.tree_size))) or 0)
    if placed != events:
        raise RuntimeError(f"sequencer placed {placed} of {events} events")
    database.dispose()
    if url.startswith("sqlite:///"):
        with contextlib.closing(sqlite3.connect(url.removeprefix("sqlite:///"))) as connection:
            connection.execute("PRAGMA wal_checkpoint(TRUNCATE)")
    return inserted - started, drained - inserted


def export_bundle(url: str, path: Path) -> tuple[float, str]:
    """Write the range bundle of the whole log with the real export code; (seconds, trusted vkey)."""
    database = Database(url)
    started = time.perf_counter()
    with database.transaction(write=False) as session, open(path, "w", encoding="utf-8") as out:
        plan = plan_export(session, EventFilter(seq_from=0))
        for line in bundle_lines(session, plan):
            out.write(line)
        vkey = published_keys(session)[-1].vkey
    seconds = time.perf_counter() - started
    database.dispose()
    return seconds, vkey


def parse_only(path: Path) -> float:
    started = time.perf_counter()
    with open(path, "rb") as stream:
        for line in stream:
            json.loads(line)
    return time.perf_counter() - started


def bench_verify(url: str, root: Path, args: argparse.Namespace) -> None:
    print(
        f"\n== 2. python -m audit.verify over a {args.verify_events:,}-event range bundle exported from the SQLite "
        "log (target <= 60 s) =="
    )
    bundle = root / "bundle.jsonl"
    export_seconds, vkey = export_bundle(url, bundle)
    size_mb = bundle.stat().st_size / 1e6
    parse_seconds = parse_only(bundle)
    started = time.perf_counter()
    result = subprocess.run(
        [sys.executable, "-m", "audit.verify", str(bundle), "--pubkey", vkey],
        cwd=PROJECT_ROOT,
        capture_output=True,
        text=True,
        check=False,
    )
    verify_seconds = time.perf_counter() - started
    print(f"bundle: {size_mb:,.0f} MB, written by plan_export + bundle_lines in {export_seconds:.1f} s")
    print(f"{'step':<46} {'seconds':>8} {'events/s':>10}")
    n = args.verify_events
    print(f"{'read + json.loads every line (baseline)':<46} {parse_seconds:>8.1f} {n / parse_seconds:>10,.0f}")
    status = "OK" if result.returncode == 0 else f"exit {result.returncode}"
    print(f"{f'python -m audit.verify --pubkey ({status})':<46} {verify_seconds:>8.1f} {n / verify_seconds:>10,.0f}")
    print(f"ratio verify/parse time: {verify_seconds / parse_seconds:.2f}")
    if result.returncode != 0:
        print(result.stdout[-2000:], result.stderr[-2000:])
    bundle.unlink()


# -- 3. inclusion proofs -----------------------------------------------------------------------------------------


def in_process_proofs(url: str, size: int, samples: int) -> tuple[float, float]:
    """(median ms, p99 ms) of proofs.inclusion_proof for random seqs, each in its own read transaction."""
    database = Database(url)
    timings = []
    rng = random.Random(7)
    with database.transaction(write=False) as session:
        checkpoint = proofs.checkpoint_at(session, None)
        assert checkpoint.tree_size == size
    for _ in range(samples):
        seq = rng.randrange(size)
        with database.transaction(write=False) as session:
            start = time.perf_counter()
            proofs.inclusion_proof(session, seq, size)
            timings.append((time.perf_counter() - start) * 1000)
    database.dispose()
    timings.sort()
    return statistics.median(timings), timings[max(int(len(timings) * 0.99) - 1, 0)]


def auditor_key(url: str) -> str:
    from govsvc.auth.service import create_client

    database = Database(url)
    with database.transaction() as session:
        key = create_client(
            session, name="bench-auditor", role="auditor", known_roles=frozenset(roles_of(load_policy_file(POLICY_DIR)))
        ).api_key
    database.dispose()
    return key


def bench_proofs(url: str, backend: str, size: int, instance: Path, args: argparse.Namespace) -> None:
    from bench.load import get, http_load
    from tests.support.server import GunicornServer

    print(
        f"\n== 3. inclusion proof at {size:,} events ({backend}): gunicorn 2 workers x 2 threads, sequencer off, "
        f"{args.connections} keep-alive connections, {args.proof_seconds:g} s each (target p99 <= 20 ms) =="
    )
    print("(client and server share the same cores: figures are upper bounds on latency)")
    key = auditor_key(url)
    env = {
        "GOVSVC_DATABASE_URL": url,
        "GOVSVC_INSTANCE_DIR": str(instance),
        "GOVSVC_SECRET_KEY": SECRET_KEY,
        "GOVSVC_AUDIT_ORIGIN": ORIGIN,
        "GOVSVC_AUDIT_SEQUENCER": "off",
        "GOVSVC_LOG_LEVEL": "WARNING",
    }
    headers = {"Authorization": f"Bearer {key}"}

    def random_proof(rng: random.Random) -> tuple[str, str, None, dict[str, str]]:
        return "GET", f"/v1/audit/proofs/inclusion?seq={rng.randrange(size)}", None, headers

    with GunicornServer(env) as server:
        port = server.port
        http_load(port, get("/healthz"), connections=args.connections, seconds=1)  # warm-up
        http_load(port, random_proof, connections=args.connections, seconds=1)
        bare = http_load(port, get("/healthz"), connections=args.connections, seconds=args.proof_seconds)
        proof = http_load(port, random_proof, connections=args.connections, seconds=args.proof_seconds)
    median, p99 = in_process_proofs(url, size, args.proof_samples)
    print(f"{'endpoint':<44} {'req/s':>7} {'p50 ms':>7} {'p99 ms':>7} {'requests':>9} {'errors':>7}")
    for name, result in (("GET /healthz (baseline)", bare), ("GET /v1/audit/proofs/inclusion?seq=<random>", proof)):
        print(
            f"{name:<44} {result.rate:>7,.0f} {result.p50_ms:>7.2f} {result.p99_ms:>7.2f} {result.requests:>9,} "
            f"{result.errors:>7}"
        )
    print(f"ratio proof/healthz throughput: {proof.rate / bare.rate:.2f}")
    print(
        f"in process, proofs.inclusion_proof(seq, {size:,}) over {args.proof_samples:,} random seqs: "
        f"median {median:.3f} ms, p99 {p99:.3f} ms"
    )


# -- main --------------------------------------------------------------------------------------------------------


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="python -m bench.audit", description=__doc__.split("\n\n")[0])
    parser.add_argument("--only", choices=["append", "verify", "proofs"], action="append", help="run only these parts")
    parser.add_argument("--backends", default="postgresql,sqlite", help="for part 1 (default: %(default)s)")
    parser.add_argument("--events", type=int, default=50_000, help="events per append run (default: %(default)s)")
    parser.add_argument("--batch", type=int, default=100, help="events per commit (default: %(default)s)")
    parser.add_argument(
        "--writers", type=lambda s: [int(x) for x in s.split(",")], default=[1, 2],
        help="writer thread counts to try, comma-separated (default: 1,2)",
    )  # fmt: skip
    parser.add_argument("--checkpoint-seconds", type=float, default=2.0, help="sequencer setting (default: 2)")
    parser.add_argument("--verify-events", type=int, default=1_000_000, help="log size of parts 2-3 (default: 1M)")
    parser.add_argument("--proof-seconds", type=float, default=5.0, help="HTTP load per endpoint (default: 5)")
    parser.add_argument("--connections", type=int, default=4, help="keep-alive connections (default: 4)")
    parser.add_argument("--proof-samples", type=int, default=2000, help="in-process proofs timed (default: 2000)")
    parser.add_argument(
        "--proofs-postgres",
        action=argparse.BooleanOptionalAction,
        default=True,
        help="also build the log on PostgreSQL and measure proofs there (default: yes)",
    )
    return parser.parse_args(argv)


def _terminate(_signum: int, _frame: object) -> None:
    raise SystemExit(143)  # unwinds through the finally blocks: temp dirs and the cluster are removed


def main(argv: list[str] | None = None) -> None:
    args = parse_args(argv)
    parts = args.only or ["append", "verify", "proofs"]
    names = [name.strip() for name in args.backends.split(",") if name.strip()]
    print(f"machine: {os.cpu_count()} cores (os.cpu_count()); Python {sys.version.split()[0]}")
    previous = signal.signal(signal.SIGTERM, _terminate)
    root = Path(tempfile.mkdtemp(prefix="govsvc-bench-audit-"))
    backends = Backends(root)
    started = time.perf_counter()
    try:
        if "append" in parts:
            bench_append(backends, names, args)
        if "verify" in parts or "proofs" in parts:
            url = backends.new("sqlite")
            insert_s, drain_s = build_log(url, args.verify_events)
            n = args.verify_events
            print(
                f"\n(built the {n:,}-event SQLite log, synchronous=NORMAL: Core executemany {insert_s:.1f} s, "
                f"Sequencer.drain() {drain_s:.1f} s = {n / drain_s:,.0f} events/s)"
            )
            if "verify" in parts:
                bench_verify(url, root, args)
            if "proofs" in parts:
                bench_proofs(url, "SQLite", n, root, args)
                if args.proofs_postgres:
                    pg_url = backends.new("postgresql")
                    insert_s, drain_s = build_log(pg_url, n)
                    print(
                        f"\n(built the {n:,}-event PostgreSQL log: Core executemany {insert_s:.1f} s, "
                        f"Sequencer.drain() {drain_s:.1f} s = {n / drain_s:,.0f} events/s)"
                    )
                    bench_proofs(pg_url, "PostgreSQL", n, root, args)
    finally:
        backends.close()
        shutil.rmtree(root, ignore_errors=True)
        signal.signal(signal.SIGTERM, previous)
    print(f"\ntotal {time.perf_counter() - started:.0f} s")


if __name__ == "__main__":
    main()
