"""Loading ``policies/`` into a database: the RBAC policy, the taxonomy, and the audit signing key."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from govsvc.audit.service import AuditContext, record
from govsvc.audit.signing import ensure_key
from govsvc.config import Settings
from govsvc.consent import receipts
from govsvc.core.db import Database
from govsvc.pii.service import seed_masking
from govsvc.policy.service import SeedResult, bump_version, seed_policy
from govsvc.retention.rules import seed as seed_retention
from govsvc.taxonomy.service import seed_taxonomy


@dataclass(frozen=True)
class SeedReport:
    policy: SeedResult
    taxonomy_version: int | None  # None: unchanged
    masking_version: int | None  # None: unchanged
    audit_vkey: str
    retention_version: int | None = None  # None: unchanged


def seed_all(database: Database, settings: Settings, *, replace: bool = False, actor: str = "cli") -> SeedReport:
    """Seed what the database lacks (``replace``: re-apply the files where they differ); audited."""
    policy_dir = Path(settings.policy_dir)
    policy = seed_policy(database.engine, policy_dir, replace=replace, actor=actor)
    with database.transaction() as session:
        taxonomy_version = seed_taxonomy(session, policy_dir, replace=replace, actor=actor)
        if taxonomy_version is not None:
            record(
                session,
                "config.changed",
                object_ref="taxonomy",
                reason_code="seed",
                details={"version": taxonomy_version},
                context=AuditContext(principal_id=actor, role="system"),
            )
        masking_version = seed_masking(session, policy_dir, replace=replace, actor=actor)
        if masking_version is not None:
            record(
                session,
                "config.changed",
                object_ref="policy:masking",
                reason_code="seed",
                details={"version": masking_version},
                context=AuditContext(principal_id=actor, role="system"),
            )
            if masking_version > 1:
                bump_version(session, actor=actor)  # every instance applies the re-seeded rules
        retention_version = seed_retention(session, policy_dir, replace=replace, actor=actor)
        if retention_version is not None:
            record(
                session,
                "config.changed",
                object_ref="policy:retention",
                reason_code="seed",
                details={"version": retention_version},
                context=AuditContext(principal_id=actor, role="system"),
            )
        vkey = ensure_key(session, settings.secret_key, settings.audit_origin).vkey
        receipts.ensure_key(session, settings.secret_key)
    return SeedReport(policy, taxonomy_version, masking_version, vkey, retention_version)
