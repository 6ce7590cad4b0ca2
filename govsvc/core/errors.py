"""Errors raised by services, each mapped to one stable RFC 9457 problem type.

Services raise these (they know nothing of HTTP); ``govsvc.core.problems`` renders them as
``application/problem+json``. The ``type`` URIs are stable identifiers documented in the README.
"""

from __future__ import annotations

from typing import Any

PROBLEM_BASE = "urn:govsvc:problem:"

# slug -> (status, title). Adding a slug is an API change: never rename one.
PROBLEM_TYPES: dict[str, tuple[int, str]] = {
    "malformed-json": (400, "Malformed JSON body"),
    "bad-request": (400, "Bad request"),
    "invalid-cursor": (400, "Invalid pagination cursor"),
    "unauthenticated": (401, "Authentication required"),
    "invalid-credentials": (401, "Invalid credentials"),
    "forbidden": (403, "Forbidden"),
    "not-found": (404, "Resource not found"),
    "method-not-allowed": (405, "Method not allowed"),
    "not-acceptable": (406, "Not acceptable"),
    "conflict": (409, "Conflict"),
    "key-destroyed": (410, "The key of this data was destroyed (crypto-shredded)"),
    "gone": (410, "The link has expired or was used already"),
    "idempotency-key-in-use": (409, "Idempotency key is being used by a request in progress"),
    "payload-too-large": (413, "Request body too large"),
    "unsupported-media-type": (415, "Unsupported media type"),
    "validation-error": (422, "Validation failed"),
    "undecryptable": (422, "The ciphertext does not decrypt here"),
    "idempotency-key-reused": (422, "Idempotency key reused with a different request"),
    "rate-limited": (429, "Too many requests"),
    "internal-error": (500, "Internal error"),
    "service-unavailable": (503, "Service unavailable"),
    "database-read-only": (503, "The database accepts no writes"),
    "insufficient-storage": (507, "The database is out of storage"),
}


def problem_type_uri(slug: str) -> str:
    """The stable ``type`` URI of a problem slug."""
    if slug not in PROBLEM_TYPES:
        raise KeyError(f"unknown problem type {slug!r}")
    return PROBLEM_BASE + slug


class ServiceError(Exception):
    """A failure that the caller can act on; rendered as a problem document."""

    slug = "bad-request"

    def __init__(self, detail: str, *, errors: list[dict[str, Any]] | None = None, **extensions: Any) -> None:
        super().__init__(detail)
        self.detail = detail
        self.errors = errors
        self.extensions = extensions

    @property
    def status(self) -> int:
        return PROBLEM_TYPES[self.slug][0]


class NotFoundError(ServiceError):
    slug = "not-found"


class ConflictError(ServiceError):
    slug = "conflict"


class ValidationFailed(ServiceError):
    """Input is well-formed but wrong; ``errors`` lists ``{"field", "message"}`` entries."""

    slug = "validation-error"


class AuthenticationFailed(ServiceError):
    slug = "invalid-credentials"


class PermissionDenied(ServiceError):
    slug = "forbidden"


class KeyDestroyed(ServiceError):
    """The data key was destroyed: its ciphertexts can never be decrypted again."""

    slug = "key-destroyed"


class Undecryptable(ServiceError):
    """A token that is malformed, altered, or bound to another record, field or key."""

    slug = "undecryptable"
