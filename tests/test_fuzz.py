"""Schemathesis over every operation of /v1/openapi.json: generated requests (valid by the schema, then invalid
ones), each sent with the key of a role the policy allows for that route, must never get a 5xx and every response
must match the documented status codes, content types and schemas. Bounded examples per operation, so the whole
run stays within a couple of minutes; every failure of every operation is reported at once."""

from __future__ import annotations

import re

import schemathesis
from hypothesis import HealthCheck, Phase, given, settings
from hypothesis.errors import Unsatisfiable
from schemathesis import GenerationMode
from schemathesis.checks import content_type_conformance, not_a_server_error, response_schema_conformance

from govsvc.core.access import route_permission
from govsvc.policy.service import load_policy_file
from tests.conftest import POLICY_DIR

EXAMPLES = {GenerationMode.POSITIVE: 6, GenerationMode.NEGATIVE: 3}
CHECKS = [not_a_server_error, response_schema_conformance, content_type_conformance]
_CONVERTER = re.compile(r"<(?:[a-z]+(?:\([^)]*\))?:)?([a-z_]+)>")


def _roles_by_operation(app) -> dict[tuple[str, str], str]:
    """(METHOD, OpenAPI path) -> a role holding that route's permission (its first in policy.csv)."""
    grants: dict[tuple[str, str], str] = {}
    for line in load_policy_file(POLICY_DIR):
        if line.ptype == "p":
            grants.setdefault((line.values[1], line.values[2]), line.values[0])
    roles = {}
    for rule in app.url_map.iter_rules():
        permission = route_permission(app.view_functions[rule.endpoint])
        role = grants.get(permission) if permission else None
        for method in rule.methods or ():
            roles[(method, _CONVERTER.sub(r"{\1}", rule.rule))] = role or "admin"
    return roles


def _fuzzer(
    operation, mode: GenerationMode, examples: int, headers: dict[str, str], succeeded: set[str], admitted: set[str]
):
    """A Hypothesis test of one operation: generated cases sent with the role's key, every response checked."""

    @settings(
        max_examples=examples,
        deadline=None,
        database=None,
        derandomize=True,
        phases=[Phase.explicit, Phase.generate],
        suppress_health_check=list(HealthCheck),
    )
    @given(case=operation.as_strategy(generation_mode=mode))
    def call(case) -> None:
        response = case.call(headers=headers)
        if 200 <= response.status_code < 300:
            succeeded.add(operation.label)
        if response.status_code not in (401, 403):
            admitted.add(operation.label)
        case.validate_response(response, checks=CHECKS)

    return call


def test_every_operation_survives_generated_requests(app, issue_key) -> None:
    schema = schemathesis.openapi.from_wsgi("/v1/openapi.json", app)
    roles = _roles_by_operation(app)
    keys: dict[str, str] = {}
    failures: list[str] = []
    succeeded: set[str] = set()  # operations that answered 2xx at least once
    admitted: set[str] = set()  # operations whose requests got past the guard at least once (not 401/403)
    operations = 0
    labels: list[str] = []
    for result in schema.get_all_operations():
        operation = result.ok()
        operations += 1
        labels.append(operation.label)
        role = roles.get((operation.method.upper(), operation.path), "admin")
        if role not in keys:
            keys[role] = issue_key(role, name=f"fuzz-{role}")
        headers = {"Authorization": f"Bearer {keys[role]}"}
        for mode, examples in EXAMPLES.items():
            call = _fuzzer(operation, mode, examples, headers, succeeded, admitted)
            try:
                call()
            except Unsatisfiable:  # no invalid request exists (an operation without parameters or body)
                continue
            except (
                Exception,
                BaseExceptionGroup,
            ) as error:  # every operation's failures are collected, reported at once
                failures.append(f"{operation.label} ({mode.value}): {str(error)[:1500]}")
    # Which operations happen to get a valid request depends on Hypothesis's seed (derived from the test), so the
    # bar is a share: every operation must let a key of its role in, and a quarter at least must succeed.
    assert operations > 80 and len(admitted) == operations, sorted(set(labels) - admitted)
    assert len(succeeded) > operations // 4, (operations, sorted(succeeded))
    assert not failures, f"{len(failures)} failing operations:\n\n" + "\n\n".join(failures)
