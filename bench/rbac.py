"""Hot path of every request: API-key authentication plus the casbin RBAC check.

Prints, measured in the same run:
1. casbin checks at 1,000 and 10,000 policy lines: stock ``Enforcer.enforce()`` (baseline), ``FastEnforcer`` indexed
   on (resource, action), and govsvc's ``PolicyEngine`` (FastEnforcer + a cache keyed on the policy version);
2. in-process requests through the Flask app: the bare ``/healthz`` endpoint (baseline) versus ``/v1/me``
   (authenticate the key, check the policy version, enforce), on SQLite;
3. over HTTP under gunicorn (2 workers x 4 threads) on loopback, same two endpoints, a keep-alive client pool.

Run: ``make bench`` or ``.venv/bin/python -m bench.rbac``. Figures only; nothing is asserted.
"""

from __future__ import annotations

import os
import statistics
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

import casbin
from casbin.model import FastModel

from bench.load import get, http_load
from govsvc import create_app
from govsvc.config import PROJECT_ROOT, Settings
from govsvc.core import migrate
from govsvc.core.db import Database
from govsvc.policy.service import PolicyEngine, parse_policy_csv, seed_policy, write_policy

POLICY_DIR = PROJECT_ROOT / "policies"
MODEL_TEXT = (POLICY_DIR / "model.conf").read_text()


def _timeit(function: Callable[[], object], *, seconds: float = 1.0) -> tuple[float, float, float]:
    """(median µs, p99 µs, calls/s) of repeated single calls."""
    samples: list[float] = []
    deadline = time.perf_counter() + seconds
    while time.perf_counter() < deadline:
        start = time.perf_counter()
        function()
        samples.append((time.perf_counter() - start) * 1e6)
    samples.sort()
    return statistics.median(samples), samples[int(len(samples) * 0.99) - 1], len(samples) / seconds


def _policy_lines(count: int) -> str:
    roles = ["admin", "compliance_officer", "dpo", "legal", "auditor", "app", "support_agent", "analyst"]
    lines = [f"p, {roles[i % len(roles)]}, resource{i // 4}, action{i % 4}" for i in range(count - 1)]
    lines.append("p, app, self, read")
    return "\n".join(lines) + "\n"


def bench_casbin(database_url: str) -> None:
    print("\n== casbin check: may role 'app' read 'self'? (the last policy line) ==")
    print(f"{'lines':>7} {'variant':<38} {'median µs':>10} {'p99 µs':>9} {'checks/s':>11} {'vs stock':>9}")
    for count in (1_000, 10_000):
        text = _policy_lines(count)
        lines = parse_policy_csv(text)
        stock_model = casbin.Model()
        stock_model.load_model_from_text(MODEL_TEXT)
        stock = casbin.Enforcer(stock_model)
        fast_model = FastModel([1, 2])
        fast_model.load_model_from_text(MODEL_TEXT)
        fast = casbin.FastEnforcer(fast_model, cache_key_order=[1, 2])
        for line in lines:
            stock.add_named_policy("p", list(line.values))
            fast.add_named_policy("p", list(line.values))
        database = Database(database_url)
        with database.engine.begin() as connection:
            write_policy(connection, MODEL_TEXT, lines, actor="bench")
        engine = PolicyEngine(POLICY_DIR)
        with database.transaction() as session:
            engine.ensure_current(session)
        database.dispose()
        baseline = _timeit(lambda e=stock: e.enforce("app", "self", "read"), seconds=0.5 if count > 1000 else 1.0)
        rows = [
            ("Enforcer.enforce() (baseline)", baseline),
            ("FastEnforcer (resource, action)", _timeit(lambda e=fast: e.enforce("app", "self", "read"))),
            ("govsvc PolicyEngine.is_allowed (cached)", _timeit(lambda e=engine: e.is_allowed("app", "self", "read"))),
        ]
        for name, (median, p99, rate) in rows:
            print(f"{count:>7} {name:<38} {median:>10.1f} {p99:>9.1f} {rate:>11,.0f} {baseline[0] / median:>8.0f}x")


def bench_in_process(settings: Settings, key: str) -> None:
    print("\n== in-process request through the Flask app (SQLite) ==")
    app = create_app(settings)
    client = app.test_client()
    headers = {"Authorization": f"Bearer {key}"}
    assert client.get("/v1/me", headers=headers).status_code == 200
    bare = _timeit(lambda: client.get("/healthz"))
    guarded = _timeit(lambda: client.get("/v1/me", headers=headers))
    print(f"{'endpoint':<42} {'median µs':>10} {'p99 µs':>9} {'req/s':>8}")
    print(f"{'GET /healthz (bare, baseline)':<42} {bare[0]:>10.0f} {bare[1]:>9.0f} {bare[2]:>8,.0f}")
    print(
        f"{'GET /v1/me (key + policy version + RBAC)':<42} {guarded[0]:>10.0f} {guarded[1]:>9.0f} {guarded[2]:>8,.0f}"
    )
    print(f"ratio guarded/bare throughput: {guarded[2] / bare[2]:.2f}")
    app.extensions["govsvc.db"].dispose()


def bench_http(settings: Settings, key: str, instance: Path) -> None:
    from tests.support.server import GunicornServer

    print("\n== over HTTP: gunicorn 2 workers x 4 threads, SQLite, 8 keep-alive connections, 5 s each ==")
    print("(client and server share the same 2 cores: figures are lower bounds)")
    env = {
        "GOVSVC_DATABASE_URL": settings.resolved_database_url,
        "GOVSVC_INSTANCE_DIR": str(instance),
        "GOVSVC_LOG_LEVEL": "WARNING",
    }
    with GunicornServer(env) as server:
        port = server.port
        http_load(port, get("/healthz"), connections=8, seconds=1)  # warm-up
        bare = http_load(port, get("/healthz"), connections=8, seconds=5)
        guarded = http_load(port, get("/v1/me", {"Authorization": f"Bearer {key}"}), connections=8, seconds=5)
    print(f"{'endpoint':<42} {'req/s':>8} {'p50 ms':>7} {'p99 ms':>7} {'errors':>7}")
    for name, result in (("GET /healthz (bare, baseline)", bare), ("GET /v1/me (guarded)", guarded)):
        print(f"{name:<42} {result.rate:>8,.0f} {result.p50_ms:>7.1f} {result.p99_ms:>7.1f} {result.errors:>7}")
    print(f"ratio guarded/bare throughput: {guarded.rate / bare.rate:.2f}")


def main() -> None:
    from govsvc.auth.service import create_client

    print(f"machine: {os.cpu_count()} cores")
    with tempfile.TemporaryDirectory(prefix="govsvc-bench-") as directory:
        instance = Path(directory)
        settings = Settings(environment="testing", instance_dir=str(instance), log_level="WARNING")
        url = settings.resolved_database_url
        migrate.upgrade(url)
        database = Database(url)
        seed_policy(database.engine, POLICY_DIR)
        with database.transaction() as session:
            key = create_client(session, name="bench", role="app", known_roles={"app"}).api_key
        database.dispose()
        bench_in_process(settings, key)
        bench_http(settings, key, instance)
        bench_casbin(url)


if __name__ == "__main__":
    main()
