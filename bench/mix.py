"""``make load``: a realistic request mix against gunicorn on loopback over PostgreSQL, for 1 and 2 instances.

The mix: 80 % decisions (half on a consented purpose, half on one without consent), 10 % consent writes, 5 % PII
analysis of a short mixed-language service note, 5 % profile vault reads, over 200 subjects made through the API
first (each with a profile and an SMS consent). Each instance is gunicorn with 2 workers x 4 threads; the load
client shares the machine. Prints throughput, p50/p99 and the error rate (non-2xx or no answer) per run, and the
2-instance/1-instance ratio (the baseline measured in the same run).
Run: ``.venv/bin/python -m bench.mix [--seconds 20] [--connections 16] [--instances 1 2]``.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import random
import time

from bench.cluster import Cluster
from bench.load import LoadResult, http_load
from tests.support.server import http

NOTICE = {"id": "pn", "version": "1", "sha256": hashlib.sha256(b"n").hexdigest(), "language": "zh-CN"}
NOTE = "客户张伟来电, 手机 13812345678, asked to change the delivery address to 上海市浦东新区世纪大道100号."


def populate(url: str, headers: dict[str, str], subjects: int) -> list[str]:
    """Subjects with a vault profile and an SMS consent each, through the API."""
    made = []
    for number in range(subjects):
        body = {"identifiers": [{"kind": "crm_id", "value": f"L-{number}", "system": "crm"}], "jurisdictions": ["pipl"]}
        subject = http("POST", url + "/v1/subjects", body=body, headers=headers).json()["subject_id"]
        profile = {"fields": {"name": "张伟", "mobile": f"+86138{number:08d}", "email": f"u{number}@example.cn"}}
        assert http("PUT", url + f"/v1/vault/subjects/{subject}/profile", body=profile, headers=headers).status < 300
        act = {
            "subject": {"subject_id": subject},
            "event": "given",
            "channel": "app",
            "actor": "subject",
            "items": [{"purpose": "marketing.communications.sms", "scope": ""}],
            "consent_type": "express",
            "notice": NOTICE,
        }
        assert http("POST", url + "/v1/consents", body=act, headers=headers).status == 201
        made.append(subject)
    return made


def request_mix(subjects: list[str], key: str):
    auth = {"Authorization": f"Bearer {key}", "Content-Type": "application/json"}

    def make(rng: random.Random):
        subject = rng.choice(subjects)
        roll = rng.random()
        if roll < 0.80:
            purpose, field = rng.choice(
                [("marketing.communications.sms", "mobile"), ("marketing.communications.email", "email")]
            )
            body = {"subject": {"subject_id": subject}, "action": "read", "purpose": purpose, "fields": [field]}
            return "POST", "/v1/decisions", json.dumps(body), auth
        if roll < 0.90:
            act = {
                "subject": {"subject_id": subject},
                "event": "given",
                "channel": "app",
                "actor": "subject",
                "items": [{"purpose": "marketing.communications.sms", "scope": ""}],
                "consent_type": "express",
                "notice": NOTICE,
            }
            return "POST", "/v1/consents", json.dumps(act), auth
        if roll < 0.95:
            return "POST", "/v1/pii/analyze", json.dumps({"text": NOTE}), auth
        return (
            "GET",
            f"/v1/vault/subjects/{subject}/profile?purpose=essential.service",
            None,
            {"Authorization": auth["Authorization"]},
        )

    return make


def run(instances: int, seconds: float, connections: int, subjects: int) -> LoadResult:
    with Cluster(instances) as cluster:
        key = cluster.key("app")
        made = populate(cluster.urls[0], {"Authorization": f"Bearer {key}"}, subjects)
        make = request_mix(made, key)
        http_load(cluster.ports, make, connections=connections, seconds=3)  # warm every worker
        return http_load(cluster.ports, make, connections=connections, seconds=seconds)


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seconds", type=float, default=20.0)
    parser.add_argument("--connections", type=int, default=16)
    parser.add_argument("--subjects", type=int, default=200)
    parser.add_argument("--instances", type=int, nargs="+", default=[1, 2])
    args = parser.parse_args(argv)
    print(f"machine: {os.cpu_count()} cores; mix 80% decisions, 10% consent writes, 5% PII analysis, 5% vault reads")
    print(f"{args.connections} keep-alive connections, {args.seconds:.0f} s per run, gunicorn 2 workers x 4 threads")
    print(f"{'instances':>9} {'req/s':>8} {'p50 ms':>7} {'p99 ms':>7} {'requests':>9} {'errors':>7} {'error %':>8}")
    results = {}
    for instances in args.instances:
        started = time.monotonic()
        result = results[instances] = run(instances, args.seconds, args.connections, args.subjects)
        error_rate = 100 * result.errors / max(result.requests + result.errors, 1)
        print(
            f"{instances:>9} {result.rate:>8,.0f} {result.p50_ms:>7.1f} {result.p99_ms:>7.1f} "
            f"{result.requests:>9} {result.errors:>7} {error_rate:>7.2f}%   ({time.monotonic() - started:.0f} s)"
            + (f"  non-2xx by status: {result.error_statuses}" if result.error_statuses else "")
        )
    if 1 in results and 2 in results and results[1].rate:
        print(f"ratio 2 instances / 1 instance: {results[2].rate / results[1].rate:.2f} (same machine, same cores)")


if __name__ == "__main__":
    main()
