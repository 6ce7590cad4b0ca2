"""HTTP layer of the decision API: one decision, or up to 1,000 in a batch."""

from __future__ import annotations

import re
from typing import Any, cast

from apiflask import APIBlueprint, Schema
from apiflask.fields import AwareDateTime, Dict, Integer, List, Nested, String
from apiflask.validators import Length, OneOf, Range, Regexp
from flask import Response, current_app
from sqlalchemy.orm import Session

from govsvc.audit.service import write_rows
from govsvc.auth.service import Principal
from govsvc.core.access import check_confirmation, confirms_credential, current_principal, get_policy_engine, requires
from govsvc.core.db import LazySession, autocommit, get_db
from govsvc.core.errors import PermissionDenied, ServiceError, ValidationFailed
from govsvc.core.jsonio import dumps_unsorted
from govsvc.core.problems import problem_body
from govsvc.core.schemas import StrictInteger, StrictSchema
from govsvc.decisions.lookup import Snapshot
from govsvc.decisions.service import ACTIONS, Decision, DecisionEngine, DecisionRequest
from govsvc.subjects.api import SubjectRefSchema

bp = APIBlueprint("decisions", __name__, url_prefix="/v1", tag="Decisions")
SECURITY = "BearerAuth"
ERRORS = [400, 401, 403, 404, 413, 415, 422]
MAX_BATCH = 1000


def decision_engine() -> DecisionEngine:
    return current_app.extensions["govsvc.decisions"]


class ActingForSchema(StrictSchema):
    user_ref = String(load_default=None, validate=Length(max=80), metadata={"description": "pseudonymous end-user id"})
    roles = List(String(validate=Length(min=1, max=64)), required=True, validate=Length(min=1, max=10))


class DecisionInSchema(StrictSchema):
    subject = Nested(SubjectRefSchema, required=True)
    action = String(required=True, validate=OneOf(list(ACTIONS)))
    purpose = String(required=True, validate=Length(min=1, max=80))
    purpose_version = StrictInteger(load_default=None, validate=Range(min=1))
    data_categories = List(String(validate=Length(min=1, max=120)), load_default=list, validate=Length(max=100))
    fields = List(String(validate=Length(min=1, max=80)), load_default=list, validate=Length(max=100))
    recipient = String(load_default=None, validate=Length(max=80))
    destination_country = String(load_default=None, validate=Regexp(r"^[A-Z]{2}$", error="ISO 3166 alpha-2"))
    acting_for = Nested(ActingForSchema, load_default=None)


class BatchInSchema(StrictSchema):
    checks = List(Nested(DecisionInSchema), required=True, validate=Length(min=1, max=MAX_BATCH))


class ReasonSchema(Schema):
    code = String(required=True)
    detail = String(required=True)
    category = String(allow_none=True)
    regime = String(allow_none=True)


class DecisionSchema(Schema):
    decision_id = String(required=True)
    decision = String(required=True, metadata={"description": "allow or deny"})
    reasons = List(Nested(ReasonSchema), required=True)
    obligations = Dict(
        keys=String(),
        values=String(),
        required=True,
        metadata={"description": "per field or category: show, mask:<profile>, tokenize, withhold"},
    )
    subject_id = String(required=True)
    purpose = String(required=True)
    purpose_version = Integer(required=True)
    policy_version = Integer(required=True)
    taxonomy_version = Integer(required=True)
    evaluated_at = AwareDateTime(required=True)


class BatchItemSchema(Schema):
    index = Integer(required=True)
    decision = Nested(DecisionSchema, allow_none=True)
    error = Dict(allow_none=True, metadata={"description": "a problem document when this check could not be made"})


class BatchOutSchema(Schema):
    results = List(Nested(BatchItemSchema), required=True)


class _Refused(Exception):
    """The caller's key was revoked, or its role lost a permission, as read with the subjects."""

    def __init__(self, response: Response) -> None:
        super().__init__("refused")
        self.response = response


