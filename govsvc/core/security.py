"""Response security headers on every response, and the limit on failed API-key authentications per address.

Headers: ``X-Content-Type-Options: nosniff``, ``Referrer-Policy: no-referrer``, ``X-Frame-Options: DENY`` and a
Content-Security-Policy that forbids framing (``frame-ancestors 'none'``; API responses load nothing at all), plus
``Strict-Transport-Security`` outside development. The admin UI sets its own stricter page policy first; these
only fill in what a response lacks.

Failed bearer keys are counted per client address in a sliding window in each process: past
``GOVSVC_API_AUTH_MAX_FAILURES`` within ``GOVSVC_API_AUTH_WINDOW_SECONDS`` the address gets 429 ``rate-limited``
(with ``Retry-After``) for every bearer request, valid key or not, until its failures age out of the window. With N
instances an address can try N times the limit; keys carry 256 random bits, so the limit is about noise and load,
not about guessing.
"""

from __future__ import annotations

import threading
import time
from collections import OrderedDict, deque

from flask import Flask, Response

API_CONTENT_SECURITY_POLICY = "default-src 'none'; frame-ancestors 'none'; base-uri 'none'; form-action 'none'"
HSTS = "max-age=31536000; includeSubDomains"


def init_security_headers(app: Flask, *, hsts: bool) -> None:
    """Fill in the security headers on every response (after the admin UI's own)."""

    defaults = [
        ("Content-Security-Policy", API_CONTENT_SECURITY_POLICY),
        ("X-Content-Type-Options", "nosniff"),
        ("X-Frame-Options", "DENY"),
        ("Referrer-Policy", "no-referrer"),
    ] + ([("Strict-Transport-Security", HSTS)] if hsts else [])

    @app.after_request
    def _security_headers(response: Response) -> Response:
        headers = response.headers
        present = {name.lower() for name, _value in headers.to_wsgi_list()}  # one pass, not one per default
        headers.extend([(name, value) for name, value in defaults if name.lower() not in present])
        return response


class FailureLimiter:
    """Failures per key (a client address) in a sliding window; thread-safe, bounded in memory."""

    def __init__(self, max_failures: int, window_seconds: float, *, max_keys: int = 100_000) -> None:
        self.max_failures, self.window = max_failures, window_seconds
        self._failures: OrderedDict[str, deque[float]] = OrderedDict()
        self._max_keys = max_keys
        self._lock = threading.Lock()

    def _recent(self, key: str, now: float) -> deque[float] | None:
        failures = self._failures.get(key)
        if failures is None:
            return None
        while failures and failures[0] <= now - self.window:
            failures.popleft()
        if not failures:
            del self._failures[key]
            return None
        return failures

    def retry_after(self, key: str) -> int | None:
        """Seconds until ``key`` may try again, or None when it is under the limit."""
        now = time.monotonic()
        with self._lock:
            failures = self._recent(key, now)
            if failures is None or len(failures) < self.max_failures:
                return None
            return max(1, int(failures[-self.max_failures] + self.window - now) + 1)

    def failed(self, key: str) -> None:
        now = time.monotonic()
        with self._lock:
            failures = self._recent(key, now)
            if failures is None:
                failures = self._failures[key] = deque(maxlen=self.max_failures)
                while len(self._failures) > self._max_keys:
                    self._failures.popitem(last=False)
            failures.append(now)
            self._failures.move_to_end(key)
