"""Command line: ``govsvc <command>`` (or ``flask --app wsgi <command>``).

Migrations, seeding ``policies/``, API clients and admin users. Secrets are printed once (a new API key) or
read without echo (a password); they are never logged.
"""

from __future__ import annotations

import json
import sys
from datetime import timedelta
from pathlib import Path
from typing import Any

import click
from flask import Flask, current_app
from flask.cli import AppGroup, FlaskGroup, with_appcontext

from govsvc.audit import signing
from govsvc.audit.service import AuditContext, record, reset_context, set_context
from govsvc.auth import service as auth_service
from govsvc.bootstrap import seed_all
from govsvc.config import Settings
from govsvc.core import migrate
from govsvc.core.db import Database, utcnow
from govsvc.core.errors import ServiceError
from govsvc.crypto.keys import KeyStore
from govsvc.crypto.providers import new_root_key_line
from govsvc.policy import service as policy_service

CLI_CONTEXT = AuditContext(principal_id="cli", role="system")


def _db() -> Database:
    return current_app.extensions["govsvc.db"]


def _settings() -> Settings:
    return current_app.config["GOVSVC_SETTINGS"]


def _policy_dir() -> Path:
    return Path(_settings().policy_dir)


def _known_roles() -> frozenset[str]:
    return frozenset(policy_service.roles_of(policy_service.load_policy_file(_policy_dir())))


def _fail(error: ServiceError) -> None:
    click.echo(f"error: {error.detail}", err=True)
    for item in error.errors or []:
        click.echo(f"  {item.get('field')}: {item.get('message')}", err=True)
    sys.exit(1)


db_group = AppGroup("db", help="Database migrations.")


@db_group.command("upgrade")
@click.option("--revision", default="head", show_default=True)
def db_upgrade(revision: str) -> None:
    """Apply migrations up to a revision."""
    migrate.upgrade(_db().url, revision)
    click.echo(f"database at {revision}")


@db_group.command("downgrade")
@click.argument("revision")
def db_downgrade(revision: str) -> None:
    """Revert migrations down to a revision ('base' empties the schema)."""
    migrate.downgrade(_db().url, revision)
    click.echo(f"database at {revision}")


@db_group.command("current")
def db_current() -> None:
    """Show the database's revision and the newest one."""
    with _db().engine.connect() as connection:
        click.echo(f"current: {migrate.current_revision(connection)}  head: {migrate.head_revision()}")


@db_group.command("app-role-sql")
@click.option("--role", default="govsvc_app", show_default=True)
def db_app_role_sql(role: str) -> None:
    """Print the PostgreSQL GRANTs for a separate application role (INSERT/SELECT only on the audit log)."""
    from govsvc.core.roles import app_role_grants

    for statement in app_role_grants(role):
        click.echo(statement + ";")


@click.command("seed")
@with_appcontext
@click.option("--replace", is_flag=True, help="Re-apply policies/ over the stored policy (shows the diff).")
def seed(replace: bool) -> None:
    """Load policies/ into the database (only what it lacks, unless --replace)."""
    try:
        report = seed_all(_db(), _settings(), replace=replace, actor="cli:seed")
    except ServiceError as error:
        _fail(error)
        return
    result = report.policy
    for line in result.added:
        click.echo("+ " + ", ".join(line.as_row()))
    for line in result.removed:
        click.echo("- " + ", ".join(line.as_row()))
    click.echo(f"policy version {result.version}{'' if result.changed else ' (unchanged)'}")
    click.echo(f"taxonomy {'version ' + str(report.taxonomy_version) if report.taxonomy_version else 'unchanged'}")
    click.echo(f"masking rules {'version ' + str(report.masking_version) if report.masking_version else 'unchanged'}")


@click.command("init")
@with_appcontext
def init() -> None:
    """Migrate to head and seed policies/ (what `make run` does)."""
    migrate.upgrade(_db().url, "head")
    try:
        report = seed_all(_db(), _settings(), actor="cli:init")
    except ServiceError as error:
        _fail(error)
        return
    result = report.policy
    click.echo(f"database at head; policy version {result.version}{' (seeded)' if result.changed else ''}")
    if report.taxonomy_version:
        click.echo(f"taxonomy version {report.taxonomy_version} (seeded)")
    if report.masking_version:
        click.echo(f"masking rules version {report.masking_version} (seeded)")
    click.echo(f"audit checkpoint key: {report.audit_vkey}")
    from govsvc.subjects.service import reseal_legacy_values

    with _db().transaction() as session:
        resealed = reseal_legacy_values(session, current_app.extensions["govsvc.field_keys"])
    if resealed:
        click.echo(f"re-sealed {resealed} identifier values and birth dates under their subjects' data keys")