def _decide_each(requests: list[DecisionRequest], *, acting_for: bool) -> list[Decision | ServiceError]:
    """Decide, confirming in the same round trip that the caller's key is unrevoked and its role still allowed."""
    principal = current_principal()
    permissions = [("decisions", "create")] + ([("decisions", "act_for")] if acting_for else [])

    def confirm(snapshot: Snapshot) -> None:
        refusal = check_confirmation(snapshot.credential_valid, permissions)
        if refusal is not None:
            raise _Refused(refusal)

    database = get_db()
    # A decision answered from the cache opens no session, even when it records an event (PostgreSQL: the view
    # writes its events itself, in one self-committing INSERT, on a pooled connection).
    lazy = LazySession(direct_audit=database.autocommit_engine is not None)
    try:
        outcomes = decision_engine().decide_each(
            cast(Session, lazy), requests, client_id=principal.client_id, confirm=confirm
        )
    finally:  # the refusals decided so far are on record even if a later check failed unexpectedly
        if lazy.audit_rows:
            write_rows(database, lazy.audit_rows, lazy.opened)
    # SQLite (no autocommit pool): the events are in the request's transaction, written at its commit
    return outcomes


def _request(body: dict[str, Any], principal: Principal | None = None) -> DecisionRequest:
    principal = principal or current_principal()
    roles: tuple[str, ...] = (principal.role,)
    acting = body["acting_for"]
    if acting is not None:
        engine = get_policy_engine()
        if not engine.is_allowed(principal.role, "decisions", "act_for"):
            raise PermissionDenied(f"The role {principal.role!r} may not decide on behalf of end users.")
        unknown = [role for role in acting["roles"] if role not in engine.roles]
        if unknown:
            raise ValidationFailed(
                "Unknown roles.",
                errors=[{"field": "acting_for.roles", "message": f"known roles: {', '.join(sorted(engine.roles))}"}],
            )
        roles = tuple(acting["roles"])
    return DecisionRequest(
        subject=body["subject"],
        action=body["action"],
        purpose=body["purpose"],
        roles=roles,
        principal_id=principal.principal_id,
        purpose_version=body["purpose_version"],
        data_categories=tuple(body["data_categories"]),
        fields=tuple(body["fields"]),
        recipient=body["recipient"],
        destination_country=body["destination_country"],
    )


@bp.post("/decisions")
@bp.input(DecisionInSchema, arg_name="body", validation=False)  # validated by parse_check, as a batch's checks
@bp.output(DecisionSchema)
@bp.doc(
    summary="May this principal do this action on these fields of this person, for this purpose?",
    description="Deny by default, with reason codes; when allowed, an obligation per field or category. A change "
    "of consent or policy applies to the very next decision on every instance.",
    security=SECURITY,
    responses=[200, *ERRORS],
)
@requires("decisions", "create")
@confirms_credential
@autocommit
def decide(body: Any) -> Response:
    check = parse_check(body)
    try:
        outcome = _decide_each([_request(check)], acting_for=check["acting_for"] is not None)[0]
    except _Refused as refused:
        return refused.response
    if isinstance(outcome, ServiceError):
        raise outcome
    return _json(outcome.as_dict())


@bp.post("/decisions:batch")
@bp.input(BatchInSchema, arg_name="body", validation=False)  # each check is validated on its own below
@bp.output(BatchOutSchema)
@bp.doc(summary=f"Up to {MAX_BATCH} decisions in one call", security=SECURITY, responses=[200, *ERRORS])
@requires("decisions", "create")
@confirms_credential
@autocommit
def decide_batch(body: Any) -> Response:
    checks = body.get("checks") if isinstance(body, dict) else None
    if not isinstance(checks, list) or not 1 <= len(checks) <= MAX_BATCH or set(body) != {"checks"}:
        raise ValidationFailed(
            "The batch is malformed.",
            errors=[{"field": "checks", "message": f"a list of 1 to {MAX_BATCH} checks (and nothing else)"}],
        )
    results: list[dict[str, Any] | None] = [None] * len(checks)
    requests = []
    acting_for = False
    principal = current_principal()
    for index, check in enumerate(checks):
        try:
            parsed = parse_check(check)
            acting_for = acting_for or parsed["acting_for"] is not None
            requests.append((index, _request(parsed, principal)))
        except ServiceError as error:
            results[index] = {"index": index, "decision": None, "error": _problem(error)}
    try:
        outcomes = _decide_each([request for _, request in requests], acting_for=acting_for)
    except _Refused as refused:
        return refused.response
    for (index, _), outcome in zip(requests, outcomes, strict=True):
        if isinstance(outcome, ServiceError):
            results[index] = {"index": index, "decision": None, "error": _problem(outcome)}
        else:
            results[index] = {"index": index, "decision": outcome.as_dict(), "error": None}
    return _json({"results": results})


