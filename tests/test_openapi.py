"""The OpenAPI 3.1 document is generated from the code, valid, public and complete."""

from __future__ import annotations

import re
import warnings

from openapi_spec_validator import validate


def test_openapi_document_is_valid_3_1_and_public(client) -> None:
    response = client.get("/v1/openapi.json")
    assert response.status_code == 200
    spec = response.get_json()
    assert spec["openapi"] == "3.1.0"
    validate(spec)
    assert spec["components"]["securitySchemes"]["BearerAuth"]["scheme"] == "bearer"


def test_every_api_route_is_documented_with_problem_errors(app, client) -> None:
    spec = client.get("/v1/openapi.json").get_json()
    documented = {(path, method.upper()) for path, item in spec["paths"].items() for method in item}
    for rule in app.url_map.iter_rules():
        if rule.endpoint in ("static", "openapi.spec") or rule.endpoint.startswith("admin."):
            continue  # the admin UI's HTML pages are not part of the API
        path = re.sub(r"<(?:\w+(?:\([^)]*\))?:)?(\w+)>", r"{\1}", rule.rule)
        for method in rule.methods - {"HEAD", "OPTIONS"}:
            assert (path, method) in documented, (path, method)
    assert not any(path.startswith("/admin") for path in spec["paths"])
    create = spec["paths"]["/v1/clients"]["post"]
    assert {"201", "401", "403", "422"} <= set(create["responses"])
    assert create["security"] == [{"BearerAuth": []}]
    problem = create["responses"]["422"]["content"]
    assert list(problem) == ["application/problem+json"]
    assert problem["application/problem+json"]["schema"]["$ref"].endswith("/ProblemSchema")


def test_each_schema_class_is_one_component(app) -> None:
    """A schema class used both nested and as a whole body used to be added twice (apispec warned, and the
    document carried copies named ``ClientSchema1`` and the like): each class now has one component."""
    with warnings.catch_warnings(record=True) as caught, app.app_context():
        warnings.simplefilter("always")
        spec = app._get_spec(force_update=True)
    assert [str(w.message) for w in caught if "already been added" in str(w.message)] == []
    assert [name for name in spec["components"]["schemas"] if re.search(r"\d$", name)] == []