policy_group = AppGroup("policy", help="The service's RBAC policy.")


@policy_group.command("reload")
def policy_reload() -> None:
    """Make every instance reload the stored policy before its next request."""
    with _db().transaction() as session:
        version = policy_service.bump_version(session, actor="cli")
    click.echo(f"policy version {version}")


clients_group = AppGroup("clients", help="API clients (apps) and their keys.")


@clients_group.command("create")
@click.option("--name", required=True)
@click.option("--role", required=True, help="A role named in policies/policy.csv, e.g. app.")
@click.option("--expires-in-days", type=click.IntRange(min=1), default=None)
def clients_create(name: str, role: str, expires_in_days: int | None) -> None:
    """Create a client and print its key (shown this once)."""
    expires_at = utcnow() + timedelta(days=expires_in_days) if expires_in_days else None
    try:
        with _db().transaction() as session:
            issued = auth_service.create_client(
                session, name=name, role=role, expires_at=expires_at, known_roles=_known_roles(), created_by="cli"
            )
            auth_service.record_client_created(session, issued.client, context=CLI_CONTEXT)
    except ServiceError as error:
        _fail(error)
        return
    click.echo(f"client_id: {issued.client.client_id}")
    click.echo(f"role:      {issued.client.role}")
    click.echo(f"api_key:   {issued.api_key}")
    click.echo("Store the key now: it is not shown again.", err=True)


@clients_group.command("list")
def clients_list() -> None:
    """List clients (never their keys)."""
    with _db().transaction(write=False) as session:
        clients = auth_service.list_clients(session, after_pk=None, limit=10_000)
        for client in clients:
            click.echo(
                f"{client.client_id}\t{client.key_prefix}\t{client.role}\t"
                f"{auth_service.client_status(client)}\t{client.name}"
            )


@clients_group.command("revoke")
@click.argument("client_id")
def clients_revoke(client_id: str) -> None:
    """Revoke a client's key at once."""
    try:
        with _db().transaction() as session:
            revoked = auth_service.revoke_client(session, client_id)
            auth_service.record_client_revoked(session, revoked, context=CLI_CONTEXT)
    except ServiceError as error:
        _fail(error)
        return
    click.echo(f"revoked {client_id}")


admins_group = AppGroup("admins", help="Admin users of the admin UI.")


@admins_group.command("create")
@click.option("--username", required=True)
@click.option("--role", required=True, help="admin, compliance_officer, dpo, legal or auditor")
@click.option("--password-stdin", is_flag=True, help="Read the password from standard input.")
def admins_create(username: str, role: str, password_stdin: bool) -> None:
    """Create an admin user (the password is stored as an argon2id hash)."""
    if password_stdin:
        password = sys.stdin.readline().rstrip("\n")
    else:
        password = click.prompt("Password", hide_input=True, confirmation_prompt=True)
    try:
        with _db().transaction() as session:
            user = auth_service.create_admin_user(
                session, username=username, password=password, role=role, known_roles=_known_roles()
            )
            record(
                session,
                "admin_user.created",
                object_ref=f"admin:{user.username}",
                details={"role": role},
                context=CLI_CONTEXT,
            )
    except ServiceError as error:
        _fail(error)
        return
    click.echo(f"created admin user {user.username} ({user.role})")


audit_group = AppGroup("audit", help="The tamper-evident audit log.")


@audit_group.command("sequence")
def audit_sequence() -> None:
    """Place every pending event in the tree now and sign a checkpoint."""
    placed = current_app.extensions["govsvc.sequencer"].drain()
    click.echo(f"sequenced {placed} events")


@audit_group.command("rotate-key")
def audit_rotate_key() -> None:
    """Retire the checkpoint signing key (it stays published) and start signing with a new one."""
    with _db().transaction() as session:
        new = signing.rotate_key(session, _settings().secret_key, _settings().audit_origin, context=CLI_CONTEXT)
        vkey = new.vkey
    click.echo(f"new audit checkpoint key: {vkey}")


