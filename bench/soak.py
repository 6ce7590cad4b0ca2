"""``make soak``: the ``make load`` mix at a reduced, steady rate for a long time (10 minutes by default) against
two instances, printing each instance's resident memory (master and workers, summed from /proc) once a minute, so
that a leak shows as a rising line. Ends with the first and last RSS and the growth.
Run: ``.venv/bin/python -m bench.soak [--minutes 10] [--rate 40] [--interval 60]``.
"""

from __future__ import annotations

import argparse
import random
import threading
import time
from pathlib import Path

from bench.cluster import Cluster
from bench.load import http_load
from bench.mix import populate, request_mix


def rss_mb(pid: int) -> float:
    """Resident memory of a process and its children (gunicorn master + workers), in MB."""
    pids = [pid]
    children = Path(f"/proc/{pid}/task/{pid}/children")
    if children.exists():
        pids += [int(child) for child in children.read_text().split()]
    total = 0
    for one in pids:
        try:
            for line in Path(f"/proc/{one}/status").read_text().splitlines():
                if line.startswith("VmRSS:"):
                    total += int(line.split()[1])
        except FileNotFoundError:
            continue
    return total / 1024


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--minutes", type=float, default=10.0)
    parser.add_argument("--rate", type=float, default=40.0, help="requests per second, in total")
    parser.add_argument("--interval", type=float, default=60.0, help="seconds between RSS lines")
    args = parser.parse_args(argv)
    with Cluster(2) as cluster:
        key = cluster.key("app")
        make = request_mix(populate(cluster.urls[0], {"Authorization": f"Bearer {key}"}, 100), key)
        pids = [server.process.pid for server in cluster.servers]
        stop = threading.Event()
        counts = {"requests": 0, "errors": 0}
        error_statuses: dict[int, int] = {}
        lock = threading.Lock()

        def paced(rng: random.Random):
            time.sleep(4 / args.rate)  # 4 connections, each at rate/4 per second (plus service time)
            return make(rng)

        def drive() -> None:
            while not stop.is_set():
                result = http_load(cluster.ports, paced, connections=4, seconds=min(args.interval, 30))
                with lock:
                    counts["requests"] += result.requests
                    counts["errors"] += result.errors
                    for status, count in result.error_statuses.items():
                        error_statuses[status] = error_statuses.get(status, 0) + count

        driver = threading.Thread(target=drive)
        driver.start()
        started = time.monotonic()
        first = None
        print(f"soak: {args.minutes:.0f} min at about {args.rate:.0f} req/s over 2 instances (2 workers each)")
        print(f"{'minute':>6} {'instance 1 MB':>14} {'instance 2 MB':>14} {'requests':>9} {'errors':>7}")
        try:
            while True:
                sizes = [rss_mb(pid) for pid in pids]
                first = first or sizes
                with lock:
                    done = dict(counts)
                minute = (time.monotonic() - started) / 60
                print(f"{minute:>6.1f} {sizes[0]:>14.1f} {sizes[1]:>14.1f} {done['requests']:>9} {done['errors']:>7}")
                if minute >= args.minutes:
                    break
                time.sleep(args.interval)
        finally:
            stop.set()
            driver.join()
        last = [rss_mb(pid) for pid in pids]
        if error_statuses:
            print(f"non-2xx by status (0: no response): {error_statuses}")
        for number, (before, after) in enumerate(zip(first, last, strict=True), start=1):
            print(f"instance {number}: {before:.1f} MB -> {after:.1f} MB ({after - before:+.1f} MB)")


if __name__ == "__main__":
    main()