_CHECK_FIELDS = frozenset(DecisionInSchema().fields)
_COUNTRY = re.compile(r"^[A-Z]{2}$")


def parse_check(raw: Any) -> dict[str, Any]:
    """Validate one batch check as DecisionInSchema does, cheaply; ValidationFailed names every bad field."""
    errors: list[dict[str, Any]] = []

    def bad(field: str, message: str) -> None:
        errors.append({"location": "json", "field": field, "message": message})

    if not isinstance(raw, dict):
        raise ValidationFailed("A check must be an object.", errors=[{"field": None, "message": "not an object"}])
    for unknown in sorted(set(raw) - _CHECK_FIELDS):
        bad(unknown, "Unknown field.")
    subject = raw.get("subject")
    if not isinstance(subject, dict) or not subject or set(subject) - {"subject_id", "kind", "value", "system"}:
        bad("subject", "an object with subject_id, or kind, value and system")
    elif not _short_strings(subject.values()):
        bad("subject", "strings of at most 200 characters")
    if raw.get("action") not in ACTIONS:
        bad("action", f"one of {', '.join(ACTIONS)}")
    purpose = raw.get("purpose")
    if not isinstance(purpose, str) or not 1 <= len(purpose) <= 80:
        bad("purpose", "a purpose key")
    version = raw.get("purpose_version")
    if version is not None and (type(version) is not int or version < 1):
        bad("purpose_version", "a positive integer")
    for name in ("data_categories", "fields"):
        values = raw.get(name, [])
        if not isinstance(values, list) or len(values) > 100 or not _names(values):
            bad(name, "a list of at most 100 names")
    recipient = raw.get("recipient")
    if recipient is not None and (not isinstance(recipient, str) or len(recipient) > 80):
        bad("recipient", "a recipient key")
    country = raw.get("destination_country")
    if country is not None and (not isinstance(country, str) or not _COUNTRY.match(country)):
        bad("destination_country", "ISO 3166 alpha-2")
    acting = raw.get("acting_for")
    if acting is not None and (
        not isinstance(acting, dict)
        or set(acting) - {"roles", "user_ref"}
        or not isinstance(acting.get("roles"), list)
        or not 1 <= len(acting["roles"]) <= 10
        or not all(isinstance(role, str) and role for role in acting["roles"])
    ):
        bad("acting_for", "an object with roles (1 to 10) and an optional user_ref")
    if errors:
        raise ValidationFailed("The check has invalid fields; see errors.", errors=errors)
    return {
        "subject": {k: v for k, v in subject.items() if v is not None},
        "action": raw["action"],
        "purpose": purpose,
        "purpose_version": version,
        "data_categories": raw.get("data_categories", []),
        "fields": raw.get("fields", []),
        "recipient": recipient,
        "destination_country": country,
        "acting_for": acting,
    }


def _short_strings(values: Any) -> bool:
    """Every value None or a string of at most 200 characters (a loop: cheaper than a generator per check)."""
    for value in values:  # noqa: SIM110 - a plain loop, no generator per check
        if value is not None and (not isinstance(value, str) or len(value) > 200):
            return False
    return True


def _names(values: list[Any]) -> bool:
    """Every value a non-empty string."""
    for value in values:  # noqa: SIM110 - a plain loop, no generator per check
        if not isinstance(value, str) or not value:
            return False
    return True


def _json(document: dict[str, Any]) -> Response:
    """The hot path skips schema dumping: the documents are built to the declared schema already (datetimes in
    ISO 8601, as ``datetime.isoformat`` writes them)."""
    return Response(dumps_unsorted(document), mimetype="application/json")


def _problem(error: ServiceError) -> dict[str, Any]:
    return problem_body(error.slug, error.detail, errors=error.errors, **error.extensions)
