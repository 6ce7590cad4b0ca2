"""The cheap personal-data check used on audit fields, and the random references that must never trip it."""

from __future__ import annotations

import itertools

import pytest

from govsvc.core import pii_guard
from govsvc.core.pii_guard import pii_kind, random_reference


@pytest.mark.parametrize(
    ("value", "kind"),
    [
        ("alice@example.com", "email address"),
        ("+86 138 1234 5678", "phone, identity or card number"),
        ("11010519491231002X", "phone, identity or card number"),
        ("dsr_1234567890123456", "phone, identity or card number"),
        ("dsr_12345678901234ab", None),
        ("sub_k3j4h5g6f7d8s9a0", None),
    ],
)
def test_pii_kind_flags_raw_values_only(value: str, kind: str | None) -> None:
    assert pii_kind(value) == kind


def test_random_reference_draws_again_when_the_hex_is_all_digits(monkeypatch: pytest.MonkeyPatch) -> None:
    draws = itertools.chain(["1234567890123456", "9876543210987654"], itertools.repeat("0123456789abcdef"))
    monkeypatch.setattr(pii_guard.secrets, "token_hex", lambda nbytes: next(draws))
    assert random_reference("dsr_") == "dsr_0123456789abcdef"


def test_random_references_have_the_prefix_and_length_asked_for() -> None:
    references = {random_reference("hold_", 8) for _ in range(2000)}
    assert len(references) == 2000
    assert all(ref.startswith("hold_") and len(ref) == 5 + 16 and pii_kind(ref) is None for ref in references)
