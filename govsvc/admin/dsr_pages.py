"""The admin UI's data-subject request pages: the queue, a request's detail and timeline, and its actions (verify,
assign, note, extend, deny, complete, download the export). Thin routes over ``govsvc.dsr``'s services; every
action is a CSRF-protected form that works without JavaScript, guarded by the dsr permissions of the policy.

A refused or invalid action re-renders the request with the service's explanation (409 / 422), so the request's
transaction is rolled back and nothing is saved; a done one redirects back to the request (post/redirect/get),
except completing an access or portability request, whose one-time download is shown once, in that response.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from flask import Response, current_app, redirect, request, stream_with_context, url_for
from flask_babel import gettext, lazy_gettext
from sqlalchemy.orm import Session

from govsvc.admin import dsr_views, forms
from govsvc.admin.api import bp
from govsvc.admin.forms import FormErrors
from govsvc.admin.web import allowed, current_language, is_htmx, page, render
from govsvc.core.access import current_principal, get_policy_engine
from govsvc.core.db import get_db, get_session, utcnow
from govsvc.core.errors import ConflictError, NotFoundError, ValidationFailed
from govsvc.dsr import export, letters
from govsvc.dsr.domain import Dsr
from govsvc.dsr.fulfilment import DOWNLOAD_PATH
from govsvc.dsr.models import DsrRequest
from govsvc.dsr.rules import REQUEST_TYPES
from govsvc.dsr.service import DENIAL_REASONS, STATUSES, VERIFICATION_METHODS, Intake, Requester
from govsvc.subjects.service import IDENTIFIER_KINDS

QUEUE_PAGE = 50
DONE_MESSAGES = {  # ?done=... after a redirect
    "received": lazy_gettext("Request recorded."),
    "verified": lazy_gettext("Identity verified."),
    "verification_failed": lazy_gettext("Verification failed: the request still waits for verification."),
    "assigned": lazy_gettext("Assignment saved."),
    "note": lazy_gettext("Note added."),
    "extended": lazy_gettext("Deadline extended."),
    "denied": lazy_gettext("Request denied."),
    "completed": lazy_gettext("Request fulfilled."),
    "acknowledged": lazy_gettext("Acknowledgement recorded."),
    "paused": lazy_gettext("Clock paused."),
    "resumed": lazy_gettext("Clock restarted; the due dates moved by the time paused."),
    "cancelled": lazy_gettext("Request cancelled."),
}


def _dsr() -> Dsr:
    return current_app.extensions["govsvc.dsr"]


def _actor() -> str:
    return current_principal().principal_id


def _load(request_id: str, *, for_update: bool = False) -> DsrRequest:
    return _dsr().service.get(get_session(), request_id, for_update=for_update)


# -- the queue ---------------------------------------------------------------------------------------------------


@bp.get("/requests")
@page("dsr", "read")
def dsr_queue() -> Response:
    template = "admin/_dsr_queue_results.html" if is_htmx() else "admin/dsr_queue.html"
    choices = {"statuses": STATUSES, "types": REQUEST_TYPES, "type_labels": dsr_views.REQUEST_TYPE_LABELS}
    try:
        criteria = forms.dsr_queue_filter(request.args, STATUSES, REQUEST_TYPES)
    except ValidationFailed as error:
        return render(template, 422, errors=FormErrors.of(error), rows=[], filters=request.args, **choices)
    now = utcnow()
    session = get_session()
    found = _dsr().service.queue(
        session,
        status=criteria.status,
        request_type=criteria.request_type,
        overdue=criteria.overdue,
        now=now,
        offset=(criteria.page - 1) * QUEUE_PAGE,
        limit=QUEUE_PAGE,
    )
    rows = [dsr_views.queue_row(session, _dsr(), item, now) for item in found[:QUEUE_PAGE]]
    next_args = {**request.args.to_dict(), "page": criteria.page + 1} if len(found) > QUEUE_PAGE else None
    return render(template, rows=rows, filters=request.args, next_args=next_args, **choices)


# -- intake (a request received by phone, on paper or in person) -------------------------------------------------


def _intake_form(status: int = 200, **extra: Any) -> Response:
    session = get_session()
    return render(
        "admin/dsr_new.html",
        status,
        types=[(t, dsr_views.REQUEST_TYPE_LABELS[t]) for t in REQUEST_TYPES],
        channels=[
            (key, names.get(current_language(), key))
            for key, names in sorted(_ext_taxonomy().current(session).channels.items())
        ],
        regimes=sorted(_dsr().rules.profiles),
        identifier_kinds=sorted(IDENTIFIER_KINDS),
        requester_kinds=list(dsr_views.REQUESTER_LABELS.items()),
        **extra,
    )


def _ext_taxonomy() -> Any:
    return current_app.extensions["govsvc.taxonomy"]


@bp.get("/requests/new")
@page("dsr", "create")
def dsr_new() -> Response:
    return _intake_form(values={})


@bp.post("/requests")
@page("dsr", "create")
def dsr_create() -> Response:
    session = get_session()
    values = {k: v for k, v in request.form.items() if k not in ("subject_value", "evidence", "csrf_token")}
    try:
        submitted = forms.dsr_intake(request.form)
        intake = Intake(
            request_type=submitted["request_type"],
            channel=submitted["channel"],
            subject=submitted["subject"],
            jurisdictions=submitted["jurisdictions"],
            requester=Requester(submitted["requester_kind"], submitted["evidence"]),
            language=submitted["language"],
            source="admin_ui",
        )
        created = _dsr().service.create(session, _ext_taxonomy().current(session), intake, actor=_actor())
    except (ValidationFailed, ConflictError, NotFoundError) as error:
        status = {ConflictError: 409, NotFoundError: 404}.get(type(error), 422)
        existing = error.extensions.get("existing_request_id") if isinstance(error, ConflictError) else None
        return _intake_form(status, values=values, errors=FormErrors.of(error), existing=existing)
    _dsr().notify_status(session, created)
    return redirect(url_for("admin.dsr_detail", request_id=created.request_id, done="received"))


# -- one request -------------------------------------------------------------------------------------------------


def _detail(target: DsrRequest, status: int = 200, **extra: Any) -> Response:
    view = dsr_views.request_view(get_session(), _dsr(), target, utcnow(), allowed)
    done = request.args.get("done")
    return render(
        "admin/dsr_detail.html",
        status,
        v=view,
        done=DONE_MESSAGES.get(done or ""),
        done_key=done if done in DONE_MESSAGES else None,
        identifier_kinds=sorted(IDENTIFIER_KINDS),
        point_rows=range(forms.DSR_POINT_ROWS),
        methods=dsr_views.METHOD_LABELS,
        denial_reasons=[(reason, dsr_views.DENIAL_LABELS[reason]) for reason in DENIAL_REASONS],
        pause_reasons=list(dsr_views.PAUSE_LABELS.items()),
        assignees=_dsr().service.assignees(get_session(), get_policy_engine()) if "assign" in view["actions"] else [],
        **extra,
    )


def _refused(target: DsrRequest, error: ValidationFailed | ConflictError, action: str) -> Response:
    """The service said no: show the request again with its explanation (and roll everything back)."""
    status = 409 if isinstance(error, ConflictError) else 422
    get_session().rollback()
    return _detail(
        _load(target.request_id), status, errors=FormErrors.of(error), failed_action=action, form=request.form
    )


def _done(target: DsrRequest, what: str) -> Response:
    return redirect(url_for("admin.dsr_detail", request_id=target.request_id, done=what))


def _act(
    request_id: str,
    action: str,
    step: Callable[[Session, DsrRequest], object],
    *,
    done: str,
    notify: bool = False,
) -> Response:
    """One action on a request: lock it, let the service ``step`` change it (a refusal shows the page again with
    the service's explanation, nothing saved), tell the requester when the status changed, redirect."""
    target = _load(request_id, for_update=True)
    try:
        step(get_session(), target)
    except (ValidationFailed, ConflictError) as error:
        return _refused(target, error, action)
    if notify:
        _dsr().notify_status(get_session(), target)
    return _done(target, done)


def _optional(field: str, max_length: int) -> str | None:
    return forms.text(request.form, field, max_length=max_length) or None


@bp.get("/requests/<string:request_id>")
@page("dsr", "read")
def dsr_detail(request_id: str) -> Response:
    return _detail(_load(request_id))


@bp.post("/requests/<string:request_id>/verify")
@page("dsr", "verify")
def dsr_verify(request_id: str) -> Response:
    """Data points travel in the form body only; the service keeps the method, outcome and a keyed hash."""
    target = _load(request_id, for_update=True)
    submitted = forms.dsr_verification(request.form)
    if submitted["method"] not in VERIFICATION_METHODS:
        error = ValidationFailed(gettext("Choose a method."), errors=[{"field": "method", "message": "required"}])
        return _refused(target, error, "verify")
    try:
        verified = _dsr().service.verify(get_session(), target, actor=_actor(), **submitted)
    except (ValidationFailed, ConflictError) as error:
        return _refused(target, error, "verify")
    _dsr().notify_status(get_session(), target)
    return _done(target, "verified" if verified else "verification_failed")


@bp.post("/requests/<string:request_id>/assign")
@page("dsr", "manage")
def dsr_assign(request_id: str) -> Response:
    assignee = _optional("assignee", 81)  # anything longer than a username is refused as not assignable

    def assign(session: Session, target: DsrRequest) -> None:
        _dsr().service.assign(session, target, assignee, actor=_actor(), policy=get_policy_engine())

    return _act(request_id, "assign", assign, done="assigned")


@bp.post("/requests/<string:request_id>/notes")
@page("dsr", "manage")
def dsr_note(request_id: str) -> Response:
    text = request.form.get("text", "")
    return _act(request_id, "note", lambda s, r: _dsr().service.add_note(s, r, text, actor=_actor()), done="note")


@bp.post("/requests/<string:request_id>/extend")
@page("dsr", "manage")
def dsr_extend(request_id: str) -> Response:
    reason = forms.text(request.form, "reason", max_length=500)
    return _act(
        request_id,
        "extend",
        lambda s, r: _dsr().service.extend(s, r, reason, actor=_actor()),
        done="extended",
        notify=True,
    )


@bp.post("/requests/<string:request_id>/acknowledge")
@page("dsr", "manage")
def dsr_acknowledge(request_id: str) -> Response:
    """Record that the acknowledgement was sent (CCPA: within 10 business days)."""
    step = _dsr().service.acknowledge
    return _act(request_id, "acknowledge", lambda s, r: step(s, r, actor=_actor()), done="acknowledged")


@bp.post("/requests/<string:request_id>/pause")
@page("dsr", "manage")
def dsr_pause(request_id: str) -> Response:
    """Stop the clock while waiting for the requester, where every applicable regime allows it."""
    reason, note = forms.text(request.form, "reason", max_length=40), _optional("note", 2000)
    return _act(
        request_id, "pause", lambda s, r: _dsr().service.pause(s, r, reason, actor=_actor(), note=note), done="paused"
    )


@bp.post("/requests/<string:request_id>/resume")
@page("dsr", "manage")
def dsr_resume(request_id: str) -> Response:
    return _act(request_id, "resume", lambda s, r: _dsr().service.resume(s, r, actor=_actor()), done="resumed")


@bp.post("/requests/<string:request_id>/cancel")
@page("dsr", "cancel")
def dsr_cancel(request_id: str) -> Response:
    """Close the request as cancelled (e.g. the requester withdrew it), with an optional reason."""
    reason = _optional("reason", 2000)
    return _act(
        request_id,
        "cancel",
        lambda s, r: _dsr().service.cancel(s, r, actor=_actor(), reason=reason),
        done="cancelled",
        notify=True,
    )


@bp.post("/requests/<string:request_id>/deny")
@page("dsr", "manage")
def dsr_deny(request_id: str) -> Response:
    reason = forms.text(request.form, "reason", max_length=40)
    legal_basis, note = forms.text(request.form, "legal_basis", max_length=121), _optional("note", 2000)
    return _act(
        request_id,
        "deny",
        lambda s, r: _dsr().service.deny(s, r, reason, legal_basis, actor=_actor(), note=note),
        done="denied",
        notify=True,
    )


@bp.post("/requests/<string:request_id>/complete")
@page("dsr", "fulfil")
def dsr_complete(request_id: str) -> Response:
    """Fulfil the request across every store (``Fulfilment.run``: each step commits on its own, no transaction is
    held while apps are called). An export's one-time download is shown in this response only (never cached)."""
    target = _load(request_id)
    try:
        corrections = forms.dsr_rectification(request.form) if target.request_type == "rectification" else None
        get_session().rollback()
        result = _dsr().fulfilment.run(
            get_db(),
            request_id,
            actor=_actor(),
            rectification=corrections,
            accept_failures=request.form.get("accept_failures") == "yes",
        )
    except (ValidationFailed, ConflictError) as error:
        return _refused(target, error, "complete")
    if result.download is None:
        return _done(target, "completed")
    token = result.download["url"].removeprefix(DOWNLOAD_PATH)  # shown in this response only, in a form body
    return _detail(_load(request_id), download={**result.download, "token": token})


@bp.post("/requests/<string:request_id>/export")
@page("dsr", "fulfil")
def dsr_download(request_id: str) -> Response:
    """Download the export bundle with its one-time token (from the form body, never a URL): it works once, as the
    requester's link does (``govsvc.dsr.export.claim``: audited, then the chunks are deleted)."""
    token = forms.text(request.form, "token", max_length=200)
    database = get_db()
    get_session().rollback()
    export_pk, export_id, secret, bundle_request = export.claim(database, token)
    response = Response(
        stream_with_context(export.stream(database, export_pk, export_id, secret)), mimetype="application/zip"
    )
    response.headers["Content-Disposition"] = f'attachment; filename="{bundle_request}.zip"'
    return response


@bp.get("/requests/<string:request_id>/letters/<string:kind>")
@page("dsr", "read")
def dsr_letter(request_id: str, kind: str) -> Response:
    """A response letter (``govsvc.dsr.letters``) in the request's language, or ``?language=en|zh``."""
    target = _load(request_id)
    language = request.args.get("language") or None
    settings = current_app.config["GOVSVC_SETTINGS"]
    letter = letters.render(_dsr().rules, target, kind, language, export_hours=settings.dsr_export_ttl_hours)
    return render("admin/dsr_letter.html", letter=letter, request_id=request_id, label=dsr_views.LETTER_LABELS[kind])