@audit_group.command("verify")
@click.option("--from", "seq_from", type=click.IntRange(min=0), default=None)
@click.option("--to", "seq_to", type=click.IntRange(min=0), default=None)
def audit_verify(seq_from: int | None, seq_to: int | None) -> None:
    """Verify the stored log against its latest signed checkpoint (exit 1 on findings)."""
    from govsvc.audit.export import verify_stored_log

    report = verify_stored_log(_db(), seq_from, seq_to)
    for finding in report.sorted_findings():
        click.echo(f"{finding.kind} at seq {finding.seq}: {finding.message}")
    click.echo(f"{'OK' if report.ok else 'FAILED'}: {report.event_count} events, tree size {report.tree_size}")
    sys.exit(0 if report.ok else 1)


crypto_group = AppGroup("crypto", help="The key hierarchy: status, rotation.")


def _key_store() -> KeyStore:
    return current_app.extensions["govsvc.keys"]


@crypto_group.command("status")
def crypto_status() -> None:
    """Root, tenant and subject key versions (never key material)."""
    with _db().transaction() as session:
        status = _key_store().status(session)
    click.echo(json.dumps(status, default=str, indent=2, ensure_ascii=False))


@crypto_group.command("new-root-key")
@click.argument("version", type=click.IntRange(min=1))
def crypto_new_root_key(version: int) -> None:
    """Print a keyring line with a fresh random root key (append it to the key file, then rotate-root)."""
    click.echo(new_root_key_line(version))


@crypto_group.command("rotate-root")
def crypto_rotate_root() -> None:
    """Re-wrap the tenant keys under the newest root key version of the keyring (data untouched)."""
    token = set_context(CLI_CONTEXT)
    try:
        with _db().transaction() as session:
            count = _key_store().rotate_root(session)
            record(session, "key.rotated", object_ref="key:root", details={"rewrapped": count})
    finally:
        reset_context(token)
    click.echo(f"re-wrapped {count} tenant key(s) under root version {_key_store().provider.current_version}")


@crypto_group.command("rotate-tenant")
def crypto_rotate_tenant() -> None:
    """A new tenant key version; subject data keys are re-wrapped under it (data untouched)."""
    token = set_context(CLI_CONTEXT)
    try:
        with _db().transaction() as session:
            count = _key_store().rotate_tenant(session)
            record(session, "key.rotated", object_ref="key:tenant", details={"rewrapped": count})
    finally:
        reset_context(token)
    click.echo(f"re-wrapped {count} subject key(s) under the new tenant key")


@crypto_group.command("rotate-data-keys")
@click.option("--resume", "resume_id", default=None, help="continue this rotation where it stopped")
@click.option("--chunk", type=click.IntRange(min=1, max=100_000), default=1000)
def crypto_rotate_data_keys(resume_id: str | None, chunk: int) -> None:
    """New data key versions for every subject, then re-encrypt their values in chunks (resumable)."""
    from govsvc.vault.service import run_rotation, start_rotation

    token = set_context(CLI_CONTEXT)
    try:
        if resume_id is None:
            with _db().transaction() as session:
                rotation = start_rotation(session, _key_store(), subject=None, actor="cli")
                record(session, "key.rotated", object_ref="key:data:all", details={"rotation_id": rotation.rotation_id})
                resume_id = rotation.rotation_id
            click.echo(f"rotation {resume_id} started")
        done = run_rotation(_db(), _key_store(), resume_id, chunk=chunk)
    except ServiceError as error:
        _fail(error)
        return
    finally:
        reset_context(token)
    click.echo(f"rotation {done.rotation_id}: {done.status}, {done.values_done} values re-encrypted")


dsr_group = AppGroup("dsr", help="Data-subject requests.")


def _dsr() -> object:
    return current_app.extensions["govsvc.dsr"]


@dsr_group.command("check-overdue")
def dsr_check_overdue() -> None:
    """Flag overdue requests (one dsr.overdue event each), purge expired bundles, deliver OpenDSR callbacks."""
    from govsvc.dsr.jobs import maintenance

    result = maintenance(_db(), _dsr())  # type: ignore[arg-type]
    click.echo(json.dumps(result))


