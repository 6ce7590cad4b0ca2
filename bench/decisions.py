"""The decision API under a realistic load: 100,000 subjects, 1,000,000 consent events, 10,000 casbin lines.

Prints, in one run, on PostgreSQL (throwaway cluster, as the tests start it):
1. in-process decisions (``DecisionEngine.decide`` in a transaction, audit events included): median and p99,
   first without the decision cache (a round trip per decision), then with it once warm; the write barrier's wait;
2. over HTTP under gunicorn (2 workers x 4 threads): single decisions against a bare JSON endpoint of the same
   app and server (``/healthz``), requests/s and the ratio, p50/p99 at 32 connections, caches filling and warm
   (the mix: one decision in four denies and writes its ``policy.deny`` event before it answers), and warm with
   allows only (the same calls on subjects whose consents stand, nothing to audit: what the audit writes cost);
   the warm runs and the bare one in interleaved rounds (``--rounds``), each round's ratio against its own bare
   run, since the shared host's speed drifts between runs; then both at fixed offered rates over the same 32
   connections (open loop), the latency a caller sees below saturation;
3. the batch endpoint: decisions/s with 1,000 checks per call;
4. the CPU per request of the gunicorn workers and of the PostgreSQL server, for each HTTP run.

The data set is bulk-loaded with executemany (events and their projection written directly, as the ledger
would have written them) so that building it takes a minute, not an hour; decisions then read it normally.
Run: ``.venv/bin/python -m bench.decisions [--subjects N] [--events-per-subject K] [--policy-lines L]``.
"""

from __future__ import annotations

import argparse
import json
import multiprocessing
import os
import random
import statistics
import tempfile
import time
import uuid
from datetime import timedelta
from pathlib import Path

from sqlalchemy import insert, text

from bench.load import LoadResult, get, http_load
from govsvc import create_app, settle_heap
from govsvc.audit.sequencer import Sequencer, tree_size
from govsvc.auth.service import create_client
from govsvc.bootstrap import seed_all
from govsvc.config import PROJECT_ROOT, Settings
from govsvc.consent.models import ConsentEvent, ConsentState
from govsvc.core import migrate
from govsvc.core.db import Database, utcnow
from govsvc.crypto import tokens
from govsvc.crypto.keys import KeyStore
from govsvc.crypto.providers import LocalKeyProvider
from govsvc.crypto.service import FieldKeys
from govsvc.crypto.tokens import Ciphers
from govsvc.decisions.service import DecisionRequest
from govsvc.policy.service import bump_version
from govsvc.subjects.models import Subject, SubjectIdentifier
from tests.support.postgres import PostgresCluster
from tests.support.server import GunicornServer

SECRET = "bench-secret-key-0123456789abcdef0123456789"  # noqa: S105 - a throwaway bench database
PURPOSES = ["marketing.communications.email", "marketing.communications.sms", "personalize.profiling"]
FIELDS = {PURPOSES[0]: ["email"], PURPOSES[1]: ["mobile"], PURPOSES[2]: ["purchase_history"]}
CHUNK = 5000
OFFERED_RATES = (500, 1000)  # requests/s over 32 connections: a busy CRM's calls, below saturation


