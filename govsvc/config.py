"""Configuration from environment variables, with documented defaults.

Every setting is read from a ``GOVSVC_*`` environment variable (see README, "Configuration"). The bind address
(``GOVSVC_BIND``) is gunicorn's, passed by ``make run``.
Tests and embedders pass a :class:`Settings` (or a mapping of overrides) to ``create_app``.
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from dataclasses import dataclass, field, fields, replace
from pathlib import Path

# A marker value, never a usable secret: production refuses to start with it.
DEVELOPMENT_SECRET_KEY = "dev-only-insecure-secret-key-change-me"  # noqa: S105
MIN_SECRET_KEY_LENGTH = 32
ENVIRONMENTS = ("development", "testing", "production")
LOG_LEVELS = ("DEBUG", "INFO", "WARNING", "ERROR")
PROJECT_ROOT = Path(__file__).resolve().parent.parent


class ConfigError(RuntimeError):
    """The configuration is unusable; the service refuses to start."""


@dataclass(frozen=True)
class Settings:
    """All settings of the service. Field docs name the environment variable."""

    environment: str = "development"  # GOVSVC_ENV: development | testing | production
    database_url: str = ""  # GOVSVC_DATABASE_URL: default sqlite:///<instance_dir>/govsvc.db
    secret_key: str = DEVELOPMENT_SECRET_KEY  # GOVSVC_SECRET_KEY: >= 32 chars, required in production
    log_level: str = "INFO"  # GOVSVC_LOG_LEVEL
    instance_dir: str = "instance"  # GOVSVC_INSTANCE_DIR: SQLite file, key files
    policy_dir: str = str(PROJECT_ROOT / "policies")  # GOVSVC_POLICY_DIR
    max_body_bytes: int = 1_048_576  # GOVSVC_MAX_BODY_BYTES: larger request bodies get 413
    sqlite_synchronous: str = "FULL"  # GOVSVC_SQLITE_SYNCHRONOUS: FULL (durable) or NORMAL
    db_pool_size: int = 5  # GOVSVC_DB_POOL_SIZE (PostgreSQL)
    # GOVSVC_DECISION_CACHE (PostgreSQL): on (decisions answer known subjects from memory, kept coherent with every
    # write on every instance by leases and invalidations) | off (a round trip per decision)
    decision_cache: str = "on"
    decision_cache_subjects: int = 200_000  # GOVSVC_DECISION_CACHE_SUBJECTS: subjects kept per process at most
    idempotency_ttl_hours: int = 24  # GOVSVC_IDEMPOTENCY_TTL_HOURS
    controller_name: str = "govsvc data controller"  # GOVSVC_CONTROLLER_NAME: named in consent receipts
    audit_origin: str = "govsvc.local/audit"  # GOVSVC_AUDIT_ORIGIN: first line of every signed checkpoint
    audit_sequencer: str = "thread"  # GOVSVC_AUDIT_SEQUENCER: thread (in each process) | off (run it elsewhere)
    audit_checkpoint_seconds: int = 2  # GOVSVC_AUDIT_CHECKPOINT_SECONDS: at most this long between checkpoints
    audit_anomaly_subjects_per_hour: int = 500  # GOVSVC_AUDIT_ANOMALY_SUBJECTS_PER_HOUR
    # GOVSVC_ROOT_KEYS: root keyring "<version>:<base64 32 bytes>,..." (the highest version wraps), or
    # GOVSVC_ROOT_KEY_FILE: a file of such lines. Production needs one; elsewhere a development root key is derived.
    root_keys: str = field(default="", repr=False)
    root_key_file: str = ""
    key_cache_size: int = 10_000  # GOVSVC_KEY_CACHE_SIZE: unwrapped data keys kept in memory
    key_cache_seconds: int = 300  # GOVSVC_KEY_CACHE_SECONDS: how long an unwrapped key stays cached
    pii_nlp: str = "auto"  # GOVSVC_PII_NLP: auto (the English NER model if installed) | spacy | pattern
    pii_max_text_chars: int = 20_000  # GOVSVC_PII_MAX_TEXT_CHARS: per text of the PII API
    pii_max_records: int = 1_000  # GOVSVC_PII_MAX_RECORDS: per records:scan / records:mask call
    pii_csv_max_bytes: int = 64 * 1_048_576  # GOVSVC_PII_CSV_MAX_BYTES: per CSV upload (streamed, not held)
    dsr_export_ttl_hours: int = 72  # GOVSVC_DSR_EXPORT_TTL_HOURS: how long a DSR download link works (once)
    dsr_processor_domain: str = "govsvc.local"  # GOVSVC_DSR_PROCESSOR_DOMAIN: OpenDSR processor domain
    scheduler: str = "thread"  # GOVSVC_SCHEDULER: thread (APScheduler in each serving process) | off
    scheduler_interval_seconds: int = 60  # GOVSVC_SCHEDULER_INTERVAL_SECONDS: DSR maintenance job period
    scheduler_misfire_grace_seconds: int = 3600  # GOVSVC_SCHEDULER_MISFIRE_GRACE_SECONDS: late cron runs still run
    retention_chunk_size: int = 1000  # GOVSVC_RETENTION_CHUNK_SIZE: rows per purge transaction
    retention_lease_seconds: int = 120  # GOVSVC_RETENTION_LEASE_SECONDS: a purge's lease, renewed per chunk
    # GOVSVC_LEDGER_EXPORT_DIR: a directory apart from the database's backups (shared by the instances) where the
    # scheduler keeps deletion-ledger.jsonl up to date; empty: no scheduled export
    ledger_export_dir: str = ""
    ledger_export_seconds: int = 900  # GOVSVC_LEDGER_EXPORT_SECONDS: how often the export is brought up to date
    admin_session_idle_minutes: int = 30  # GOVSVC_ADMIN_SESSION_IDLE_MINUTES: admin UI sign-out after inactivity
    admin_session_max_hours: int = 12  # GOVSVC_ADMIN_SESSION_MAX_HOURS: admin UI sign-out however active
    admin_login_max_failures: int = 5  # GOVSVC_ADMIN_LOGIN_MAX_FAILURES: failed sign-ins that lock an account
    admin_lockout_minutes: int = 15  # GOVSVC_ADMIN_LOCKOUT_MINUTES: how long the lock (and the IP window) lasts
    admin_login_ip_attempts: int = 20  # GOVSVC_ADMIN_LOGIN_IP_ATTEMPTS: failed sign-ins per address per window
    api_auth_max_failures: int = 20  # GOVSVC_API_AUTH_MAX_FAILURES: bad API keys per address per window -> 429
    api_auth_window_seconds: int = 300  # GOVSVC_API_AUTH_WINDOW_SECONDS: that window (and the 429's duration)
    extra: Mapping[str, object] = field(default_factory=dict)  # Flask config overrides (tests)

    @property
    def resolved_database_url(self) -> str:
        """The database URL, defaulting to an SQLite file in the instance directory."""
        if self.database_url:
            return self.database_url
        return f"sqlite:///{Path(self.instance_dir).resolve() / 'govsvc.db'}"

    @property
    def is_production(self) -> bool:
        return self.environment == "production"

    def validate(self) -> None:
        """Raise ConfigError for settings the service must not start with."""
        if self.environment not in ENVIRONMENTS:
            raise ConfigError(f"GOVSVC_ENV must be one of {', '.join(ENVIRONMENTS)}, not {self.environment!r}")
        if self.log_level not in LOG_LEVELS:
            raise ConfigError(f"GOVSVC_LOG_LEVEL must be one of {', '.join(LOG_LEVELS)}")
        if self.sqlite_synchronous not in ("FULL", "NORMAL"):
            raise ConfigError("GOVSVC_SQLITE_SYNCHRONOUS must be FULL or NORMAL")
        if self.max_body_bytes < 1024:
            raise ConfigError("GOVSVC_MAX_BODY_BYTES must be at least 1024")
        if self.decision_cache not in ("on", "off"):
            raise ConfigError("GOVSVC_DECISION_CACHE must be on or off")
        if self.decision_cache_subjects < 1:
            raise ConfigError("GOVSVC_DECISION_CACHE_SUBJECTS must be at least 1")
        if self.audit_sequencer not in ("thread", "off"):
            raise ConfigError("GOVSVC_AUDIT_SEQUENCER must be thread or off")
        if not 1 <= self.audit_checkpoint_seconds <= 60:
            raise ConfigError("GOVSVC_AUDIT_CHECKPOINT_SECONDS must be between 1 and 60")
        if not self.audit_origin or any(ch.isspace() for ch in self.audit_origin):
            raise ConfigError("GOVSVC_AUDIT_ORIGIN must be a non-empty line without spaces")
        if self.scheduler not in ("thread", "off"):
            raise ConfigError("GOVSVC_SCHEDULER must be thread or off")
        if not 1 <= self.dsr_export_ttl_hours <= 24 * 30 or not 1 <= self.scheduler_interval_seconds <= 3600:
            raise ConfigError(
                "GOVSVC_DSR_EXPORT_TTL_HOURS (1-720) or GOVSVC_SCHEDULER_INTERVAL_SECONDS (1-3600) out of range"
            )
        if not 60 <= self.scheduler_misfire_grace_seconds <= 7 * 86400:
            raise ConfigError("GOVSVC_SCHEDULER_MISFIRE_GRACE_SECONDS must be between 60 and 604800")
        if not 1 <= self.retention_chunk_size <= 20_000 or not 1 <= self.retention_lease_seconds <= 3600:
            raise ConfigError("GOVSVC_RETENTION_CHUNK_SIZE (1-20000) or GOVSVC_RETENTION_LEASE_SECONDS (1-3600)")
        if not 60 <= self.ledger_export_seconds <= 86_400:
            raise ConfigError("GOVSVC_LEDGER_EXPORT_SECONDS must be between 60 and 86400")
        export_dir = Path(self.ledger_export_dir) if self.ledger_export_dir else None
        if export_dir is not None and export_dir.exists() and not export_dir.is_dir():
            raise ConfigError("GOVSVC_LEDGER_EXPORT_DIR must be a directory (it is made if missing)")
        if not 1 <= self.api_auth_max_failures <= 100_000 or not 1 <= self.api_auth_window_seconds <= 86_400:
            raise ConfigError("GOVSVC_API_AUTH_MAX_FAILURES (1-100000) or GOVSVC_API_AUTH_WINDOW_SECONDS out of range")
        if self.pii_nlp not in ("auto", "spacy", "pattern"):
            raise ConfigError("GOVSVC_PII_NLP must be auto, spacy or pattern")
        if self.pii_max_text_chars < 100 or self.pii_max_records < 1 or self.pii_csv_max_bytes < 1024:
            raise ConfigError("GOVSVC_PII_* limits are too small")
        if not 1 <= self.admin_session_idle_minutes <= 24 * 60 or not 1 <= self.admin_session_max_hours <= 24 * 7:
            raise ConfigError("GOVSVC_ADMIN_SESSION_IDLE_MINUTES (1-1440) or GOVSVC_ADMIN_SESSION_MAX_HOURS (1-168)")
        if self.admin_login_max_failures < 1 or self.admin_lockout_minutes < 1 or self.admin_login_ip_attempts < 1:
            raise ConfigError("GOVSVC_ADMIN_LOGIN_* and GOVSVC_ADMIN_LOCKOUT_MINUTES must be at least 1")
        if self.is_production:
            if not self.secret_key or self.secret_key == DEVELOPMENT_SECRET_KEY:
                raise ConfigError("production requires GOVSVC_SECRET_KEY to be set to a random value")
            if len(self.secret_key) < MIN_SECRET_KEY_LENGTH:
                raise ConfigError(f"GOVSVC_SECRET_KEY must be at least {MIN_SECRET_KEY_LENGTH} characters")
            if not self.root_keys and not self.root_key_file:
                raise ConfigError("production requires GOVSVC_ROOT_KEYS or GOVSVC_ROOT_KEY_FILE (the root keyring)")

    def with_overrides(self, **changes: object) -> Settings:
        """A copy with some fields replaced."""
        return replace(self, **changes)


_INT_FIELDS = {
    "max_body_bytes",
    "db_pool_size",
    "decision_cache_subjects",
    "idempotency_ttl_hours",
    "audit_checkpoint_seconds",
    "audit_anomaly_subjects_per_hour",
    "key_cache_size",
    "key_cache_seconds",
    "pii_max_text_chars",
    "pii_max_records",
    "pii_csv_max_bytes",
    "dsr_export_ttl_hours",
    "scheduler_interval_seconds",
    "scheduler_misfire_grace_seconds",
    "retention_chunk_size",
    "retention_lease_seconds",
    "ledger_export_seconds",
    "admin_session_idle_minutes",
    "admin_session_max_hours",
    "admin_login_max_failures",
    "admin_lockout_minutes",
    "admin_login_ip_attempts",
    "api_auth_max_failures",
    "api_auth_window_seconds",
}


def settings_from_env(environ: Mapping[str, str] | None = None) -> Settings:
    """Build settings from ``GOVSVC_*`` variables; unknown values raise ConfigError."""
    environ = os.environ if environ is None else environ
    values: dict[str, object] = {}
    names = {f.name for f in fields(Settings)} - {"extra"}
    env_names = {name: "GOVSVC_" + ("ENV" if name == "environment" else name.upper()) for name in names}
    for name, env_name in env_names.items():
        raw = environ.get(env_name)
        if raw is None or raw == "":
            continue
        if name in _INT_FIELDS:
            try:
                values[name] = int(raw)
            except ValueError:
                raise ConfigError(f"{env_name} must be an integer") from None
        elif name in ("log_level", "sqlite_synchronous"):
            values[name] = raw.upper()
        elif name in ("pii_nlp", "scheduler"):
            values[name] = raw.lower()
        else:
            values[name] = raw
    return Settings(**values)  # type: ignore[arg-type]
