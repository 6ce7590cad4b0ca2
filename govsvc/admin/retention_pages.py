"""The admin UI's retention and legal hold pages: the rules with their dry runs, approvals, executions, scheduled
jobs (pause, resume, run now) and run history; the legal holds (place, release). Thin routes over
``govsvc.retention`` and ``govsvc.holds``; every action is a CSRF-protected form that works without JavaScript,
guarded by the policy's retention and holds permissions.

A refused action (the service's 409 / 422, e.g. executing without an approved dry run) re-renders the page with the
service's explanation and nothing saved; a done one redirects (post/redirect/get).
"""

from __future__ import annotations

from typing import Any

from flask import Response, current_app, redirect, request, url_for
from flask_babel import lazy_gettext

from govsvc.admin import forms
from govsvc.admin import retention_views as views
from govsvc.admin.api import bp
from govsvc.admin.forms import FormErrors
from govsvc.admin.web import allowed, page, render
from govsvc.core.access import current_principal
from govsvc.core.db import get_db, get_session, utcnow
from govsvc.core.errors import ConflictError, NotFoundError, ValidationFailed
from govsvc.holds import service as holds
from govsvc.retention.api import job_control, require_scheduled_rule, run_document
from govsvc.retention.jobs import job_name, scheduled_run, set_paused
from govsvc.retention.service import Retention
from govsvc.subjects import service as subjects
from govsvc.subjects.api import field_keys
from govsvc.subjects.models import Subject
from govsvc.subjects.service import IDENTIFIER_KINDS
from govsvc.taxonomy.api import taxonomy_cache

DONE_MESSAGES = {  # ?done=... after a redirect
    "approved": lazy_gettext("Dry run approved: the rule may now be executed with it."),
    "executed": lazy_gettext("Rule executed."),
    "paused": lazy_gettext("Scheduled runs paused."),
    "resumed": lazy_gettext("Scheduled runs resumed."),
    "run_now": lazy_gettext("Scheduled pass run."),
    "hold_created": lazy_gettext("Legal hold placed."),
    "hold_released": lazy_gettext("Legal hold released."),
}
RUN_NOW_LABELS = {
    "executed": lazy_gettext("executed the approved dry run"),
    "dry_run": lazy_gettext("made a dry run to approve"),
    "awaiting_approval": lazy_gettext("a dry run awaits approval"),
    "skipped": lazy_gettext("skipped"),
}
HOLD_STATUSES = ("active", "released")


def _retention() -> Retention:
    return current_app.extensions["govsvc.retention"]


def _actor() -> str:
    return current_principal().principal_id


def _done() -> Any:
    return DONE_MESSAGES.get(request.args.get("done") or "")


# -- the rules and the run history ---------------------------------------------------------------------------------


def _rules_page(status: int = 200, **extra: Any) -> Response:
    session = get_session()
    policy = _retention().policy(session)
    approved = views.approved_dry_runs(session, policy)
    scheduled = sorted(key for key, rule in policy.rules.items() if rule.schedule)
    control = job_control() if scheduled else None  # ends the read transaction: the job store is read on its own
    jobs = {key: control.status(job_name(key)).as_dict() for key in scheduled} if control else {}
    session = get_session()
    rows = [views.rule_row(rule, jobs.get(key), approved.get(key)) for key, rule in policy.rules.items()]
    page_runs, older = views.history(session, after=forms.cursor(request.args), limit=views.HISTORY_SIZE)
    runs = [views.run_row(run_document(run)) for run in page_runs]
    return render(
        "admin/retention.html",
        status,
        policy=policy,
        rules=rows,
        runs=runs,
        older_runs={"after": older} if older is not None else None,
        done=_done(),
        done_key=request.args.get("done") if _done() else None,
        **extra,
    )


def _refused(error: ValidationFailed | ConflictError | NotFoundError, action: str, **extra: Any) -> Response:
    status = {ConflictError: 409, NotFoundError: 404}.get(type(error), 422)
    get_session().rollback()
    return _rules_page(status, errors=FormErrors.of(error), failed_action=action, **extra)


@bp.get("/retention")
@page("retention", "read")
def retention() -> Response:
    return _rules_page()


@bp.post("/retention/rules/<string:rule_key>/dry-run")
@page("retention", "run")
def retention_dry_run(rule_key: str) -> Response:
    """Preview a rule (``Retention.dry_run``, which commits on its own) and show its report."""
    try:
        _retention().rule(get_session(), rule_key)
    except NotFoundError as error:
        return _refused(error, "dry_run")
    get_session().rollback()
    run = _retention().dry_run(get_db(), rule_key, actor=_actor())
    return redirect(url_for("admin.retention_run", run_id=run.run_id))


@bp.post("/retention/rules/<string:rule_key>/execute")
@page("retention", "execute")
def retention_execute(rule_key: str) -> Response:
    """Execute a rule with the approved dry run named in the form (``Retention.execute`` checks the approval)."""
    dry_run_id = forms.text(request.form, "dry_run_id", max_length=40) or None
    get_session().rollback()
    try:
        run = _retention().execute(get_db(), rule_key, actor=_actor(), dry_run_id=dry_run_id)
    except (ConflictError, NotFoundError, ValidationFailed) as error:
        if dry_run_id is not None:
            return _run_page(dry_run_id, 409 if isinstance(error, ConflictError) else 404, FormErrors.of(error))
        return _refused(error, "execute")
    return redirect(url_for("admin.retention_run", run_id=run.run_id, done="executed"))


@bp.post("/retention/rules/<string:rule_key>/pause")
@page("retention", "schedule")
def retention_pause(rule_key: str) -> Response:
    return _job_action(rule_key, "paused")


