"""A small typed client for apps: decisions, consent, and applying obligations to data.

Standard library only, so an app can depend on it without pulling in the service. Retries connection failures,
timeouts and 502/503/504 with exponential backoff; consent writes carry an ``Idempotency-Key`` so a retry never
records twice. When govsvc cannot be reached, calls raise :class:`GovsvcUnavailable`: treat it as a deny.

    client = GovsvcClient("http://127.0.0.1:8000", api_key)
    decision = client.decide({"kind": "email", "value": "a@b.cn"}, "read", "essential.service", fields=["email"])
    if decision.allowed:
        shown = decision.apply({"email": "a@b.cn"})
"""

from __future__ import annotations

import hashlib
import json
import time
import urllib.error
import urllib.request
import uuid
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

RETRY_STATUSES = frozenset({502, 503, 504})
SubjectRef = Mapping[str, str] | str


class GovsvcError(Exception):
    """govsvc answered with a problem document (4xx/5xx)."""

    def __init__(self, status: int, problem: Mapping[str, Any]) -> None:
        super().__init__(f"{status} {problem.get('title', '')}: {problem.get('detail', '')}".strip())
        self.status = status
        self.problem = dict(problem)

    @property
    def type(self) -> str:
        return str(self.problem.get("type", ""))


class GovsvcUnavailable(GovsvcError):
    """govsvc could not be reached or kept failing: deny, do not proceed."""


@dataclass(frozen=True)
class Decision:
    decision_id: str
    allowed: bool
    reasons: list[dict[str, Any]]
    obligations: dict[str, str]
    subject_id: str
    purpose: str
    purpose_version: int
    raw: dict[str, Any] = field(repr=False, default_factory=dict)

    @classmethod
    def from_json(cls, body: Mapping[str, Any]) -> Decision:
        return cls(
            decision_id=body["decision_id"],
            allowed=body["decision"] == "allow",
            reasons=list(body.get("reasons", [])),
            obligations=dict(body.get("obligations", {})),
            subject_id=body["subject_id"],
            purpose=body["purpose"],
            purpose_version=int(body["purpose_version"]),
            raw=dict(body),
        )

    @property
    def reason_codes(self) -> list[str]:
        return [reason["code"] for reason in self.reasons]

    def apply(self, record: Mapping[str, Any]) -> dict[str, Any]:
        """The record as the obligations allow it to be used (nothing at all when denied)."""
        return apply_obligations(record, self.obligations) if self.allowed else {}


def mask_value(value: Any) -> Any:
    """A generic display mask: keep the first and last characters (e-mail: first letter and domain)."""
    if value is None:
        return None
    text = str(value)
    if "@" in text:
        local, _, domain = text.partition("@")
        return f"{local[:1]}***@{domain}"
    if len(text) <= 2:
        return "*" * len(text)
    keep, tail = (1, 1) if len(text) <= 10 else (3, 4)  # 13812345678 -> 138****5678
    return text[:keep] + "*" * (len(text) - keep - tail) + text[-tail:]


def tokenize_value(value: Any, salt: str = "") -> str:
    """A stable token standing for the value (for joins and counts, not for display)."""
    return "tok_" + hashlib.sha256(f"{salt}\x1f{value}".encode()).hexdigest()[:24]


def apply_obligations(record: Mapping[str, Any], obligations: Mapping[str, str], *, salt: str = "") -> dict[str, Any]:
    """Apply per-field obligations: ``show`` keeps, ``mask:*`` masks, ``tokenize`` tokenizes, anything else
    (``withhold``, or a field with no obligation) drops the field."""
    result: dict[str, Any] = {}
    for name, value in record.items():
        obligation = obligations.get(name, "withhold")
        if obligation == "show":
            result[name] = value
        elif obligation.startswith("mask:"):
            result[name] = mask_value(value)
        elif obligation == "tokenize":
            result[name] = tokenize_value(value, salt)
    return result


def _subject(subject: SubjectRef) -> dict[str, str]:
    return {"subject_id": subject} if isinstance(subject, str) else dict(subject)


