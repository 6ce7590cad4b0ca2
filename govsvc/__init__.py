"""govsvc: privacy and consent governance service.

``create_app(config)`` builds the Flask (APIFlask) application; ``wsgi.py`` exposes it to gunicorn.
"""

from __future__ import annotations

import functools
import gc
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from apiflask import APIFlask

from govsvc.config import Settings, settings_from_env
from govsvc.core.db import Database

API_TITLE = "govsvc"
API_VERSION = "1.0.0"
SPEC_PATH = "/v1/openapi.json"


def _openapi_settings() -> dict[str, Any]:
    from govsvc.core.schemas import ProblemSchema

    return {
        "OPENAPI_VERSION": "3.1.0",
        "SPEC_FORMAT": "json",
        "HTTP_ERROR_SCHEMA": ProblemSchema,
        "VALIDATION_ERROR_SCHEMA": ProblemSchema,
        "VALIDATION_ERROR_STATUS_CODE": 422,
        "AUTO_404_RESPONSE": True,
        "SECURITY_SCHEMES": {
            "BearerAuth": {"type": "http", "scheme": "bearer", "description": "API key: gsk_<prefix>_<secret>"}
        },
        "INFO": {
            "description": "Privacy and consent governance: the API other systems call before they touch customer "
            "data. Errors are RFC 9457 problem documents (application/problem+json).",
            "license": {"name": "Apache-2.0", "identifier": "Apache-2.0"},
        },
    }


def _problem_media_type(spec: dict[str, Any]) -> dict[str, Any]:
    """Error responses are documented as application/problem+json, as they are served; OpenDSR's own errors (400,
    404) keep the JSON error document that protocol defines (only the guard's 401/403 are problems there)."""
    for path, path_item in spec.get("paths", {}).items():
        for operation in path_item.values():
            for status, response in operation.get("responses", {}).items():
                content = response.get("content") if isinstance(response, dict) else None
                if path.startswith("/opendsr/") and status not in ("401", "403"):
                    continue
                if status[:1] in ("4", "5") and content and "application/json" in content:
                    content["application/problem+json"] = content.pop("application/json")
    return spec


