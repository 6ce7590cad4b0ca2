"""The sequencer's fast canonical encoding of an event gives exactly the bytes of the reference encoding, and
refuses exactly what it refuses (property tests over stored rows, including control characters, characters
beyond the Basic Multilingual Plane, large integers and floats in the details)."""

from __future__ import annotations

import json
from datetime import UTC, datetime
from types import SimpleNamespace
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from audit.canonical import MAX_SAFE_INTEGER, canonical_json
from govsvc.audit.service import canonical_event, canonical_event_json

_TEXT = st.text(max_size=24)  # any code point but surrogates: control characters, U+2028, emoji...
_OPTIONAL_TEXT = st.none() | _TEXT
_INTEGERS = st.integers(min_value=-MAX_SAFE_INTEGER, max_value=MAX_SAFE_INTEGER) | st.sampled_from(
    [MAX_SAFE_INTEGER + 1, -MAX_SAFE_INTEGER - 1, 2**63]  # outside the I-JSON safe range: both refuse
)
_LEAVES = st.none() | st.booleans() | _INTEGERS | _TEXT
_DETAILS = st.dictionaries(
    _TEXT,
    st.recursive(_LEAVES, lambda inner: st.lists(inner, max_size=3) | st.dictionaries(_TEXT, inner, max_size=3)),
    max_size=5,
)


def _row(**fields: Any) -> SimpleNamespace:
    return SimpleNamespace(
        event_id=fields["event_id"],
        time=fields["time"],
        actor_principal=fields["principal"],
        actor_role=fields["role"],
        actor_client=None,
        actor_ip_hash=fields["ip_hash"],
        action=fields["action"],
        subject_ref=fields["subject_ref"],
        object_ref=fields["object_ref"],
        purpose=fields["purpose"],
        data_categories=fields["categories"],
        outcome=fields["outcome"],
        reason_code=fields["reason_code"],
        request_id=fields["request_id"],
        details=fields["details"],
    )


def _both(row: SimpleNamespace, seq: int) -> tuple[bytes | type[Exception], bytes | type[Exception]]:
    outcomes: list[bytes | type[Exception]] = []
    for encode in (lambda: canonical_json(canonical_event(row, seq)), lambda: canonical_event_json(row, seq)):
        try:
            outcomes.append(encode())
        except ValueError:
            outcomes.append(ValueError)
    return outcomes[0], outcomes[1]


@settings(max_examples=400, deadline=None)
@given(
    seq=st.integers(min_value=0, max_value=2**60),
    event_id=_TEXT,
    time=st.datetimes(min_value=datetime(2000, 1, 1), timezones=st.just(UTC)),
    principal=_OPTIONAL_TEXT,
    role=_OPTIONAL_TEXT,
    ip_hash=_OPTIONAL_TEXT,
    action=_TEXT,
    subject_ref=_OPTIONAL_TEXT,
    object_ref=_OPTIONAL_TEXT,
    purpose=_OPTIONAL_TEXT,
    categories=st.none() | st.lists(_TEXT, max_size=4).map(json.dumps),
    outcome=_TEXT,
    reason_code=_OPTIONAL_TEXT,
    request_id=_OPTIONAL_TEXT,
    details=st.none() | _DETAILS.map(lambda value: json.dumps(value, ensure_ascii=False)),
)
def test_the_fast_encoding_is_the_reference_encoding(seq: int, **fields: Any) -> None:
    reference, fast = _both(_row(**fields), seq)
    assert fast == reference


@pytest.mark.parametrize(
    "details",
    [
        '{"ratio": 0.5}',  # floats are not allowed in audit events
        '{"n": 9007199254740993}',  # beyond the I-JSON safe range
        '{"\\ud83d\\ude00": 1}',  # a key beyond U+FFFF (JCS orders those differently)
        '{"s": "\\ud800"}',  # a lone surrogate
        '{"s": NaN}',
    ],
)
def test_what_the_reference_refuses_the_fast_encoding_refuses(details: str) -> None:
    row = _row(
        event_id="e1",
        time=datetime(2026, 12, 3, tzinfo=UTC),
        principal="client:cl_1",
        role="app",
        ip_hash=None,
        action="policy.deny",
        subject_ref="sub_1",
        object_ref=None,
        purpose="p",
        categories='["user.contact.email"]',
        outcome="deny",
        reason_code="no_consent",
        request_id="r1",
        details=details,
    )
    assert _both(row, 7) == (ValueError, ValueError)