@dsr_group.command("list")
@click.option("--status", default=None)
@click.option("--overdue", is_flag=True, help="only overdue requests")
def dsr_list(status: str | None, overdue: bool) -> None:
    """The request queue: id, type, status, due date, assignee."""
    service = _dsr().service  # type: ignore[attr-defined]
    with _db().transaction(write=False) as session:
        for request in service.list(session, status=status, overdue=True if overdue else None, limit=10_000):
            click.echo(
                f"{request.request_id}\t{request.request_type}\t{request.status}\t{request.due_at.isoformat()}\t"
                f"{request.assignee or '-'}"
            )


@dsr_group.command("fulfil")
@click.argument("request_id")
@click.option("--accept-failures", is_flag=True, help="close as partially completed if a connector fails")
def dsr_fulfil(request_id: str, accept_failures: bool) -> None:
    """Fulfil a verified request; prints the outcome (and the one-time download path of an export)."""
    token = set_context(CLI_CONTEXT)
    try:
        result = _dsr().fulfilment.run(_db(), request_id, actor="cli", accept_failures=accept_failures)  # type: ignore[attr-defined]
    except ServiceError as error:
        _fail(error)
        return
    finally:
        reset_context(token)
    click.echo(f"{result.request_id}: {result.status}")
    for run in result.runs:
        click.echo(f"  {run['connector']} {run['operation']}: {run['status']}")
    if result.download:
        click.echo(f"download once, until {result.download['expires_at'].isoformat()}: {result.download['url']}")


retention_group = AppGroup("retention", help="Retention rules, purges and the deletion ledger.")


def _retention() -> Any:
    return current_app.extensions["govsvc.retention"]


def _print_run(run: Any) -> None:
    click.echo(
        f"{run.run_id}\t{run.rule_key}\t{run.mode}\t{run.status}\tcounts={run.counts}\texclusions={run.exclusions}"
        f"\tduration_ms={run.duration_ms}"
    )


@retention_group.command("list")
def retention_list() -> None:
    """The rules: key, store, trigger, period, action, schedule (paused or not)."""
    from govsvc.core.scheduler import JobControl
    from govsvc.retention.jobs import job_name

    current_app.extensions["govsvc.retention_jobs"]()
    control = JobControl(_db().engine, current_app.extensions["govsvc.jobs"])
    with _db().transaction(write=False) as session:
        policy = _retention().policy(session)
    click.echo(f"policy version {policy.version}; approved dry run required: {policy.require_approved_dry_run}")
    for rule in policy.rules.values():
        status = control.status(job_name(rule.key)) if rule.schedule else None
        schedule = f"{rule.schedule}{' (paused)' if status and status.paused else ''}" if rule.schedule else "-"
        click.echo(f"{rule.key}\t{rule.store}\t{rule.trigger}+{rule.period_days}d\t{rule.action}\t{schedule}")


def _retention_call(function: Any) -> Any:
    token = set_context(CLI_CONTEXT)
    try:
        return function()
    except ServiceError as error:
        _fail(error)
        return None
    finally:
        reset_context(token)


@retention_group.command("dry-run")
@click.argument("rule")
def retention_dry_run(rule: str) -> None:
    """Preview a rule (stored and audited as retention.dry_run)."""
    run = _retention_call(lambda: _retention().dry_run(_db(), rule, actor="cli"))
    if run is not None:
        _print_run(run)
        click.echo(f"samples: {run.samples}")


@retention_group.command("approve")
@click.argument("run_id")
def retention_approve(run_id: str) -> None:
    """Approve a dry run (as the CLI operator)."""

    def approve() -> Any:
        with _db().transaction() as session:
            return _retention().approve(session, run_id, actor="cli")

    run = _retention_call(approve)
    if run is not None:
        _print_run(run)


@retention_group.command("execute")
@click.argument("rule")
@click.option("--dry-run-id", default=None, help="the approved dry run this execution follows")
def retention_execute(rule: str, dry_run_id: str | None) -> None:
    """Execute a rule (resumes its crashed execution if there is one)."""
    run = _retention_call(lambda: _retention().execute(_db(), rule, actor="cli", dry_run_id=dry_run_id))
    if run is not None:
        _print_run(run)


