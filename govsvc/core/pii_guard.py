"""A cheap check for values that look like raw personal data (e-mail addresses, phone, identity or card numbers).

Used where only pseudonymous values may go: audit events, request ids echoed into logs, the justifications of
plaintext reads.
"""

from __future__ import annotations

import functools
import re
import secrets

from govsvc.core.errors import ValidationFailed

PII_PATTERNS = {
    "email address": re.compile(r"[^\s@]+@[^\s@]+\.[^\s@]{2,}"),
    "phone, identity or card number": re.compile(r"(?<![A-Za-z0-9])\+?\d[\d ()-]{6,}\d[Xx]?(?![A-Za-z0-9])"),
}


def pii_kind(value: str) -> str | None:
    """The kind of personal data ``value`` seems to contain, or None."""
    if len(value) <= _CACHED_LENGTH:  # short tokens (roles, reason codes, principals, subject ids) recur
        return _cached_kind(value)
    return _kind(value)


_CACHED_LENGTH = 128


def _kind(value: str) -> str | None:
    for kind, pattern in PII_PATTERNS.items():
        if pattern.search(value):
            return kind
    return None


_cached_kind = functools.lru_cache(maxsize=8192)(_kind)


def random_reference(prefix: str, nbytes: int = 8) -> str:
    """``prefix`` and ``nbytes`` random bytes in hex, never a value the check above would take for personal data.

    A random hex string is all digits now and then (one in ~1,850 for 8 bytes); after a prefix such as ``dsr_`` it
    would then look like a phone number and be refused by the audit log. Such draws are simply drawn again.
    """
    while True:
        candidate = prefix + secrets.token_hex(nbytes)
        if pii_kind(candidate) is None:
            return candidate


MIN_JUSTIFICATION_LENGTH = 10


def check_justification(justification: str | None, *, required: bool) -> str | None:
    """The justification of a plaintext read, trimmed: a reason such as a case or ticket reference, at least
    ``MIN_JUSTIFICATION_LENGTH`` characters, and no personal data (it is kept in the audit log). ValidationFailed
    otherwise, or when ``required`` and missing."""
    if justification is None or not justification.strip():
        if required:
            raise ValidationFailed(
                "Reading data in plaintext needs a justification.",
                errors=[{"field": "justification", "message": "say why (a case or ticket reference)"}],
            )
        return None
    justification = justification.strip()
    kind = pii_kind(justification)
    if len(justification) < MIN_JUSTIFICATION_LENGTH or kind:
        raise ValidationFailed(
            "The justification must be a reason (a case or ticket reference without long digit runs), "
            "not personal data: it is kept in the audit log.",
            errors=[
                {
                    "field": "justification",
                    "message": f"it looks like personal data ({kind})"
                    if kind
                    else f"at least {MIN_JUSTIFICATION_LENGTH} characters",
                }
            ],
        )
    return justification