@bp.post("/retention/rules/<string:rule_key>/resume")
@page("retention", "schedule")
def retention_resume(rule_key: str) -> Response:
    return _job_action(rule_key, "resumed")


def _job_action(rule_key: str, what: str) -> Response:
    """Pause or resume a rule's scheduled runs on every instance (the job store), audited as the API does."""
    try:
        require_scheduled_rule(rule_key)
    except NotFoundError as error:
        return _refused(error, what)
    set_paused(get_session(), job_control(), rule_key, paused=what == "paused")
    return redirect(url_for("admin.retention", done=what))


@bp.post("/retention/rules/<string:rule_key>/run-now")
@page("retention", "execute")
def retention_run_now(rule_key: str) -> Response:
    """The rule's scheduled pass, now (``scheduled_run``): executes its approved dry run, or makes one to approve."""
    try:
        _retention().rule(get_session(), rule_key)
    except NotFoundError as error:
        return _refused(error, "run_now")
    get_session().rollback()
    outcome = scheduled_run(get_db(), _retention(), rule_key, actor=_actor())
    run_id = outcome.get("run_id") or outcome.get("dry_run_id")
    if run_id:
        return redirect(url_for("admin.retention_run", run_id=run_id, done="run_now", outcome=outcome["action"]))
    return _rules_page(
        run_now={**outcome, "label": RUN_NOW_LABELS.get(outcome["action"], outcome["action"])}, done_key="run_now"
    )


# -- one run -------------------------------------------------------------------------------------------------------


def _run_page(run_id: str, status: int = 200, errors: FormErrors | None = None) -> Response:
    session = get_session()
    document = run_document(_retention().get_run(session, run_id))
    policy = _retention().policy(session)
    outcome = request.args.get("outcome") or ""
    return render(
        "admin/retention_run.html",
        status,
        run=views.run_row(document),
        actions=views.run_actions(document, policy, views.used_dry_runs(session), allowed),
        rule=policy.rule(document["rule"]),
        done=_done(),
        done_key=request.args.get("done") if _done() else None,
        outcome=RUN_NOW_LABELS.get(outcome),
        errors=errors,
    )


@bp.get("/retention/runs/<string:run_id>")
@page("retention", "read")
def retention_run(run_id: str) -> Response:
    return _run_page(run_id)


@bp.post("/retention/runs/<string:run_id>/approve")
@page("retention", "approve")
def retention_approve(run_id: str) -> Response:
    try:
        _retention().approve(get_session(), run_id, actor=_actor())
    except ConflictError as error:
        get_session().rollback()
        return _run_page(run_id, 409, FormErrors.of(error))
    return redirect(url_for("admin.retention_run", run_id=run_id, done="approved"))


# -- legal holds ---------------------------------------------------------------------------------------------------


def _holds_page(status: int = 200, **extra: Any) -> Response:
    wanted = request.args.get("status", "active")
    wanted = wanted if wanted in (*HOLD_STATUSES, "all") else "active"
    today = utcnow().date()
    session = get_session()
    holds, older = views.hold_rows(
        session,
        status=None if wanted == "all" else wanted,
        today=today,
        after=forms.cursor(request.args),
        limit=views.HOLDS_PAGE,
    )
    return render(
        "admin/holds.html",
        status,
        holds=holds,
        older_holds={"status": wanted, "after": older} if older is not None else None,
        counts=views.hold_counts(session, today),
        status_filter=wanted,
        statuses=HOLD_STATUSES,
        scopes=list(views.SCOPE_LABELS.items()),
        identifier_kinds=sorted(IDENTIFIER_KINDS),
        done=_done(),
        done_key=request.args.get("done") if _done() else None,
        **extra,
    )


@bp.get("/holds")
@page("holds", "read")
def holds_list() -> Response:
    return _holds_page(values={})


@bp.post("/holds")
@page("holds", "write")
def hold_create() -> Response:
    """Place a hold (``holds.create_hold``: audited, a subject hold sets the subject's flag at once)."""
    session = get_session()
    values = {k: v for k, v in request.form.items() if k not in ("subject_value", "csrf_token")}
    try:
        submitted = forms.legal_hold(request.form)
        reference = submitted.pop("subject")
        subject = subjects.resolve(session, field_keys(), reference) if reference else None
        known = frozenset(taxonomy_cache().current(session).categories)
        holds.create_hold(
            session, holds.HoldInput(subject=subject, known_categories=known, **submitted), actor=_actor()
        )
    except (ValidationFailed, NotFoundError) as error:
        get_session().rollback()
        status = 404 if isinstance(error, NotFoundError) else 422
        return _holds_page(status, values=values, errors=FormErrors.of(error), failed_action="create")
    return redirect(url_for("admin.holds_list", done="hold_created"))


@bp.post("/holds/<string:hold_id>/release")
@page("holds", "release")
def hold_release(hold_id: str) -> Response:
    """Release a hold, then re-run the DSR erasures it kept back (as ``POST /v1/holds/{id}:release`` does)."""
    from govsvc.dsr.domain import rerun_held_erasures

    session = get_session()
    try:
        hold = holds.release_hold(session, hold_id, actor=_actor())
    except ConflictError as error:
        session.rollback()
        return _holds_page(409, values={}, errors=FormErrors.of(error), failed_action="release")
    subject = session.get(Subject, hold.subject_pk) if hold.subject_pk is not None else None
    subject_id = subject.subject_id if subject is not None else None
    session.commit()  # the release stands before the erasures it frees run (each commits on its own)
    if subject_id is not None:
        rerun_held_erasures(get_db(), current_app.extensions["govsvc.dsr"], subject_id, actor=_actor())
    return redirect(url_for("admin.holds_list", done="hold_released"))