class GovsvcClient:
    """Calls the govsvc API with an API key."""

    def __init__(
        self,
        base_url: str,
        api_key: str,
        *,
        timeout: float = 2.0,
        retries: int = 2,
        backoff: float = 0.05,
    ) -> None:
        self.base_url = base_url.rstrip("/")
        self._api_key = api_key
        self.timeout = timeout
        self.retries = retries
        self.backoff = backoff

    def __repr__(self) -> str:  # never shows the key
        return f"GovsvcClient({self.base_url!r})"

    def request(
        self, method: str, path: str, body: Any = None, *, headers: Mapping[str, str] | None = None
    ) -> dict[str, Any]:
        """One API call with retries; returns the JSON body or raises GovsvcError/GovsvcUnavailable."""
        data = json.dumps(body).encode() if body is not None else None
        all_headers = {"Authorization": f"Bearer {self._api_key}", "Accept": "application/json", **(headers or {})}
        if data is not None:
            all_headers["Content-Type"] = "application/json"
        last: GovsvcError | None = None
        for attempt in range(self.retries + 1):
            if attempt:
                time.sleep(self.backoff * 2 ** (attempt - 1))
            request = urllib.request.Request(self.base_url + path, data=data, method=method, headers=all_headers)  # noqa: S310
            try:
                with urllib.request.urlopen(request, timeout=self.timeout) as response:  # noqa: S310
                    return json.loads(response.read() or b"{}")
            except urllib.error.HTTPError as error:
                problem = _problem(error)
                if error.code not in RETRY_STATUSES:
                    raise GovsvcError(error.code, problem) from None
                last = GovsvcUnavailable(error.code, problem)
            except (urllib.error.URLError, TimeoutError, ConnectionError) as error:
                last = GovsvcUnavailable(0, {"title": "govsvc unreachable", "detail": str(error)})
        assert last is not None
        raise last

    # -- decisions ---------------------------------------------------------------------------------------------

    def decide(
        self,
        subject: SubjectRef,
        action: str,
        purpose: str,
        *,
        fields: Sequence[str] = (),
        data_categories: Sequence[str] = (),
        purpose_version: int | None = None,
        recipient: str | None = None,
        destination_country: str | None = None,
        acting_for: Mapping[str, Any] | None = None,
    ) -> Decision:
        """Ask whether an action on a person's data is allowed, and with which obligations."""
        body = _check(
            subject,
            action,
            purpose,
            fields,
            data_categories,
            purpose_version,
            recipient,
            destination_country,
            acting_for,
        )
        return Decision.from_json(self.request("POST", "/v1/decisions", body))

    def decide_batch(self, checks: Iterable[Mapping[str, Any]]) -> list[Decision | GovsvcError]:
        """Up to 1,000 checks (dicts with the arguments of :meth:`decide`) in one call."""
        body = {
            "checks": [
                _check(
                    c["subject"],
                    c["action"],
                    c["purpose"],
                    c.get("fields", ()),
                    c.get("data_categories", ()),
                    c.get("purpose_version"),
                    c.get("recipient"),
                    c.get("destination_country"),
                    c.get("acting_for"),
                )
                for c in checks
            ]
        }
        results = self.request("POST", "/v1/decisions:batch", body)["results"]
        return [
            Decision.from_json(r["decision"]) if r["decision"] else GovsvcError(r["error"]["status"], r["error"])
            for r in results
        ]

    # -- consent -----------------------------------------------------------------------------------------------

    def record_consent(
        self,
        subject: SubjectRef,
        event: str,
        purposes: Sequence[str | Mapping[str, Any]],
        *,
        channel: str,
        consent_type: str | None = None,
        notice: Mapping[str, str] | None = None,
        actor: str = "subject",
        gpc: bool = False,
        idempotency_key: str | None = None,
    ) -> dict[str, Any]:
        """Give, refuse, withdraw or renew consent in one act (safe to retry)."""
        items = [{"purpose": p} if isinstance(p, str) else dict(p) for p in purposes]
        body: dict[str, Any] = {
            "subject": _subject(subject),
            "event": event,
            "items": items,
            "channel": channel,
            "actor": actor,
        }
        if consent_type:
            body["consent_type"] = consent_type
        if notice:
            body["notice"] = dict(notice)
        headers = {"Idempotency-Key": idempotency_key or uuid.uuid4().hex}
        if gpc:
            headers["Sec-GPC"] = "1"
        return self.request("POST", "/v1/consents", body, headers=headers)

    def give_consent(
        self, subject: SubjectRef, purposes: Sequence[str | Mapping[str, Any]], **kwargs: Any
    ) -> dict[str, Any]:
        return self.record_consent(subject, "given", purposes, **kwargs)

    def withdraw_consent(
        self, subject: SubjectRef, purposes: Sequence[str | Mapping[str, Any]], **kwargs: Any
    ) -> dict[str, Any]:
        """Withdraw: the same call as giving, no reason needed."""
        return self.record_consent(subject, "withdrawn", purposes, **kwargs)

    def consents(self, subject_id: str) -> list[dict[str, Any]]:
        return self.request("GET", f"/v1/subjects/{subject_id}/consents")["consents"]

    def receipt_keys(self) -> dict[str, Any]:
        return self.request("GET", "/.well-known/govsvc/consent-receipt-keys")


def _check(
    subject: SubjectRef,
    action: str,
    purpose: str,
    fields: Sequence[str],
    data_categories: Sequence[str],
    purpose_version: int | None,
    recipient: str | None,
    destination_country: str | None,
    acting_for: Mapping[str, Any] | None,
) -> dict[str, Any]:
    body: dict[str, Any] = {
        "subject": _subject(subject),
        "action": action,
        "purpose": purpose,
        "fields": list(fields),
        "data_categories": list(data_categories),
    }
    for name, value in (
        ("purpose_version", purpose_version),
        ("recipient", recipient),
        ("destination_country", destination_country),
        ("acting_for", acting_for),
    ):
        if value is not None:
            body[name] = dict(value) if isinstance(value, Mapping) else value
    return body


def _problem(error: urllib.error.HTTPError) -> dict[str, Any]:
    try:
        body = json.loads(error.read() or b"{}")
    except ValueError:
        body = {}
    return body if isinstance(body, dict) else {}
