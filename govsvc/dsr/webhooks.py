"""Signed HTTP calls to apps (DSR webhook connectors) and OpenDSR callback receivers, with retries and back-off.

A call is ``POST <url>`` with a JSON body and these headers:

- ``X-Govsvc-Signature: t=<unix time>,v1=<hex HMAC-SHA256(secret, "<t>.<raw body>")>``: the receiver recomputes it
  over the raw body with the shared secret, compares in constant time and refuses a timestamp older than 5 minutes;
- ``X-Govsvc-Delivery``: the same id on every retry of one call, so that the receiver can act once;
- ``X-Govsvc-Operation``: collect, erase, rectify, restrict or notify.

Connection errors, timeouts, 408, 425, 429 and 5xx are retried with exponential back-off and jitter (``Retry-After``
honoured up to the cap); other 4xx fail at once. Responses are capped in size.
"""

from __future__ import annotations

import hashlib
import hmac
import json
import random
import time
import urllib.error
import urllib.request
import uuid
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any
from urllib.parse import urlsplit

from govsvc.core.errors import ValidationFailed

SIGNATURE_HEADER = "X-Govsvc-Signature"
DELIVERY_HEADER = "X-Govsvc-Delivery"
OPERATION_HEADER = "X-Govsvc-Operation"
RETRYABLE = frozenset({408, 425, 429, 500, 502, 503, 504})
MAX_RESPONSE_BYTES = 16 * 1024 * 1024
SIGNATURE_TOLERANCE_SECONDS = 300


def check_url(url: str) -> str:
    """An http(s) URL with a host; the only kind a connector may call."""
    parts = urlsplit(url)
    if parts.scheme not in ("http", "https") or not parts.hostname or len(url) > 500:
        raise ValidationFailed("The URL must be http(s) with a host.", errors=[{"field": "url", "message": "http(s)"}])
    return url


def sign(secret: bytes, body: bytes, timestamp: int | None = None) -> str:
    """The signature header value of ``body``."""
    timestamp = int(time.time()) if timestamp is None else timestamp
    mac = hmac.new(secret, f"{timestamp}.".encode() + body, hashlib.sha256).hexdigest()
    return f"t={timestamp},v1={mac}"


def verify_signature(secret: bytes, body: bytes, header: str, *, now: float | None = None) -> bool:
    """What a receiver does: recompute over the raw body, compare in constant time, refuse stale timestamps."""
    try:
        parts = dict(item.split("=", 1) for item in header.split(","))
        timestamp = int(parts["t"])
    except (ValueError, KeyError):
        return False
    if abs((now or time.time()) - timestamp) > SIGNATURE_TOLERANCE_SECONDS:
        return False
    expected = hmac.new(secret, f"{timestamp}.".encode() + body, hashlib.sha256).hexdigest()
    return hmac.compare_digest(expected, parts.get("v1", ""))


class WebhookError(Exception):
    """A call that failed for good (after its retries, or with a non-retryable answer)."""

    def __init__(self, message: str, *, status: int | None = None, attempts: int = 0) -> None:
        super().__init__(message)
        self.status = status
        self.attempts = attempts


@dataclass(frozen=True)
class Reply:
    status: int
    body: Any
    attempts: int


@dataclass(frozen=True)
class RetryPolicy:
    max_attempts: int = 4
    base_delay: float = 0.25
    max_delay: float = 4.0
    timeout: float = 10.0

    def delay(self, attempt: int, retry_after: str | None) -> float:
        """Seconds to wait before attempt ``attempt + 1``: exponential with full jitter, or Retry-After."""
        if retry_after is not None:
            try:
                return min(float(retry_after), self.max_delay)
            except ValueError:
                pass
        return random.uniform(0, min(self.max_delay, self.base_delay * 2 ** (attempt - 1)))


def post_json(
    url: str,
    payload: Mapping[str, Any],
    *,
    headers: Mapping[str, str],
    sign_body: Callable[[bytes], Mapping[str, str]],
    policy: RetryPolicy,
    sleep: Callable[[float], None] = time.sleep,
) -> Reply:
    """POST ``payload`` with retries; the signature is computed per attempt (fresh timestamp). Raises WebhookError."""
    body = json.dumps(payload, ensure_ascii=False, separators=(",", ":"), default=str).encode()
    delivery = uuid.uuid4().hex
    last_error = "no attempt"
    status: int | None = None
    for attempt in range(1, policy.max_attempts + 1):
        request = urllib.request.Request(url, data=body, method="POST")  # noqa: S310 - http(s) checked at registration
        request.add_header("Content-Type", "application/json")
        request.add_header(DELIVERY_HEADER, delivery)
        for name, value in {**headers, **sign_body(body)}.items():
            request.add_header(name, value)
        retry_after = None
        try:
            with urllib.request.urlopen(request, timeout=policy.timeout) as response:  # noqa: S310
                raw = response.read(MAX_RESPONSE_BYTES + 1)
                if len(raw) > MAX_RESPONSE_BYTES:
                    raise WebhookError("the response is too large", status=response.status, attempts=attempt)
                try:
                    parsed = json.loads(raw) if raw.strip() else {}
                except ValueError:
                    raise WebhookError("the response is not JSON", status=response.status, attempts=attempt) from None
                return Reply(response.status, parsed, attempt)
        except urllib.error.HTTPError as error:
            status = error.code
            last_error = f"HTTP {error.code}"
            retry_after = error.headers.get("Retry-After") if error.headers else None
            error.close()
            if error.code not in RETRYABLE:
                raise WebhookError(last_error, status=error.code, attempts=attempt) from None
        except (urllib.error.URLError, TimeoutError, ConnectionError, OSError) as error:
            last_error = type(getattr(error, "reason", error)).__name__
            status = None
        if attempt < policy.max_attempts:
            sleep(policy.delay(attempt, retry_after))
    raise WebhookError(
        f"{last_error} after {policy.max_attempts} attempts", status=status, attempts=policy.max_attempts
    )
