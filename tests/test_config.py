"""Configuration: environment variables, defaults, and refusal to start in production with a weak secret."""

from __future__ import annotations

import pytest

from govsvc import create_app
from govsvc.config import DEVELOPMENT_SECRET_KEY, ConfigError, Settings, settings_from_env


def test_defaults_serve_sqlite_under_instance() -> None:
    settings = settings_from_env({})
    assert settings.environment == "development"
    assert settings.resolved_database_url.startswith("sqlite:///")
    assert settings.resolved_database_url.endswith("/instance/govsvc.db")
    settings.validate()


def test_environment_variables_are_read() -> None:
    settings = settings_from_env(
        {
            "GOVSVC_ENV": "production",
            "GOVSVC_DATABASE_URL": "postgresql://u@h/db",
            "GOVSVC_SECRET_KEY": "s" * 40,
            "GOVSVC_ROOT_KEY_FILE": "/run/secrets/govsvc-root-keys",
            "GOVSVC_LOG_LEVEL": "debug",
            "GOVSVC_MAX_BODY_BYTES": "2048",
        }
    )
    assert settings.is_production
    assert settings.resolved_database_url == "postgresql://u@h/db"
    assert settings.log_level == "DEBUG"
    assert settings.max_body_bytes == 2048
    settings.validate()


@pytest.mark.parametrize(
    "secret",
    [None, "", DEVELOPMENT_SECRET_KEY, "too-short-secret"],
    ids=["missing", "empty", "development-default", "short"],
)
def test_production_refuses_a_default_or_missing_secret(secret: str | None) -> None:
    environ = {"GOVSVC_ENV": "production"}
    if secret is not None:
        environ["GOVSVC_SECRET_KEY"] = secret
    with pytest.raises(ConfigError, match="GOVSVC_SECRET_KEY"):
        create_app(settings_from_env(environ))


def test_development_accepts_the_marker_secret() -> None:
    Settings(environment="development").validate()


@pytest.mark.parametrize(
    ("environ", "message"),
    [
        ({"GOVSVC_ENV": "staging"}, "GOVSVC_ENV"),
        ({"GOVSVC_LOG_LEVEL": "chatty"}, "GOVSVC_LOG_LEVEL"),
        ({"GOVSVC_MAX_BODY_BYTES": "lots"}, "GOVSVC_MAX_BODY_BYTES"),
        ({"GOVSVC_MAX_BODY_BYTES": "10"}, "GOVSVC_MAX_BODY_BYTES"),
        ({"GOVSVC_SQLITE_SYNCHRONOUS": "OFF"}, "GOVSVC_SQLITE_SYNCHRONOUS"),
        ({"GOVSVC_LEDGER_EXPORT_SECONDS": "10"}, "GOVSVC_LEDGER_EXPORT_SECONDS"),
        ({"GOVSVC_LEDGER_EXPORT_DIR": __file__}, "GOVSVC_LEDGER_EXPORT_DIR"),  # a file, not a directory
    ],
)
def test_bad_values_are_refused_with_the_variable_named(environ: dict[str, str], message: str) -> None:
    with pytest.raises(ConfigError, match=message):
        settings_from_env(environ).validate()


def test_production_refuses_to_start_without_a_root_keyring() -> None:
    environ = {"GOVSVC_ENV": "production", "GOVSVC_SECRET_KEY": "s" * 40}
    with pytest.raises(ConfigError, match="GOVSVC_ROOT_KEYS"):
        create_app(settings_from_env(environ))


@pytest.mark.parametrize("keyring", ["1:not-base64!", "0:" + "QUFB" * 11, "1:QUFBQQ==", "x:QUFB"])
def test_a_malformed_root_keyring_is_refused(keyring: str, tmp_path) -> None:
    environ = {"GOVSVC_ROOT_KEYS": keyring, "GOVSVC_INSTANCE_DIR": str(tmp_path)}
    with pytest.raises(ConfigError, match="root key"):
        create_app(settings_from_env(environ))
