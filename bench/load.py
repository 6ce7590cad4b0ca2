"""A bounded HTTP load on loopback: keep-alive connections, latencies and errors collected.

The connections are spread over one process per core, each an asyncio loop over raw HTTP/1.1: a client that
needs little CPU (it shares the cores with the server) and whose latencies do not include waiting for its own GIL,
as 32 threads of one Python process would (that queueing showed as milliseconds on the p99 of any endpoint).

Two modes. Closed loop (the default): each connection sends its next request as soon as the last one answered, so
the server runs saturated and latency is mostly queueing (mean latency = connections / throughput). Open loop
(``rate``): each connection sends on a fixed schedule, together ``rate`` requests/s, and a latency is counted from
the moment the request was due, not from when it went out: a server that falls behind is charged for the wait
(no "coordinated omission"), which is what a caller sending at that rate would see.
"""

from __future__ import annotations

import asyncio
import multiprocessing
import os
import random
import statistics
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
    steal: float = 0.0  # share of the machine's CPU time the hypervisor gave to others during the run (0 to 1)


def cpu_ticks() -> tuple[int, int]:
    """(steal, total) CPU ticks of the whole machine so far (Linux ``/proc/stat``; zeros elsewhere). On a shared
    virtual machine, steal is the time our cores were runnable but the host ran someone else."""
    try:
        with open("/proc/stat") as stat:
            values = [int(value) for value in stat.readline().split()[1:]]
    except (OSError, ValueError):
        return 0, 0
    return (values[7] if len(values) > 7 else 0), sum(values[:8])


def steal_between(before: tuple[int, int], after: tuple[int, int]) -> float:
    """The share of CPU time stolen between two ``cpu_ticks()`` readings."""
    total = after[1] - before[1]
    return (after[0] - before[0]) / total if total > 0 else 0.0


def _encode(method: str, path: str, body: str | None, headers: dict[str, str]) -> bytes:
    payload = body.encode() if body is not None else b""
    lines = [f"{method} {path} HTTP/1.1", "Host: 127.0.0.1"]
    lines += [f"{name}: {value}" for name, value in headers.items()]
    if body is not None or method in ("POST", "PUT", "PATCH"):
        lines.append(f"Content-Length: {len(payload)}")
    return ("\r\n".join(lines) + "\r\n\r\n").encode() + payload


async def _response(reader: asyncio.StreamReader) -> tuple[int, bool]:
    """Read one response; its status and whether the server keeps the connection open."""
    status_line = await reader.readline()
    if not status_line:
        raise ConnectionError("connection closed")
    status = int(status_line.split(b" ", 2)[1])
    length, chunked, keep = 0, False, True
    while True:
        line = await reader.readline()
        if line in (b"\r\n", b"\n", b""):
            break
        name, _, value = line.partition(b":")
        name = name.strip().lower()
        if name == b"content-length":
            length = int(value)
        elif name == b"transfer-encoding" and b"chunked" in value.lower():
            chunked = True
        elif name == b"connection" and b"close" in value.lower():
            keep = False
    if chunked:
        while True:
            size = int((await reader.readline()).split(b";")[0], 16)
            await reader.readexactly(size + 2)
            if size == 0:
                break
    elif length:
        await reader.readexactly(length)
    return status, keep


async def _connection(
    port: int, make_request: MakeRequest, seed: int, deadline: float, out: dict, interval: float | None
) -> None:
    rng = random.Random(seed)
    connection: tuple[asyncio.StreamReader, asyncio.StreamWriter] | None = None
    due = time.perf_counter() + (rng.random() * interval if interval else 0.0)  # spread the connections' phases
    while time.perf_counter() < deadline:
        request = _encode(*make_request(rng))
        if interval is not None:  # open loop: wait for this request's slot, and count latency from it
            now = time.perf_counter()
            if due > now:
                await asyncio.sleep(due - now)
            if due >= deadline:
                break
            start = due
            due += interval
        else:
            start = time.perf_counter()
        try:
            if connection is None:
                connection = await asyncio.open_connection("127.0.0.1", port)
            reader, writer = connection
            writer.write(request)
            status, keep = await asyncio.wait_for(_response(reader), timeout=30)
        except (OSError, ConnectionError, ValueError, IndexError, asyncio.IncompleteReadError, TimeoutError):
            if connection is not None:
                connection[1].close()
            connection = None  # reconnects at the next request
            out["errors"] += 1
            out["statuses"][0] += 1
            continue
        out["latencies"].append((time.perf_counter() - start) * 1000)
        if not 200 <= status < 300:
            out["errors"] += 1
            out["statuses"][status] += 1
        if not keep:
            connection[1].close()
            connection = None
    if connection is not None:
        connection[1].close()


def _process(
    ports: list[int], make_request: MakeRequest, seeds: list[int], deadline: float, interval: float | None, results
) -> None:
    out = {"latencies": [], "errors": 0, "statuses": Counter()}

    async def run() -> None:
        await asyncio.gather(
            *(_connection(ports[seed % len(ports)], make_request, seed, deadline, out, interval) for seed in seeds)
        )

    asyncio.run(run())
    results.put((out["latencies"], out["errors"], dict(out["statuses"])))


def http_load(
    port: int | list[int],
    make_request: MakeRequest,
    *,
    connections: int,
    seconds: float,
    rate: float | None = None,
) -> LoadResult:
    """Send requests to 127.0.0.1:port (connections spread over several ports) over ``connections`` keep-alive
    connections for ``seconds``, from one process per core; stops by itself. With ``rate``, open loop: the
    connections together offer ``rate`` requests/s and latencies count from when each request was due."""
    interval = connections / rate if rate else None
    ports = [port] if isinstance(port, int) else list(port)
    processes = max(1, min(connections, os.cpu_count() or 1))
    context = multiprocessing.get_context("fork")  # make_request may be a closure: inherited, not pickled
    results = context.Queue()
    deadline = time.perf_counter() + seconds  # CLOCK_MONOTONIC: the same clock in every process
    ticks_before = cpu_ticks()
    workers = [
        context.Process(
            target=_process,
            args=(ports, make_request, list(range(number, connections, processes)), deadline, interval, results),
        )
        for number in range(processes)
    ]
    for worker in workers:
        worker.start()
    latencies: list[float] = []
    errors = 0
    statuses: Counter[int] = Counter()
    for _ in workers:
        mine, failed, bad = results.get()
        latencies.extend(mine)
        errors += failed
        statuses.update(bad)
    for worker in workers:
        worker.join()
    steal = steal_between(ticks_before, cpu_ticks())
    latencies.sort()
    if not latencies:
        return LoadResult(0.0, 0.0, 0.0, 0, errors, dict(statuses), steal)
    p99 = latencies[max(int(len(latencies) * 0.99) - 1, 0)]
    return LoadResult(
        len(latencies) / seconds, statistics.median(latencies), p99, len(latencies), errors, dict(statuses), steal
    )


def get(path: str, headers: dict[str, str] | None = None) -> MakeRequest:
    """The same GET every time."""
    return lambda _rng: ("GET", path, None, dict(headers or {}))
