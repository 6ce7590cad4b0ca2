"""The DSR domain of one app: its rules, services, connectors and retention hook, built once at start-up.

Phase 2 (issue 8) wires in here: ``dsr.registry.add_provider(<external SQL source connectors>)`` and
``dsr.exceptions.add(<legal holds>)`` / ``dsr.exceptions.add(<retention rules>)``.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import timedelta
from pathlib import Path

from sqlalchemy.orm import Session

from govsvc.config import Settings
from govsvc.core.db import Database
from govsvc.crypto.service import FieldKeys, KeyWrapper
from govsvc.dsr import opendsr
from govsvc.dsr.connectors import (
    WEBHOOK_SECRET_LABEL,
    AuditAccessConnector,
    ConnectorRegistry,
    ConsentConnector,
    VaultConnector,
)
from govsvc.dsr.erasure import RetentionExceptions, legal_hold_flag, retention_rules
from govsvc.dsr.fulfilment import Fulfilment
from govsvc.dsr.models import DsrRequest
from govsvc.dsr.rules import DsrRules, load_rules
from govsvc.dsr.service import DsrService
from govsvc.taxonomy.service import TaxonomyCache
from govsvc.vault.service import Vault


@dataclass
class Dsr:
    rules: DsrRules
    service: DsrService
    registry: ConnectorRegistry
    exceptions: RetentionExceptions
    fulfilment: Fulfilment
    secrets: KeyWrapper  # webhook secrets and the OpenDSR processor key, wrapped under the service secret
    domain: str
    export_ttl: timedelta

    def notify_status(self, session: Session, request: DsrRequest) -> None:
        """Queue OpenDSR status callbacks for a request that came through the facade."""
        if request.source != "opendsr":
            return
        urls = opendsr.callback_urls(session, request)
        if urls:
            opendsr.enqueue_callbacks(session, request, urls, request.created_by, self.domain)

    def deliver_callbacks(self, database: Database) -> dict[str, int]:
        return opendsr.deliver_callbacks(database, self.secrets, self.domain)


def build(settings: Settings, vault: Vault, field_keys: FieldKeys, taxonomy: TaxonomyCache) -> Dsr:
    rules = load_rules(Path(settings.policy_dir))
    service = DsrService(rules, field_keys, settings.secret_key)
    secrets = KeyWrapper(settings.secret_key, WEBHOOK_SECRET_LABEL)
    registry = ConnectorRegistry(
        [ConsentConnector(field_keys, taxonomy), AuditAccessConnector(), VaultConnector(vault, taxonomy, rules)],
        secrets,
    )
    exceptions = RetentionExceptions([legal_hold_flag, retention_rules(rules)])
    ttl = timedelta(hours=settings.dsr_export_ttl_hours)
    dsr = Dsr(rules, service, registry, exceptions, None, secrets, settings.dsr_processor_domain, ttl)  # type: ignore[arg-type]
    dsr.fulfilment = Fulfilment(
        service, registry, exceptions, field_keys, export_ttl=ttl, on_status_change=dsr.notify_status
    )
    return dsr