def create_app(config: Settings | Mapping[str, Any] | None = None) -> APIFlask:
    """Build the application from settings (default: ``GOVSVC_*`` environment variables).

    A mapping is applied as overrides on top of the environment's settings.
    """
    from govsvc.audit.sequencer import Sequencer
    from govsvc.audit.service import ip_hash_key
    from govsvc.auth.service import KnownKeys
    from govsvc.core.access import init_access_control
    from govsvc.core.content import init_content_checks
    from govsvc.core.idempotency import init_idempotency
    from govsvc.core.jsonio import OrjsonProvider
    from govsvc.core.logging import RedactingFilter, configure_logging, init_request_logging
    from govsvc.core.problems import register_error_handlers
    from govsvc.core.security import FailureLimiter, init_security_headers
    from govsvc.core.transactions import init_request_transactions
    from govsvc.crypto.keys import KeyCache, KeyStore
    from govsvc.crypto.providers import LocalKeyProvider
    from govsvc.crypto.service import FieldKeys
    from govsvc.decisions.cache import SubjectCache
    from govsvc.decisions.service import DecisionEngine
    from govsvc.policy.service import PolicyEngine
    from govsvc.taxonomy.service import TaxonomyCache
    from govsvc.vault.service import Vault

    if config is None:
        settings = settings_from_env()
    elif isinstance(config, Settings):
        settings = config
    else:
        settings = settings_from_env().with_overrides(**dict(config))
    settings.validate()

    configure_logging(settings.log_level)
    RedactingFilter.register_secret(settings.secret_key)

    app = APIFlask(
        "govsvc",
        title=API_TITLE,
        version=API_VERSION,
        spec_path=SPEC_PATH,
        docs_path=None,  # the bundled docs UIs load JavaScript from CDNs; the JSON spec is served instead
        instance_path=str(Path(settings.instance_dir).resolve()),
    )
    app.json = OrjsonProvider(app)
    # Flask asks, for every hook and view of every request, whether the function is a coroutine (inspect, ~14
    # times a request); the answer never changes, so it is asked once per function.
    app.ensure_sync = functools.lru_cache(maxsize=1024)(app.ensure_sync)  # type: ignore[method-assign]
    app.config.update(_openapi_settings())
    app.spec_processor(_problem_media_type)
    app.config.update(
        SECRET_KEY=settings.secret_key,
        MAX_CONTENT_LENGTH=settings.max_body_bytes,
        JSON_SORT_KEYS=False,
        TESTING=settings.environment == "testing",
        GOVSVC_SETTINGS=settings,
    )
    app.config.update(dict(settings.extra))

    database = Database(
        settings.resolved_database_url,
        sqlite_synchronous=settings.sqlite_synchronous,
        pool_size=settings.db_pool_size,
    )
    app.extensions["govsvc.db"] = database
    app.extensions["govsvc.policy"] = PolicyEngine(Path(settings.policy_dir))
    app.extensions["govsvc.taxonomy"] = TaxonomyCache()
    app.extensions["govsvc.keys"] = KeyStore(
        LocalKeyProvider.from_settings(
            root_keys=settings.root_keys,
            root_key_file=settings.root_key_file,
            secret_key=settings.secret_key,
            production=settings.is_production,
        ),
        cache=KeyCache(settings.key_cache_size, settings.key_cache_seconds),
    )
    app.extensions["govsvc.field_keys"] = FieldKeys(settings.secret_key, app.extensions["govsvc.keys"])
    app.extensions["govsvc.decisions"] = DecisionEngine(
        app.extensions["govsvc.field_keys"],
        app.extensions["govsvc.policy"],
        app.extensions["govsvc.taxonomy"],
        cache=(
            SubjectCache(database.coherence, max_subjects=settings.decision_cache_subjects)
            if database.coherence is not None and settings.decision_cache == "on"
            else None
        ),
    )
    app.extensions["govsvc.known_keys"] = KnownKeys()
    app.extensions["govsvc.auth_limiter"] = FailureLimiter(
        settings.api_auth_max_failures, settings.api_auth_window_seconds
    )
    app.extensions["govsvc.pii"] = _pii_service(settings)
    app.extensions["govsvc.policy"].add_reload_listener(app.extensions["govsvc.pii"].use_stored_rules)
    app.extensions["govsvc.vault"] = Vault(
        app.extensions["govsvc.keys"], app.extensions["govsvc.field_keys"], app.extensions["govsvc.pii"].masker
    )
    app.extensions["govsvc.audit_ip_key"] = ip_hash_key(settings.secret_key)
    app.extensions["govsvc.sequencer"] = Sequencer(
        database,
        settings.secret_key,
        settings.audit_origin,
        checkpoint_seconds=settings.audit_checkpoint_seconds,
    )
    if settings.audit_sequencer == "thread":
        _start_sequencer_with_first_request(app)
    _init_dsr(app, settings, database)

    # Order matters: before_request hooks run in this order, after_request hooks in reverse.
    init_security_headers(app, hsts=settings.environment != "development")  # last: fills in what others left
    init_request_logging(app)
    init_request_transactions(app)
    init_access_control(app)
    init_content_checks(app)
    init_idempotency(app)
    register_error_handlers(app)
    _register_blueprints(app)
    _init_admin_ui(app)
    _register_cli(app)
    return app


def _init_dsr(app: APIFlask, settings: Settings, database: Database) -> None:
    """Data-subject requests and the periodic jobs (APScheduler) that watch their deadlines."""
    from govsvc.config import ConfigError
    from govsvc.core.errors import ValidationFailed
    from govsvc.core.scheduler import Jobs, start_with_first_request
    from govsvc.dsr import domain
    from govsvc.dsr.jobs import maintenance

    try:
        dsr = domain.build(
            settings,
            app.extensions["govsvc.vault"],
            app.extensions["govsvc.field_keys"],
            app.extensions["govsvc.taxonomy"],
        )
    except ValidationFailed as error:
        details = "; ".join(f"{e.get('field')}: {e.get('message')}" for e in error.errors or [])
        raise ConfigError(f"policies/dsr: {error.detail} {details}") from error
    app.extensions["govsvc.dsr"] = dsr
    jobs = Jobs(database, misfire_grace_seconds=settings.scheduler_misfire_grace_seconds)
    jobs.add("dsr.maintenance", settings.scheduler_interval_seconds, lambda: maintenance(database, dsr))
    jobs.add("consent.notice_usage", settings.scheduler_interval_seconds, lambda: _fold_notices(database))
    jobs.add(
        "idempotency.purge",
        settings.scheduler_interval_seconds,
        lambda: _purge_idempotency(database, settings.idempotency_ttl_hours),
    )
    app.extensions["govsvc.jobs"] = jobs
    _init_retention(app, settings, database, jobs)
    if settings.scheduler == "thread":
        start_with_first_request(app, jobs)


def _fold_notices(database: Database) -> dict[str, int]:
    """The periodic job keeping the notices in use (``/admin/notices``) folded from the consent ledger."""
    from govsvc.consent.service import fold_notice_usage

    with database.transaction() as session:
        return fold_notice_usage(session)


def _purge_idempotency(database: Database, ttl_hours: int) -> dict[str, int]:
    """The periodic job deleting the stored responses of Idempotency-Keys past their TTL."""
    from govsvc.core.idempotency import purge_expired

    with database.transaction() as session:
        return {"purged": purge_expired(session, ttl_hours)}


