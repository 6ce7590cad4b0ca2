"""Run the real service under gunicorn on a loopback port, for tests that go through HTTP."""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import tempfile
import time
import urllib.error
import urllib.request
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from govsvc.config import PROJECT_ROOT
from tests.support.logscan import COLLECTOR

# Workers import Presidio and the NER model before they answer: on a shared 2-core machine under load that can take
# well over 30 s.
START_SECONDS = 120


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


@dataclass
class HttpResponse:
    status: int
    headers: dict[str, str]
    body: bytes

    def json(self) -> Any:
        return json.loads(self.body)


def http(method: str, url: str, *, body: Any = None, headers: dict[str, str] | None = None) -> HttpResponse:
    data = json.dumps(body).encode() if body is not None else None
    request = urllib.request.Request(url, data=data, method=method, headers=dict(headers or {}))  # noqa: S310 - loopback only
    if data is not None:
        request.add_header("Content-Type", "application/json")
    try:
        with urllib.request.urlopen(request, timeout=10) as response:  # noqa: S310 - loopback only
            return HttpResponse(response.status, dict(response.headers), response.read())
    except urllib.error.HTTPError as error:
        return HttpResponse(error.code, dict(error.headers), error.read())


def live_env(database_url: str, instance_dir: Path, **extra: str) -> dict[str, str]:
    """The environment of a production-mode instance for tests (test keys, quick start-up, warnings only)."""
    from tests.conftest import TEST_AUDIT_ORIGIN, TEST_ROOT_KEYS, TEST_SECRET_KEY

    return {
        "GOVSVC_ENV": "production",
        "GOVSVC_SECRET_KEY": TEST_SECRET_KEY,
        "GOVSVC_ROOT_KEYS": TEST_ROOT_KEYS,
        "GOVSVC_DATABASE_URL": database_url,
        "GOVSVC_INSTANCE_DIR": str(instance_dir),
        "GOVSVC_AUDIT_ORIGIN": TEST_AUDIT_ORIGIN,
        "GOVSVC_PII_NLP": "pattern",
        "GOVSVC_SCHEDULER": "off",
        "GOVSVC_LOG_LEVEL": "WARNING",
        **extra,
    }


class GunicornServer:
    """``with GunicornServer(env) as server: http("GET", server.url + "/readyz")``."""

    def __init__(
        self,
        env: dict[str, str],
        *,
        workers: int = 2,
        threads: int = 2,
        log_path: Path | None = None,
        start_timeout: float = START_SECONDS,
    ) -> None:
        self.start_timeout = start_timeout
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.env = {**os.environ, **env}
        self.workers = workers
        self.threads = threads
        self.log_path = log_path or Path(tempfile.mkstemp(prefix="govsvc-gunicorn-", suffix=".log")[1])
        COLLECTOR.add_file(self.log_path)
        self.process: subprocess.Popen[bytes] | None = None

    def __enter__(self) -> GunicornServer:
        with open(self.log_path, "ab") as log:  # the child keeps its own descriptor
            self.process = subprocess.Popen(
                [
                    sys.executable,
                    "-m",
                    "gunicorn",
                    "--bind",
                    f"127.0.0.1:{self.port}",
                    "--workers",
                    str(self.workers),
                    "--threads",
                    str(self.threads),
                    "--worker-class",
                    "gthread",
                    "wsgi:app",
                ],
                cwd=PROJECT_ROOT,
                env=self.env,
                stdout=log,
                stderr=log,
                start_new_session=True,
            )
        deadline = time.monotonic() + self.start_timeout
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                raise RuntimeError(f"gunicorn exited with {self.process.returncode}")
            try:
                if http("GET", self.url + "/healthz").status == 200:
                    return self
            except OSError:
                time.sleep(0.1)
        raise RuntimeError(f"gunicorn did not start in {self.start_timeout:.0f} s")

    def kill(self) -> None:
        """SIGKILL the master and every worker at once (a crash, not a shutdown)."""
        if self.process and self.process.poll() is None:
            os.killpg(self.process.pid, signal.SIGKILL)
            self.process.wait(timeout=15)

    def __exit__(self, *_exc: object) -> None:
        if self.process and self.process.poll() is None:
            self.process.terminate()
            try:
                self.process.wait(timeout=15)
            except subprocess.TimeoutExpired:
                self.process.kill()
