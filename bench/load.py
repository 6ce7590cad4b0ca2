"""A bounded HTTP load on loopback: keep-alive connections in threads, latencies and errors collected."""

from __future__ import annotations

import http.client
import random
import statistics
import threading
import time
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass, field

# (method, path, body, headers) for the next request, drawn with the connection's own random generator
MakeRequest = Callable[[random.Random], tuple[str, str, str | None, dict[str, str]]]


@dataclass(frozen=True)
class LoadResult:
    rate: float  # requests per second
    p50_ms: float
    p99_ms: float
    requests: int
    errors: int  # responses other than 2xx, and requests that got no response
    error_statuses: dict[int, int] = field(default_factory=dict)  # status -> count (0: no response)


def http_load(port: int | list[int], make_request: MakeRequest, *, connections: int, seconds: float) -> LoadResult:
    """Send requests to 127.0.0.1:port (connections spread over several ports) from ``connections`` threads for
    ``seconds``; stops by itself."""
    ports = [port] if isinstance(port, int) else list(port)
    latencies: list[float] = []
    errors = 0
    statuses: Counter[int] = Counter()
    lock = threading.Lock()
    deadline = time.perf_counter() + seconds

    def worker(seed: int) -> None:
        nonlocal errors
        rng = random.Random(seed)
        connection = http.client.HTTPConnection("127.0.0.1", ports[seed % len(ports)], timeout=30)
        mine, failed, bad = [], 0, Counter()
        while time.perf_counter() < deadline:
            method, path, body, headers = make_request(rng)
            start = time.perf_counter()
            try:
                connection.request(method, path, body=body, headers=headers)
                response = connection.getresponse()
                response.read()
            except (OSError, http.client.HTTPException):
                connection.close()  # reconnects at the next request
                failed += 1
                bad[0] += 1
                continue
            mine.append((time.perf_counter() - start) * 1000)
            if not 200 <= response.status < 300:
                failed += 1
                bad[response.status] += 1
        connection.close()
        with lock:
            latencies.extend(mine)
            errors += failed
            statuses.update(bad)

    threads = [threading.Thread(target=worker, args=(number,)) for number in range(connections)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    latencies.sort()
    if not latencies:
        return LoadResult(0.0, 0.0, 0.0, 0, errors, dict(statuses))
    p99 = latencies[max(int(len(latencies) * 0.99) - 1, 0)]
    return LoadResult(
        len(latencies) / seconds, statistics.median(latencies), p99, len(latencies), errors, dict(statuses)
    )


def get(path: str, headers: dict[str, str] | None = None) -> MakeRequest:
    """The same GET every time."""
    return lambda _rng: ("GET", path, None, dict(headers or {}))