def build(database: Database, settings: Settings, subjects: int, events_per_subject: int, policy_lines: int) -> None:
    """Subjects with an e-mail identifier each, consent events alternating given/withdrawn, extra policy lines."""
    keys = FieldKeys(
        SECRET,
        KeyStore(LocalKeyProvider.from_settings(root_keys="", root_key_file="", secret_key=SECRET, production=False)),
    )
    # Identifier values are sealed under a throwaway key per subject: decisions never read them (blind index only).
    gcm_key = os.urandom(32)
    now = utcnow()
    started = time.perf_counter()
    with database.engine.begin() as connection:
        for offset in range(0, subjects, CHUNK):
            rows, identifiers = [], []
            for number in range(offset, min(offset + CHUNK, subjects)):
                subject_id = f"sub_bench{number:011d}"[:20]
                rows.append(
                    {
                        "pk": number + 1,
                        "subject_id": subject_id,
                        "jurisdictions": '["pipl"]',
                        "restricted": False,
                        "legal_hold": False,
                        "created_at": now,
                        "updated_at": now,
                    }
                )
                email = f"user{number}@example.cn"
                identifiers.append(
                    {
                        "subject_pk": number + 1,
                        "kind": "email",
                        "system": "",
                        "blind_index": keys.blind_index("email", "", email),
                        "value_enc": tokens.seal(
                            Ciphers.of(f"subject:{subject_id}", 1, gcm_key), email.encode(), subject_id.encode()
                        ),
                        "created_at": now,
                    }
                )
            connection.execute(insert(Subject), rows)
            connection.execute(insert(SubjectIdentifier), identifiers)
        event_pk = 0
        for offset in range(0, subjects, CHUNK // events_per_subject or 1):
            events, states = [], []
            for number in range(offset, min(offset + (CHUNK // events_per_subject or 1), subjects)):
                last = {}
                for index in range(events_per_subject):
                    event_pk += 1
                    purpose = PURPOSES[index % len(PURPOSES)]
                    # the last event of each purpose: given for 3 subjects in 4, withdrawn for the fourth
                    kind = "withdrawn" if number % 4 == 0 and index >= events_per_subject - len(PURPOSES) else "given"
                    events.append(
                        {
                            "pk": event_pk,
                            "event_id": uuid.uuid4().hex,
                            "subject_pk": number + 1,
                            "purpose_key": purpose,
                            "purpose_version": 1,
                            "scope": "",
                            "event_type": kind,
                            "consent_type": "express",
                            "lawful_basis": "gdpr:consent,pipl:consent,ccpa:notice",
                            "notice_id": "pn",
                            "notice_version": "1",
                            "notice_sha256": "0" * 64,
                            "language": "zh-CN",
                            "channel": "app",
                            "actor": "subject",
                            "source": "api",
                            "recorded_at": now - timedelta(seconds=events_per_subject - index),
                            "recorded_by": "bench",
                        }
                    )
                    last[purpose] = (kind, event_pk)
                for purpose, (kind, pk) in last.items():
                    states.append(
                        {
                            "subject_pk": number + 1,
                            "purpose_key": purpose,
                            "scope": "",
                            "status": kind,
                            "purpose_version": 1,
                            "consent_type": "express",
                            "actor": "subject",
                            "source": "api",
                            "last_event_pk": pk,
                            "updated_at": now,
                        }
                    )
            connection.execute(insert(ConsentEvent), events)
            connection.execute(insert(ConsentState), states)
        if database.engine.dialect.name == "postgresql":
            connection.execute(text("SELECT setval('subjects_pk_seq', (SELECT max(pk) FROM subjects))"))
            connection.execute(text("SELECT setval('consent_events_pk_seq', (SELECT max(pk) FROM consent_events))"))
        extra = [
            {"ptype": "p", "v0": f"bench_role_{i % 50}", "v1": f"data:user.bench.c{i}", "v2": "read"}
            for i in range(policy_lines)
        ]
        connection.execute(text("INSERT INTO casbin_rule (ptype, v0, v1, v2) VALUES (:ptype, :v0, :v1, :v2)"), extra)
    with database.transaction() as session:
        bump_version(session, actor="bench")
    if database.engine.dialect.name == "postgresql":
        with database.engine.connect().execution_options(isolation_level="AUTOCOMMIT") as connection:
            connection.execute(text("VACUUM ANALYZE"))
    print(
        f"built {subjects:,} subjects, {subjects * events_per_subject:,} consent events, "
        f"{policy_lines:,} extra policy lines in {time.perf_counter() - started:.0f} s"
    )


def _request(number: int, *, by_email: bool = True) -> DecisionRequest:
    subject = (
        {"kind": "email", "value": f"user{number}@example.cn"}
        if by_email
        else {"subject_id": f"sub_bench{number:011d}"[:20]}
    )
    purpose = PURPOSES[number % 3]
    return DecisionRequest(
        subject=subject,
        action="read",
        purpose=purpose,
        roles=("app",),
        principal_id="client:bench",
        fields=tuple(FIELDS[purpose]),
    )


def _timed(engine, database, subjects: int, seconds: float, *, per_transaction: int) -> tuple[list[float], int]:
    rng = random.Random(7)
    samples, allowed = [], 0
    deadline = time.perf_counter() + seconds
    while time.perf_counter() < deadline:
        session = database.new_session(write=True)
        try:
            for _ in range(per_transaction):
                number = rng.randrange(subjects)
                start = time.perf_counter()
                decision = engine.decide(session, _request(number))
                samples.append((time.perf_counter() - start) * 1e6)
                allowed += decision.allowed
            session.commit()  # writes the audit events of the denies, as a request's commit does
        finally:
            session.close()
    samples.sort()
    return samples, allowed


def _round_trip(database: Database, count: int = 3000) -> float:
    """Median µs of ``SELECT 1``: what reading current consent costs at least, since a decision reads it each time."""
    with database.engine.connect() as connection:
        cursor = connection.connection.cursor()
        samples = []
        for _ in range(count):
            start = time.perf_counter()
            cursor.execute("SELECT 1")
            cursor.fetchall()
            samples.append((time.perf_counter() - start) * 1e6)
        cursor.close()
    return statistics.median(samples)


def _warm(engine, database, subjects: int) -> float:
    """Decide once for every subject (batches of 1,000) so the instance's cache holds them all; seconds taken."""
    started = time.perf_counter()
    for offset in range(0, subjects, 1000):
        with database.transaction() as session:
            engine.decide_each(session, [_request(number) for number in range(offset, min(offset + 1000, subjects))])
    return time.perf_counter() - started


def _rss_mib() -> float:
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    return 0.0


def _barrier_latency(database: Database, count: int = 300) -> tuple[float, float]:
    """Median and p99 ms of the barrier a write waits for after its commit, until every instance (here: this
    process's listener) acknowledged it: what the cache adds to a write."""
    waits = []
    for _ in range(count):
        database.coherence.wrote()  # as after a commit that changed a consent state
        start = time.perf_counter()
        database.settle()
        waits.append((time.perf_counter() - start) * 1e3)
    waits.sort()
    return statistics.median(waits), waits[int(len(waits) * 0.99)]


def bench_in_process(settings: Settings, subjects: int, seconds: float) -> None:
    app = create_app(settings)
    settle_heap()  # as wsgi.py does once the served app is built
    engine = app.extensions["govsvc.decisions"]
    database = app.extensions["govsvc.db"]
    cache = engine.cache
    with database.transaction() as session:  # warm: policy, taxonomy, compiled statements; starts the listener
        for number in range(200):
            engine.decide(session, _request(number))
    deadline = time.monotonic() + 10
    while cache is not None and not cache.coherence.serving() and time.monotonic() < deadline:
        time.sleep(0.05)
    print("\n== in-process decision: DecisionEngine.decide, subject by e-mail blind index, audit events of denies ==")
    floor = _round_trip(database)
    print(f"floor: one PostgreSQL round trip (SELECT 1 on a pooled connection): median {floor:.0f} µs")
    print(f"{'cache':<22} {'transaction':<26} {'decisions':>10} {'allowed':>8} {'median µs':>10} {'p99 µs':>8}")
    engine.cache = None  # first as before the cache: the lookup's round trip in every decision
    for per_transaction in (100, 1):
        _print_timed("off (a round trip)", engine, database, subjects, seconds / 4, per_transaction)
    engine.cache = cache
    if cache is None:
        print("(no cache: GOVSVC_DECISION_CACHE=off)")
        database.dispose()
        return
    rss = _rss_mib()
    warmed = _warm(engine, database, subjects)
    print(
        f"warm-up: {subjects:,} subjects decided in batches in {warmed:.1f} s; cache holds {len(cache):,} subjects, "
        f"process RSS +{_rss_mib() - rss:.0f} MiB"
    )
    hits, misses = cache.hits, cache.misses
    for per_transaction in (100, 1):
        _print_timed("on, warm", engine, database, subjects, seconds / 4, per_transaction)
    looked_up = cache.hits - hits + cache.misses - misses
    print(f"cache hits during the warm runs: {(cache.hits - hits) / max(looked_up, 1):.1%} of {looked_up:,} lookups")
    median, p99 = _barrier_latency(database)
    print(
        f"write barrier (after a commit, until every lease acknowledged it): median {median:.2f} ms, p99 {p99:.2f} ms"
    )
    database.dispose()


def _print_timed(label: str, engine, database, subjects: int, seconds: float, per_transaction: int) -> None:
    samples, allowed = _timed(engine, database, subjects, seconds, per_transaction=per_transaction)
    median, p99 = statistics.median(samples), samples[int(len(samples) * 0.99)]
    transaction = f"{per_transaction} per commit" if per_transaction > 1 else "one per commit"
    print(
        f"{label:<22} {transaction:<26} {len(samples):>10,} {allowed / len(samples):>8.0%} {median:>10.0f} {p99:>8.0f}"
    )


def settle_audit(sequencer: Sequencer) -> int:
    """Sequence every audit event written so far (from this process, as the workers' sequencers may be busy), and
    wait until none is pending: each measured phase then starts with no backlog of another phase's events, whose
    sequencing would otherwise take CPU from it (the in-process runs leave tens of thousands). Returns how many
    this call placed."""
    placed = 0
    while True:
        placed += sequencer.drain(checkpoint=False)
        with sequencer.database.transaction() as session:
            events = session.execute(text("SELECT count(*) FROM audit_events")).scalar_one()
            if tree_size(session) >= events:
                return placed
        time.sleep(0.1)  # a worker's sequencer holds the lock: let it finish its batch


def bench_http(
    settings: Settings, key: str, subjects: int, seconds: float, rounds: int, instance: Path, postmaster: int
) -> None:
    env = {
        "GOVSVC_DATABASE_URL": settings.resolved_database_url,
        "GOVSVC_SECRET_KEY": SECRET,
        "GOVSVC_INSTANCE_DIR": str(instance),
        "GOVSVC_LOG_LEVEL": "WARNING",
        "GOVSVC_AUDIT_SEQUENCER": "thread",
    }
    auth = {"Authorization": f"Bearer {key}", "Content-Type": "application/json"}

    def check(number: int) -> dict:
        purpose = PURPOSES[number % 3]
        return {
            "subject": {"kind": "email", "value": f"user{number}@example.cn"},
            "action": "read",
            "purpose": purpose,
            "fields": FIELDS[purpose],
        }

    def single(rng):
        return "POST", "/v1/decisions", json.dumps(check(rng.randrange(subjects))), auth

    def standing(rng):  # the same calls, on subjects whose consents stand: every decision allows, none is audited
        number = rng.randrange(subjects)
        if number % 4 == 0:  # build() withdrew these subjects' consents: take a neighbour
            number = number + 1 if number + 1 < subjects else number - 1
        return "POST", "/v1/decisions", json.dumps(check(number)), auth

    def batch(rng):
        checks = [check(rng.randrange(subjects)) for _ in range(1000)]
        return "POST", "/v1/decisions:batch", json.dumps({"checks": checks}), auth

    # The load client's processes are forked at each call: the chunk counter lives in shared memory, so that they
    # all take the next chunk (a plain counter was copied into each process, and every call resent the first ones).
    next_chunk = multiprocessing.get_context("fork").Value("q", 0)

    def sweep(_rng):  # batches over every subject in turn, so each worker's cache ends up holding all of them
        with next_chunk.get_lock():
            chunk = next_chunk.value
            next_chunk.value += 1
        offset = chunk * 1000 % subjects
        checks = [
            {
                "subject": {"kind": "email", "value": f"user{number}@example.cn"},
                "action": "read",
                "purpose": "essential.service",  # contract basis: allowed, and nothing to audit
                "fields": ["email"],
            }
            for number in range(offset, min(offset + 1000, subjects))
        ]
        return "POST", "/v1/decisions:batch", json.dumps({"checks": checks}), auth

    audit_database = Database(settings.resolved_database_url)
    sequencer = Sequencer(audit_database, settings.secret_key, settings.audit_origin)
    backlog = settle_audit(sequencer)  # the in-process runs' events
    # as `make run` serves; workers load the PII models, which takes long on a busy shared machine
    with GunicornServer(env, workers=2, threads=4, start_timeout=180) as server:
        assert server.process is not None
        http_load(server.port, single, connections=8, seconds=2)  # warm every worker thread
        results: dict[str, list[LoadResult]] = {}
        spent: dict[str, list[tuple[float, float]]] = {}  # per run: the workers' and PostgreSQL's CPU seconds

        def measure(name: str, make, connections: int = 32) -> LoadResult:
            settle_audit(sequencer)
            before, pg_before = _workers_cpu(server.process.pid), _postgres_cpu(postmaster)
            result = http_load(server.port, make, connections=connections, seconds=seconds)
            used = (_workers_cpu(server.process.pid) - before, _postgres_cpu(postmaster) - pg_before)
            results.setdefault(name, []).append(result)
            spent.setdefault(name, []).append(used)
            return result

        measure("single, cold", single)
        started, swept = time.perf_counter(), 0
        while swept < 8 * subjects:  # 8 passes over every subject, spread over both workers by the kernel
            swept += http_load(server.port, sweep, connections=4, seconds=2).requests * 1000
        sweep_seconds = time.perf_counter() - started
        # The host's speed drifts by a third or more within minutes: the bare endpoint and the decisions are
        # measured in interleaved rounds, and each round's ratio is against that round's bare run.
        for _ in range(rounds):
            for name, make in (("bare", get("/healthz")), ("single", single), ("standing", standing)):
                measure(name, make)
        paced = {}  # open loop: 32 connections offering a fixed rate, latency counted from when each was due
        for rate in OFFERED_RATES:
            for name, make in (("bare", get("/healthz")), ("single", single)):
                settle_audit(sequencer)
                paced[name, rate] = http_load(server.port, make, connections=32, seconds=seconds, rate=rate)
        batched = measure("batch", batch, connections=2)
    # CPU per request (per decision for batches), over all the runs of each kind
    cpu, pg_cpu = {}, {}
    for name, used in spent.items():
        served = max(sum(result.requests for result in results[name]) * (1000 if name == "batch" else 1), 1)
        cpu[name] = sum(workers for workers, _ in used) / served * 1e6
        pg_cpu[name] = sum(postgres for _, postgres in used) / served * 1e6
    audit_database.dispose()
    print(
        "\n== over HTTP: gunicorn 2 workers x 4 threads, PostgreSQL, 32 keep-alive connections "
        "(the load client shares the 2 cores) =="
    )
    print(f"{'endpoint':<52} {'round':>5} {'req/s':>8} {'p50 ms':>7} {'p99 ms':>7} {'errors':>7} {'steal':>6}")
    labels = {
        "bare": "GET /healthz (bare JSON, baseline)",
        "single, cold": "POST /v1/decisions, caches filling",
        "single": "POST /v1/decisions, caches warm",
        "standing": "POST /v1/decisions, warm, allows only",
    }
    runs = [("single, cold", "-", results["single, cold"][0])]
    for number in range(rounds):
        runs += [(name, str(number + 1), results[name][number]) for name in ("bare", "single", "standing")]
    for name, round_label, result in runs:
        print(
            f"{labels[name]:<52} {round_label:>5} {result.rate:>8,.0f} {result.p50_ms:>7.1f} {result.p99_ms:>7.1f} "
            f"{result.errors:>7} {result.steal:>6.0%}"
        )
    print(
        f"(before each run, the audit events of the runs before it were sequenced: {backlog:,} from the in-process "
        "runs; a run's own events are sequenced by the workers while it runs, as in service)"
    )
    print(
        f"(after the run with caches filling, {sweep_seconds:.0f} s of batches went over every subject 8 times, so "
        "that each worker's cache holds them; steal: the share of the machine's CPU time the host "
        "gave to other virtual machines during the run, which slows every figure)"
    )
    mix = [results["single"][n].rate / results["bare"][n].rate for n in range(rounds)]
    allows = [results["standing"][n].rate / results["bare"][n].rate for n in range(rounds)]
    bare_median = statistics.median(result.rate for result in results["bare"])

    def listed(ratios: list[float]) -> str:
        return f"{statistics.median(ratios):.2f} (rounds: {', '.join(f'{ratio:.2f}' for ratio in ratios)})"

    print(
        f"ratio decisions/bare, each round against its own bare run, median: warm {listed(mix)} (the mix: 1 "
        f"decision in 4 denies, and its policy.deny event is written before the answer); allows only "
        f"{listed(allows)} (the same calls on subjects whose consents stand: nothing to audit); caches filling "
        f"{results['single, cold'][0].rate / bare_median:.2f} (against the median bare run)"
    )
    p99s = {name: statistics.median(result.p99_ms for result in results[name]) for name in ("bare", "single")}
    print(f"median p99 at saturation: bare {p99s['bare']:.1f} ms, decisions (the mix) {p99s['single']:.1f} ms")
    print("\n-- the same 32 connections at a fixed offered rate (open loop; latency from when each request was due) --")
    print(f"{'endpoint':<40} {'offered/s':>9} {'req/s':>8} {'p50 ms':>7} {'p99 ms':>7} {'errors':>7} {'steal':>6}")
    for (name, rate), result in paced.items():
        label = "GET /healthz" if name == "bare" else "POST /v1/decisions, caches warm"
        print(
            f"{label:<40} {rate:>9,} {result.rate:>8,.0f} {result.p50_ms:>7.1f} {result.p99_ms:>7.1f} "
            f"{result.errors:>7} {result.steal:>6.0%}"
        )
    print(
        f"POST /v1/decisions:batch (1,000 checks, 2 connections, caches warm): {batched.rate * 1000:,.0f} decisions/s "
        f"(p50 {batched.p50_ms:.0f} ms per batch, p99 {batched.p99_ms:.0f} ms, errors {batched.errors}, "
        f"steal {batched.steal:.0%})"
    )
    print(
        f"gunicorn workers' CPU (user+system, audit sequencer thread included; PostgreSQL's own not): "
        f"bare {cpu['bare']:,.0f} µs/request, decision {cpu['single']:,.0f} µs/request "
        f"({cpu['single'] / cpu['bare']:.1f}x bare; allows only {cpu['standing']:,.0f}), "
        f"batch {cpu['batch']:,.0f} µs/decision"
    )
    print(
        f"PostgreSQL's CPU (every server process): bare {pg_cpu['bare']:,.0f} µs/request, decision "
        f"{pg_cpu['single']:,.0f} µs/request (allows only {pg_cpu['standing']:,.0f}), batch {pg_cpu['batch']:,.0f} "
        "µs/decision; the difference is the refusals' audit events, written and then sequenced"
    )


def _workers_cpu(master: int) -> float:
    """Seconds of CPU (user + system) used so far by the gunicorn master's worker processes (Linux /proc)."""
    return _cpu_of_children(master)


def _postgres_cpu(postmaster: int) -> float:
    """Seconds of CPU used so far by the PostgreSQL server: its postmaster and every process it started (the
    connections' backends, the WAL writer, autovacuum...)."""
    return _cpu_of_children(postmaster, include_parent=True)


def _cpu_of_children(parent: int, *, include_parent: bool = False) -> float:
    """Seconds of CPU (user + system) used so far by the children of ``parent`` (and by it), from Linux /proc."""
    ticks = os.sysconf("SC_CLK_TCK")
    total = 0
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            fields = (entry / "stat").read_text().rpartition(")")[2].split()
        except OSError:
            continue
        # ppid, then utime and stime: fields 4, 14 and 15 of stat (1, 11 and 12 after the command name)
        if int(fields[1]) == parent or (include_parent and int(entry.name) == parent):
            total += int(fields[11]) + int(fields[12])
    return total / ticks


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--subjects", type=int, default=100_000)
    parser.add_argument("--events-per-subject", type=int, default=10)
    parser.add_argument("--policy-lines", type=int, default=10_000)
    parser.add_argument("--seconds", type=float, default=10.0)
    parser.add_argument("--rounds", type=int, default=3, help="interleaved rounds of bare, mix and allows-only runs")
    args = parser.parse_args()
    if args.rounds < 1:
        parser.error("--rounds must be at least 1")
    print(f"machine: {os.cpu_count()} cores")
    cluster = PostgresCluster().start()
    try:
        cluster.admin_execute("CREATE DATABASE bench")
        with tempfile.TemporaryDirectory(prefix="govsvc-bench-") as directory:
            instance = Path(directory)
            settings = Settings(
                environment="testing",
                database_url=cluster.url("bench"),
                secret_key=SECRET,
                instance_dir=str(instance),
                policy_dir=str(PROJECT_ROOT / "policies"),
                log_level="WARNING",
                audit_sequencer="off",
            )
            migrate.upgrade(settings.resolved_database_url)
            database = Database(settings.resolved_database_url)
            seed_all(database, settings, actor="bench")
            with database.transaction() as session:
                key = create_client(session, name="bench", role="app", known_roles={"app"}).api_key
            build(database, settings, args.subjects, args.events_per_subject, args.policy_lines)
            database.dispose()
            bench_in_process(settings, args.subjects, args.seconds)
            postmaster = int((cluster.data_dir / "postmaster.pid").read_text().split()[0])
            bench_http(settings, key, args.subjects, args.seconds, args.rounds, instance, postmaster)
    finally:
        cluster.stop()


if __name__ == "__main__":
    main()
