"""Every table of the service, imported in one place for Alembic and tests."""

from govsvc.admin.models import AdminLoginAttempt, AdminPreference, AdminSession
from govsvc.audit.models import AuditCheckpoint, AuditEvent, AuditLeaf, AuditSigningKey, AuditTreeNode
from govsvc.auth.models import AdminUser, ApiClient
from govsvc.consent.models import ConsentEvent, ConsentState, ReceiptSigningKey
from govsvc.core.db import Base
from govsvc.core.models import CacheLease, IdempotencyRecord, JobLease
from govsvc.crypto.models import CryptoKey, CryptoState, KeyRotation
from govsvc.dsr.models import (
    DsrCallback,
    DsrConnectorRun,
    DsrEvent,
    DsrExport,
    DsrExportChunk,
    DsrPause,
    DsrProcessorKey,
    DsrRequest,
    DsrWebhook,
)
from govsvc.holds.models import LegalHold
from govsvc.pii.models import MaskingVersion
from govsvc.policy.models import CasbinRule, PolicyState
from govsvc.retention.models import (
    DeletionTombstone,
    RetentionChunk,
    RetentionEvent,
    RetentionLease,
    RetentionPolicyVersion,
    RetentionRun,
    SchedulerJobRow,
)
from govsvc.sources.models import ExternalSource
from govsvc.subjects.models import Subject, SubjectIdentifier
from govsvc.taxonomy.models import TaxonomyVersion
from govsvc.vault.models import VaultField, VaultFieldHistory

metadata = Base.metadata

__all__ = [
    "AdminLoginAttempt",
    "AdminPreference",
    "AdminSession",
    "AdminUser",
    "ApiClient",
    "AuditCheckpoint",
    "AuditEvent",
    "AuditLeaf",
    "AuditSigningKey",
    "AuditTreeNode",
    "CacheLease",
    "CasbinRule",
    "ConsentEvent",
    "ConsentState",
    "CryptoKey",
    "CryptoState",
    "DeletionTombstone",
    "DsrCallback",
    "DsrConnectorRun",
    "DsrEvent",
    "DsrExport",
    "DsrExportChunk",
    "DsrPause",
    "DsrProcessorKey",
    "DsrRequest",
    "DsrWebhook",
    "ExternalSource",
    "IdempotencyRecord",
    "JobLease",
    "KeyRotation",
    "LegalHold",
    "MaskingVersion",
    "PolicyState",
    "ReceiptSigningKey",
    "RetentionChunk",
    "RetentionEvent",
    "RetentionLease",
    "RetentionPolicyVersion",
    "RetentionRun",
    "SchedulerJobRow",
    "Subject",
    "SubjectIdentifier",
    "TaxonomyVersion",
    "VaultField",
    "VaultFieldHistory",
    "metadata",
]
