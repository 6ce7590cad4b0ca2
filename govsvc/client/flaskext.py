"""A Flask decorator for apps: ask govsvc before a view touches a person's data, then apply the obligations.

    @app.get("/customers/<customer_id>")
    @require_decision(client, purpose="essential.service.operations.support", action="read",
                      fields=["name", "mobile", "email"],
                      subject=lambda: {"kind": "crm_id", "value": request.view_args["customer_id"], "system": "crm"})
    def show_customer(customer_id):
        return load_customer(customer_id)          # a dict; fields the decision withholds are dropped

A deny becomes a 403 problem document naming the reasons; an unreachable govsvc becomes a 503 (fail closed).
The decision is available to the view as ``flask.g.govsvc_decision``.
"""

from __future__ import annotations

import functools
from collections.abc import Callable, Mapping, Sequence
from typing import Any, TypeVar

from flask import Response, g, jsonify

from govsvc.client import GovsvcClient, GovsvcError, GovsvcUnavailable, SubjectRef

F = TypeVar("F", bound=Callable[..., Any])


def _problem(status: int, title: str, detail: str, **extra: Any) -> Response:
    response = jsonify({"type": "about:blank", "title": title, "status": status, "detail": detail, **extra})
    response.status_code = status
    response.mimetype = "application/problem+json"
    return response


def require_decision(
    client: GovsvcClient,
    *,
    purpose: str,
    action: str = "read",
    fields: Sequence[str] = (),
    subject: Callable[[], SubjectRef],
    acting_for: Callable[[], Mapping[str, Any] | None] | None = None,
) -> Callable[[F], F]:
    """Guard a view with a govsvc decision and filter its dict result by the obligations."""

    def decorate(view: F) -> F:
        @functools.wraps(view)
        def guarded(*args: Any, **kwargs: Any) -> Any:
            try:
                decision = client.decide(
                    subject(), action, purpose, fields=fields, acting_for=acting_for() if acting_for else None
                )
            except GovsvcUnavailable:
                return _problem(503, "Service Unavailable", "The privacy decision service cannot be reached.")
            except GovsvcError as error:
                return _problem(error.status if error.status < 500 else 502, "Decision failed", str(error))
            if not decision.allowed:
                return _problem(
                    403,
                    "Forbidden",
                    "The privacy policy does not allow this.",
                    reasons=decision.reason_codes,
                    decision_id=decision.decision_id,
                )
            g.govsvc_decision = decision
            result = view(*args, **kwargs)
            if isinstance(result, Mapping):
                return jsonify(decision.apply(result))
            return result

        return guarded  # type: ignore[return-value]

    return decorate
