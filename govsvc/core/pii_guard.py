"""A cheap check for values that look like raw personal data (e-mail addresses, phone, identity or card numbers).

Used where only pseudonymous values may go: audit events, request ids echoed into logs.
"""

from __future__ import annotations

import re

PII_PATTERNS = {
    "email address": re.compile(r"[^\s@]+@[^\s@]+\.[^\s@]{2,}"),
    "phone, identity or card number": re.compile(r"(?<![A-Za-z0-9])\+?\d[\d ()-]{6,}\d[Xx]?(?![A-Za-z0-9])"),
}


def pii_kind(value: str) -> str | None:
    """The kind of personal data ``value`` seems to contain, or None."""
    for kind, pattern in PII_PATTERNS.items():
        if pattern.search(value):
            return kind
    return None
