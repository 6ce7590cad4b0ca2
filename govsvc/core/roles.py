"""PostgreSQL privileges for deployments that separate the schema owner from the application's login role.

The owner runs migrations; the application role may only SELECT and INSERT on the audit log's tables, so even
without the triggers (which a superuser can bypass) the service itself cannot rewrite history.
"""

from __future__ import annotations

import re

from govsvc.audit.models import APPEND_ONLY_TABLES
from govsvc.models import metadata

_ROLE_RE = re.compile(r"^[a-z_][a-z0-9_]{0,62}$")


def app_role_grants(role: str) -> list[str]:
    """GRANT statements giving ``role`` what the service needs, and no UPDATE/DELETE on the audit log."""
    if not _ROLE_RE.match(role):
        raise ValueError("role must be a lower-case PostgreSQL identifier")
    audit = set(APPEND_ONLY_TABLES)
    others = sorted(name for name in metadata.tables if name not in audit)
    return [
        f"GRANT USAGE ON SCHEMA public TO {role}",
        f"GRANT SELECT, INSERT, UPDATE, DELETE ON {', '.join(others)}, alembic_version TO {role}",
        f"GRANT SELECT, INSERT ON {', '.join(APPEND_ONLY_TABLES)} TO {role}",
        f"REVOKE UPDATE, DELETE, TRUNCATE ON {', '.join(APPEND_ONLY_TABLES)} FROM {role}",
        f"GRANT USAGE, SELECT ON ALL SEQUENCES IN SCHEMA public TO {role}",
    ]