@retention_group.command("run-now")
@click.argument("rule")
def retention_run_now(rule: str) -> None:
    """A scheduled pass now: execute the approved dry run, or make a dry run to approve."""
    from govsvc.retention.jobs import scheduled_run

    result = _retention_call(lambda: scheduled_run(_db(), _retention(), rule, actor="cli"))
    if result is not None:
        click.echo(json.dumps(result))


@retention_group.command("pause")
@click.argument("rule")
def retention_pause(rule: str) -> None:
    """Pause a rule's scheduled runs on every instance."""
    _control_job(rule, pause=True)


@retention_group.command("resume")
@click.argument("rule")
def retention_resume(rule: str) -> None:
    """Resume a rule's scheduled runs."""
    _control_job(rule, pause=False)


def _control_job(rule: str, *, pause: bool) -> None:
    from govsvc.core.scheduler import JobControl
    from govsvc.retention.jobs import set_paused

    current_app.extensions["govsvc.retention_jobs"]()
    control = JobControl(_db().engine, current_app.extensions["govsvc.jobs"])
    try:
        # deferred: SQLite's write lock is taken by the audit insert, after the job store has written its row
        with _db().transaction(write=False) as session:
            status = set_paused(session, control, rule, paused=pause, context=CLI_CONTEXT)
    except KeyError:
        raise click.ClickException(f"rule {rule} has no schedule") from None
    click.echo(json.dumps(status.as_dict()))


@retention_group.command("export-ledger")
@click.option("--after", type=click.IntRange(min=0), default=0, help="only tombstones after this seq")
@click.option("--output", type=click.File("w", encoding="utf-8"), default="-", help="file (default: stdout)")
def retention_export_ledger(after: int, output: Any) -> None:
    """The deletion ledger as JSON lines (pseudonymous keys and names only). Keep the export apart from the backups
    of the service database: after restoring one, `replay-ledger --from` it erases again what was erased since."""
    from govsvc.retention.ledger import export_line, export_tombstones

    with _db().transaction(write=False) as session:
        for document in export_tombstones(session, after=after):
            output.write(export_line(document))


@retention_group.command("append-ledger-export")
@click.argument("directory", type=click.Path(file_okay=False, path_type=Path))
def retention_append_ledger_export(directory: Path) -> None:
    """Append the tombstones that DIRECTORY/deletion-ledger.jsonl lacks, as the scheduled export does
    (GOVSVC_LEDGER_EXPORT_DIR); for cron where the service runs no scheduler."""
    from govsvc.retention.ledger import append_export

    click.echo(json.dumps(append_export(_db(), directory)))


@retention_group.command("replay-ledger")
@click.option("--store", default=None, help="only this store (vault, source:<name>)")
@click.option(
    "--from",
    "export",
    type=click.File("r", encoding="utf-8"),
    default=None,
    help="a ledger export (export-ledger) kept apart from the backups: its tombstones missing here are added first",
)
def retention_replay_ledger(store: str | None, export: Any) -> None:
    """After restoring a backup (of the service database or of a source): erase again what the ledger says was
    erased. Run it before the restored copy is used."""
    from govsvc.retention.ledger import import_tombstones, replay

    if export is not None:
        lines = list(export)
        with _db().transaction() as session:
            imported = _retention_call(lambda: import_tombstones(session, lines))
        if imported is None:
            return
        click.echo(json.dumps({"imported": imported}), err=True)
    result = _retention_call(lambda: replay(_db(), _retention(), store=store))
    if result is not None:
        click.echo(json.dumps(result, sort_keys=True))


def register_commands(app: Flask) -> None:
    """Attach the commands to an app's CLI."""
    for command in (
        db_group,
        seed,
        init,
        policy_group,
        clients_group,
        admins_group,
        audit_group,
        crypto_group,
        dsr_group,
        retention_group,
    ):
        app.cli.add_command(command)


def main() -> None:
    """Entry point of the ``govsvc`` console script."""
    from govsvc import create_app
    from govsvc.config import ConfigError

    def create_configured_app() -> Flask:
        try:
            return create_app()
        except ConfigError as error:  # a bad GOVSVC_* setting: one line and a non-zero exit, not a traceback
            raise click.ClickException(str(error)) from None

    FlaskGroup(create_app=create_configured_app, add_default_commands=True, help="govsvc command line.")(
        prog_name="govsvc"
    )