def _init_retention(app: APIFlask, settings: Settings, database: Database, jobs: Any) -> None:
    """Retention rules, legal holds and external SQL sources (issue 8), wired into DSRs (phase 2); one cron job per
    scheduled rule in the persistent job store, kept in line with the stored rules by an interval job."""
    from govsvc.dsr.domain import wire_retention
    from govsvc.retention.jobs import EventWatch, RuleJobSync
    from govsvc.retention.service import Retention
    from govsvc.sources.service import Sources

    sources = Sources(settings.secret_key)
    retention = Retention(
        secret_key=settings.secret_key,
        policy_dir=Path(settings.policy_dir),
        vault=app.extensions["govsvc.vault"],
        field_keys=app.extensions["govsvc.field_keys"],
        sources=sources,
        masker_of=lambda: app.extensions["govsvc.pii"].masker,
        chunk_size=settings.retention_chunk_size,
        lease_seconds=settings.retention_lease_seconds,
    )
    app.extensions["govsvc.sources"] = sources
    app.extensions["govsvc.retention"] = retention
    wire_retention(app.extensions["govsvc.dsr"], retention, sources)
    sync = RuleJobSync(database, retention, jobs)
    app.extensions["govsvc.retention_jobs"] = sync
    jobs.add("retention.sync", settings.scheduler_interval_seconds, sync)
    jobs.on_start.append(sync)
    watch = EventWatch(database, retention, jobs)
    app.extensions["govsvc.retention_events"] = watch
    jobs.add("retention.events", settings.scheduler_interval_seconds, watch)
    jobs.on_start.append(watch)
    if settings.ledger_export_dir:
        from govsvc.retention.ledger import append_export

        export_dir = Path(settings.ledger_export_dir)
        jobs.add("retention.ledger_export", settings.ledger_export_seconds, lambda: append_export(database, export_dir))


def _pii_service(settings: Settings) -> Any:
    """The PII service; its engines are built and warmed up once per process and shared by every app."""
    from govsvc.config import ConfigError
    from govsvc.pii.engines import get_engines
    from govsvc.pii.masking import MaskingConfigError
    from govsvc.pii.service import PiiService

    try:
        return PiiService.build(get_engines(settings.pii_nlp), Path(settings.policy_dir), settings.secret_key)
    except (MaskingConfigError, RuntimeError) as error:
        raise ConfigError(str(error)) from error


def _start_sequencer_with_first_request(app: APIFlask) -> None:
    """Serving processes sequence the audit log in a background thread (CLI runs do not)."""
    started = False

    @app.before_request
    def _start_sequencer() -> None:
        nonlocal started
        if not started:
            started = True
            app.extensions["govsvc.sequencer"].start()


def _register_blueprints(app: APIFlask) -> None:
    from govsvc.audit.api import bp as audit_bp
    from govsvc.auth.api import bp as auth_bp
    from govsvc.consent.api import bp as consent_bp
    from govsvc.consent.api import wellknown_bp
    from govsvc.crypto.api import bp as crypto_bp
    from govsvc.decisions.api import bp as decisions_bp
    from govsvc.dsr.api import bp as dsr_bp
    from govsvc.dsr.api import opendsr_bp
    from govsvc.health.api import bp as health_bp
    from govsvc.holds.api import bp as holds_bp
    from govsvc.pii.api import bp as pii_bp
    from govsvc.policy.api import bp as policy_bp
    from govsvc.retention.api import bp as retention_bp
    from govsvc.sources.api import bp as sources_bp
    from govsvc.subjects.api import bp as subjects_bp
    from govsvc.taxonomy.api import bp as taxonomy_bp
    from govsvc.vault.api import bp as vault_bp

    blueprints = (
        health_bp,
        auth_bp,
        policy_bp,
        audit_bp,
        taxonomy_bp,
        subjects_bp,
        consent_bp,
        wellknown_bp,
        decisions_bp,
        vault_bp,
        crypto_bp,
        pii_bp,
        dsr_bp,
        opendsr_bp,
        retention_bp,
        holds_bp,
        sources_bp,
    )
    for blueprint in blueprints:
        app.register_blueprint(blueprint)


def _init_admin_ui(app: APIFlask) -> None:
    from govsvc.admin.web import init_admin

    init_admin(app)


def _register_cli(app: APIFlask) -> None:
    from govsvc.cli import register_commands

    register_commands(app)


def settle_heap() -> None:
    """Move everything loaded so far (modules, the PII models, policy files), which lives as long as the process,
    out of the cyclic garbage collector's generations, so that collections during requests stay short. Called
    once the app is built, by ``wsgi.py`` and by the in-process benchmarks that measure what it serves."""
    gc.collect()
    gc.freeze()
