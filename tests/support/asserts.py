"""Assertions shared by the API tests."""

from __future__ import annotations


def assert_problem(response, status: int, slug: str) -> dict:
    """Assert an RFC 9457 problem response and return its body."""
    assert response.status_code == status, response.get_data(as_text=True)
    assert response.mimetype == "application/problem+json", response.mimetype
    body = response.get_json(force=True)
    assert body["type"] == f"urn:govsvc:problem:{slug}", body
    assert body["status"] == status
    assert body["title"]
    assert "Traceback" not in response.get_data(as_text=True)
    return body
