"""The admin UI's pages (server-rendered, progressively enhanced with htmx): thin routes over the domains' services.

Every route is guarded: ``@page(resource, action)`` (the signed-in session, CSRF on unsafe methods, the casbin
policy), or ``@public`` for the sign-in page and the not-found page. Bad form input re-renders the form with the
errors and a 4xx status, so the request's transaction is rolled back and nothing is saved.
"""

from __future__ import annotations

from dataclasses import replace
from typing import Any

from flask import Blueprint, Response, current_app, g, redirect, request, stream_with_context, url_for
from flask_babel import gettext, lazy_gettext
from werkzeug.exceptions import HTTPException

from govsvc.admin import forms, service
from govsvc.admin.diffs import line_diff
from govsvc.admin.forms import FormErrors
from govsvc.admin.registry import NavItem, PanelContext, registry
from govsvc.admin.web import (
    FORM_TYPES,
    LANGUAGE_COOKIE,
    active_session,
    admin_keys,
    allowed,
    current_language,
    is_htmx,
    local_zone,
    login_cookie_name,
    page,
    record_activity,
    render,
    safe_next,
    secure_cookies,
    security_headers,
    session_cookie_name,
    set_cookie,
    sign_in_policy,
    submitted_csrf,
    template_context,
)
from govsvc.audit import export
from govsvc.audit.service import hash_ip, search
from govsvc.auth import service as auth
from govsvc.consent import service as consent
from govsvc.core.access import current_principal, get_policy_engine, public
from govsvc.core.content import accepts
from govsvc.core.db import get_db, get_session, records_on_read, utcnow
from govsvc.core.errors import ConflictError, NotFoundError, ServiceError, ValidationFailed
from govsvc.pii import service as pii
from govsvc.policy import service as policy
from govsvc.subjects import service as subjects
from govsvc.subjects.models import Subject
from govsvc.taxonomy import service as taxonomy

bp = Blueprint(
    "admin",
    __name__,
    url_prefix="/admin",
    template_folder="templates",
    static_folder="static",
    static_url_path="/static",
)
bp.context_processor(template_context)
bp.after_request(security_headers)
bp.teardown_request(record_activity)
AUDIT_PAGE = 50
HISTORY_PAGE = 100

for item in (
    NavItem("admin.dashboard", lazy_gettext("Dashboard"), ("admin_ui", "use"), 10, "dashboard"),
    NavItem("admin.subjects_page", lazy_gettext("Subjects"), ("subjects", "read"), 20, "subject"),
    NavItem("admin.taxonomy_page", lazy_gettext("Purposes"), ("taxonomy", "read"), 40, "taxonomy"),
    NavItem("admin.notices", lazy_gettext("Notices"), ("consents", "read"), 45, "notices"),
    NavItem("admin.policy_page", lazy_gettext("Policy"), ("policy", "read"), 50, "policy"),
    NavItem("admin.audit", lazy_gettext("Audit log"), ("audit", "read"), 60, "audit"),
    NavItem("admin.pii_playground", lazy_gettext("PII playground"), ("pii", "analyze"), 70, "pii"),
    NavItem("admin.clients", lazy_gettext("API clients"), ("clients", "read"), 80, "client"),
):
    registry.add_nav(item)


def _ext(name: str) -> Any:
    return current_app.extensions[f"govsvc.{name}"]


def _taxonomy() -> taxonomy.Taxonomy:
    return _ext("taxonomy").current(get_session())


# -- signing in and out ------------------------------------------------------------------------------------------


@bp.get("")
@public
def root() -> Response:
    return redirect(url_for("admin.dashboard"))


@bp.route("/login", methods=["GET", "POST"])
@accepts(*FORM_TYPES)
@public
def login() -> Response:
    language = request.args.get("lang")
    if language in service.LANGUAGES:
        g.language = language
    if request.method == "GET":
        return render("admin/login.html", next=safe_next(request.args.get("next")))
    nonce = request.cookies.get(login_cookie_name(), "")
    if not nonce or not admin_keys().csrf_valid("login:" + nonce, submitted_csrf()):
        return render("admin/login.html", 400, error=gettext("The form expired; please sign in again."), next="")
    username, password = forms.text(request.form, "username", max_length=100), request.form.get("password", "")
    target = safe_next(request.form.get("next"))
    engine = get_policy_engine()

    def may_use_ui(session: Any, role: str) -> bool:
        engine.ensure_current(session)
        return engine.is_allowed(role, "admin_ui", "use")

    try:
        signed_in = service.sign_in(
            get_db(),
            admin_keys(),
            sign_in_policy(),
            username=username,
            password=password,
            ip_hash=hash_ip(request.remote_addr, _ext("audit_ip_key")),
            may_use_ui=may_use_ui,
        )
    except service.SignInRefused as refused:
        status = {"invalid_credentials": 401, "no_role": 403}.get(refused.reason, 429)
        messages = {
            "invalid_credentials": gettext("Invalid username or password."),
            "locked_out": gettext("This account is locked after repeated failed sign-ins. Try again later."),
            "rate_limited": gettext("Too many failed sign-ins from your address. Try again later."),
            "no_role": gettext("Your role may not use the admin UI."),
        }
        return render("admin/login.html", status, error=messages[refused.reason], username=username, next=target)
    response = redirect(target)
    set_cookie(response, session_cookie_name(), signed_in.token)
    response.delete_cookie(login_cookie_name(), path="/", secure=secure_cookies(), httponly=True)
    return response


@bp.post("/logout")
@page("admin_ui", "use")
def logout() -> Response:
    service.sign_out(get_session(), active_session())
    response = redirect(url_for("admin.login"))
    response.delete_cookie(session_cookie_name(), path="/", secure=secure_cookies(), httponly=True)
    return response


# -- preferences -----------------------------------------------------------------------------------------------


@bp.route("/preferences", methods=["GET", "POST"])
@page("admin_ui", "use")
def preferences() -> Response:
    current = active_session().preferences
    values = {"language": current.language or current_language(), "time_zone": current.time_zone}
    if request.method == "GET":
        return render("admin/preferences.html", values=values, zones=service.time_zone_choices())
    values = {"language": forms.text(request.form, "language"), "time_zone": forms.text(request.form, "time_zone")}
    try:
        saved = service.save_preferences(
            get_session(), active_session().principal.name, language=values["language"], time_zone=values["time_zone"]
        )
    except ValidationFailed as error:
        return render(
            "admin/preferences.html", 422, values=values, zones=service.time_zone_choices(), errors=FormErrors.of(error)
        )
    g.admin = _with_preferences(saved)
    return redirect(url_for("admin.preferences", saved=1))


@bp.post("/preferences/language")
@page("admin_ui", "use")
def switch_language() -> Response:
    language = forms.text(request.form, "language")
    try:
        service.save_preferences(
            get_session(),
            active_session().principal.name,
            language=language,
            time_zone=active_session().preferences.time_zone,
        )
    except ValidationFailed as error:
        return render("admin/error.html", 422, title_key="invalid", status_code=422, errors=FormErrors.of(error))
    response = redirect(safe_next(request.form.get("next")))
    set_cookie(response, LANGUAGE_COOKIE, language, max_age=365 * 24 * 3600)
    return response


def _with_preferences(preferences: service.Preferences) -> service.ActiveSession:
    return replace(active_session(), preferences=preferences)


# -- dashboard ---------------------------------------------------------------------------------------------------


@bp.get("/")
@page("admin_ui", "use")
def dashboard() -> Response:
    context = PanelContext(
        session=get_session(),
        principal=current_principal(),
        time_zone=local_zone(),
        language=current_language(),
        now=utcnow(),
        extensions=current_app.extensions,
        allowed=allowed,
    )
    slots = {
        slot: [(panel, panel.build(context)) for panel in panels]
        for slot, panels in registry.panels_for(allowed).items()
    }
    return render("admin/dashboard.html", slots=slots)


# -- subjects ----------------------------------------------------------------------------------------------------


@bp.get("/subjects")
@page("subjects", "read")
def subjects_page() -> Response:
    return render("admin/subjects.html", kinds=sorted(subjects.IDENTIFIER_KINDS))


@bp.post("/subjects/search")
@page("subjects", "read")
def subjects_search() -> Response:
    """Identifier values travel in the form body only (never in a URL, a log line or the browser's history)."""
    value, kind = forms.text(request.form, "value"), forms.text(request.form, "kind", max_length=32) or None
    system = forms.text(request.form, "system", max_length=64)
    template = "admin/_subject_results.html" if is_htmx() else "admin/subjects.html"
    kinds = sorted(subjects.IDENTIFIER_KINDS)
    if not value:
        errors = FormErrors(gettext("Type an identifier."), {"value": [gettext("This field is required.")]})
        return render(template, 422, kinds=kinds, errors=errors, searched=True)
    try:
        found = subjects.find_by_any_identifier(get_session(), _ext("field_keys"), value, kind=kind, system=system)
    except ValidationFailed as error:
        return render(template, 422, kinds=kinds, errors=FormErrors.of(error), searched=True, kind=kind)
    results = [{"subject_id": s.subject_id, "matched": matched} for s, matched in found]
    return render(template, kinds=kinds, results=results, searched=True, kind=kind, system=system)


def _subject_page(subject: Subject, status: int = 200, **extra: Any) -> Response:
    session = get_session()
    tax = _taxonomy()
    purpose = forms.text(request.values, "purpose", max_length=80) or "essential.service"
    context: dict[str, Any] = {
        "subject": subject,
        "jurisdictions": subjects.jurisdictions_of(subject),
        "identifiers": subjects.identifier_kinds(session, subject),
        "purposes": sorted(tax.purposes.values(), key=lambda p: p.key),
        "channels": sorted(tax.channels),
        "consent_types": sorted(consent.CONSENT_TYPES),
        "actors": sorted(consent.ACTORS),
        "events": forms.CONSENT_EVENTS,
        "purpose": purpose,
        "language": current_language(),
    }
    if allowed("consents", "read"):
        context["states"] = consent.current_states(session, subject)
        context["timeline"] = list(reversed(consent.history(session, subject, after_pk=None, limit=HISTORY_PAGE)))
    if allowed("vault", "read") and "profile" not in extra:
        context["profile"] = _profile(subject, purpose)
    context.update(extra)
    return render("admin/subject.html", status, **context)


def _profile(subject: Subject, purpose: str, *, reveal: str | None = None, justification: str | None = None) -> Any:
    """The profile as this role may see it for a purpose; L3 plaintext concealed unless revealed (audited)."""
    principal = current_principal()
    profile = _ext("pii").rules.profile_for_role(principal.role)
    try:
        return {
            "fields": _ext("vault").read_for_purpose(
                get_session(),
                _ext("decisions"),
                subject,
                purpose=purpose,
                role=principal.role,
                principal_id=principal.principal_id,
                justification=justification,
                fields=[reveal] if reveal else None,
                conceal_plaintext=None if reveal else f"mask:{profile}",
            ),
            "error": None,
        }
    except ServiceError as error:
        return {"fields": {}, "error": FormErrors.of(error)}


@bp.get("/subjects/<string:subject_id>")
@page("subjects", "read")
@records_on_read  # the profile's read decisions are audited
def subject_detail(subject_id: str) -> Response:
    return _subject_page(subjects.get_subject(get_session(), subject_id))


@bp.post("/subjects/<string:subject_id>/consents")
@page("consents", "write")
def record_consent(subject_id: str) -> Response:
    session = get_session()
    subject = subjects.get_subject(session, subject_id)
    try:
        act = forms.consent_act(request.form)
        act.source = "admin_ui"
        events = consent.record_act(
            session, _ext("field_keys"), _taxonomy(), subject, act, recorded_by=current_principal().principal_id
        )
    except (ValidationFailed, ConflictError) as error:
        status = 409 if isinstance(error, ConflictError) else 422
        return _subject_page(subject, status, consent_errors=FormErrors.of(error), consent_form=request.form)
    return redirect(url_for("admin.subject_detail", subject_id=subject.subject_id, recorded=events[0].event_id))


@bp.post("/subjects/<string:subject_id>/reveal")
@page("vault", "read")
def reveal_field(subject_id: str) -> Response:
    subject = subjects.get_subject(get_session(), subject_id)
    field, purpose = (
        forms.text(request.form, "field", max_length=80),
        forms.text(request.form, "purpose", max_length=80),
    )
    justification = forms.text(request.form, "justification", max_length=500)
    revealed = _profile(subject, purpose, reveal=field, justification=justification)
    status = 422 if revealed["error"] else 200
    if is_htmx():
        return render("admin/_reveal.html", status, subject=subject, field=field, purpose=purpose, revealed=revealed)
    profile = _profile(subject, purpose)
    return _subject_page(subject, status, profile=profile, revealed=revealed, revealed_field=field)


# -- purposes, taxonomy and notices ------------------------------------------------------------------------------


@bp.get("/taxonomy")
@page("taxonomy", "read")
def taxonomy_page() -> Response:
    tax = _taxonomy()
    return render(
        "admin/taxonomy.html",
        taxonomy=tax,
        purposes=sorted(tax.purposes.values(), key=lambda p: p.key),
        categories=sorted(tax.categories.values(), key=lambda c: c.key),
        history=taxonomy.history(get_session()),
        language=current_language(),
    )


def _purpose_form(values: dict[str, Any], status: int = 200, **extra: Any) -> Response:
    tax = _taxonomy()
    return render(
        "admin/purpose_form.html",
        status,
        values=values,
        categories=sorted(tax.categories),
        bases={regime: sorted(options) for regime, options in taxonomy.LAWFUL_BASES.items()},
        **extra,
    )


@bp.get("/taxonomy/purposes/new")
@page("taxonomy", "write")
def purpose_new() -> Response:
    return _purpose_form(forms.purpose_form_values(None), creating=True)


@bp.get("/taxonomy/purposes/<string:key>")
@page("taxonomy", "write")
def purpose_edit(key: str) -> Response:
    document = _taxonomy().document
    purpose = next((p for p in document.get("purposes", []) if p.get("key") == key), None)
    if purpose is None:
        raise NotFoundError(gettext("No such purpose."))
    return _purpose_form(forms.purpose_form_values(purpose), creating=False)


@bp.post("/taxonomy/purposes")
@page("taxonomy", "write")
def purpose_save() -> Response:
    tax = _taxonomy()
    creating = request.form.get("creating") == "yes"
    try:
        purpose = forms.purpose_definition(request.form, sorted(tax.categories))
        if creating and purpose["key"] in tax.purposes:
            raise ConflictError(gettext("A purpose with this key exists already; edit it instead."))
        version = taxonomy.change_purpose(
            get_session(),
            tax,
            purpose,
            actor=current_principal().principal_id,
            comment=forms.text(request.form, "comment", max_length=500) or None,
        )
    except (ValidationFailed, ConflictError) as error:
        status = 409 if isinstance(error, ConflictError) else 422
        return _purpose_form(
            forms.submitted_purpose_values(request.form), status, errors=FormErrors.of(error), creating=creating
        )
    return redirect(url_for("admin.taxonomy_page", saved=version))


@bp.get("/notices")
@page("consents", "read")
def notices() -> Response:
    return render("admin/notices.html", notices=consent.notices_in_use(get_session()))


# -- policy editor -----------------------------------------------------------------------------------------------


def _policy_page(status: int = 200, **extra: Any) -> Response:
    session = get_session()
    lines = policy.current_lines(session)
    latest = pii.latest_masking(session)
    masking_text = latest[1] if latest else ""
    context = {
        "policy_version": get_policy_engine().ensure_current(session),
        "policy_text": policy.policy_text(lines),
        "policy_digest": policy.policy_digest(lines),
        "masking_version": latest[0] if latest else 0,
        "masking_text": masking_text,
        "masking_digest": pii.masking_digest(masking_text),
        "roles": sorted(get_policy_engine().roles),
        "may_write": allowed("policy", "write"),
    }
    context.update(extra)
    return render("admin/policy.html", status, **context)


@bp.get("/policy")
@page("policy", "read")
def policy_page() -> Response:
    return _policy_page(saved=request.args.get("saved"))


@bp.post("/policy/rbac")
@page("policy", "write")
def policy_rbac() -> Response:
    """Preview (``step=preview``: the validated diff, nothing stored) or save (``step=save``) the RBAC policy."""
    proposed = request.form.get("policy", "")
    engine = get_policy_engine()
    try:
        if request.form.get("step") == "save":
            change = policy.replace_policy(
                get_session(),
                engine.model_text,
                proposed,
                base_digest=forms.text(request.form, "base_digest", max_length=64),
                actor=current_principal().principal_id,
            )
            return redirect(url_for("admin.policy_page", saved=f"rbac-{change.version}"))
        change = policy.preview_policy(get_session(), engine.model_text, proposed)
    except (ValidationFailed, ConflictError) as error:
        status = 409 if isinstance(error, ConflictError) else 422
        return _policy_page(status, proposed_policy=proposed, policy_errors=FormErrors.of(error))
    return _policy_page(proposed_policy=proposed, policy_change=change, policy_base=change.base_digest)


@bp.post("/policy/masking")
@page("policy", "write")
def policy_masking() -> Response:
    """Preview or save the masking rules (YAML), validated against the taxonomy's categories."""
    proposed = request.form.get("masking", "").replace("\r\n", "\n")
    session = get_session()
    categories = set(_taxonomy().categories)
    latest = pii.latest_masking(session)
    current = latest[1] if latest else ""
    try:
        if request.form.get("step") == "save":
            change = pii.change_masking(
                session,
                proposed,
                categories,
                base_digest=forms.text(request.form, "base_digest", max_length=64),
                actor=current_principal().principal_id,
                comment=forms.text(request.form, "comment", max_length=500) or None,
            )
            return redirect(url_for("admin.policy_page", saved=f"masking-{change.version}"))
        pii.validate_masking(proposed, categories)
    except (ValidationFailed, ConflictError) as error:
        status = 409 if isinstance(error, ConflictError) else 422
        return _policy_page(status, proposed_masking=proposed, masking_errors=FormErrors.of(error))
    return _policy_page(
        proposed_masking=proposed, masking_diff=line_diff(current, proposed), masking_base=pii.masking_digest(current)
    )


@bp.get("/policy/policy.csv")
@page("policy", "read")
def policy_download() -> Response:
    text = policy.policy_text(policy.current_lines(get_session()))
    return Response(text, mimetype="text/csv", headers={"Content-Disposition": 'attachment; filename="policy.csv"'})


@bp.get("/policy/masking.yaml")
@page("policy", "read")
def masking_download() -> Response:
    latest = pii.latest_masking(get_session())
    return Response(
        latest[1] if latest else "",
        mimetype="application/yaml",
        headers={"Content-Disposition": 'attachment; filename="masking.yaml"'},
    )


# -- audit log ---------------------------------------------------------------------------------------------------


@bp.get("/audit")
@page("audit", "read")
def audit() -> Response:
    template = "admin/_audit_results.html" if is_htmx() else "admin/audit.html"
    try:
        criteria = forms.audit_filter(request.args, local_zone())
    except ValidationFailed as error:
        return render(template, 422, errors=FormErrors.of(error), rows=[], filters=request.args)
    rows = search(get_session(), criteria, after_seq=forms.cursor(request.args), limit=AUDIT_PAGE)
    more = len(rows) > AUDIT_PAGE
    rows = rows[:AUDIT_PAGE]
    next_args = {**request.args.to_dict(), "after": rows[-1][0].seq} if more else None
    return render(template, rows=rows, filters=request.args, next_args=next_args)


@bp.get("/audit/export")
@page("audit", "export")
@records_on_read  # audit.exported
def audit_export() -> Response:
    export_format = request.args.get("format", "jsonl")
    if export_format not in export.EXPORT_FORMATS:
        raise ValidationFailed(gettext("Choose CSV or JSONL."), errors=[{"field": "format", "message": "csv, jsonl"}])
    criteria = forms.audit_filter(request.args, local_zone())
    plan = export.start_export(get_session(), criteria, export_format)
    lines = export.export_lines(get_db(), plan, export_format)
    response = Response(stream_with_context(lines), mimetype=export.EXPORT_FORMATS[export_format])
    response.headers["Content-Disposition"] = f'attachment; filename="{export.export_filename(plan, export_format)}"'
    return response


@bp.get("/audit/verify")
@page("audit", "verify")
def audit_verify() -> Response:
    """A read (as the API's): the verification is audited in a transaction of its own, no write lock is held."""
    report = export.verify_and_record(get_db(), None, None)
    template = "admin/_verify_result.html" if is_htmx() else "admin/verify.html"
    return render(template, report=report)


# -- PII playground ----------------------------------------------------------------------------------------------


@bp.route("/pii", methods=["GET", "POST"])
@page("pii", "analyze")
def pii_playground() -> Response:
    if request.method == "GET":
        return render("admin/pii.html", text="")
    text = request.form.get("text", "")
    template = "admin/_pii_result.html" if is_htmx() else "admin/pii.html"
    service = _ext("pii")
    limit = current_app.config["GOVSVC_SETTINGS"].pii_max_text_chars
    if not text.strip() or len(text) > limit:
        message = gettext("Paste a text of 1 to %(n)d characters.", n=limit)
        return render(template, 422, text=text[:limit], errors=FormErrors(message, {"text": [message]}))
    try:
        pii.check_unicode(text, "text")
        analysis = service.analyze([text])[0]
    except ValidationFailed as error:
        return render(template, 422, text=text, errors=FormErrors.of(error))
    usage = pii.UsageCounts()
    usage.add_text(text, analysis)
    result: dict[str, Any] = {
        "highlights": pii.highlights(text, analysis, service.rules),
        "language": analysis.language,
    }
    if allowed("pii", "anonymize"):
        profile = service.check_profile(None, current_principal().role)
        result["masked"], _items = service.anonymize(text, analysis, profile)
        result["profile"] = profile
        pii.audit_call(get_session(), "pii.anonymized", usage, service.rules, profile=profile, operator="profile")
    else:
        pii.audit_call(get_session(), "pii.analyzed", usage, service.rules)
    return render(template, text=text, result=result)


# -- API clients -------------------------------------------------------------------------------------------------


def _clients_page(status: int = 200, **extra: Any) -> Response:
    clients = auth.list_clients(get_session(), after_pk=None, limit=1000)
    return render(
        "admin/clients.html",
        status,
        clients=[(client, auth.client_status(client)) for client in clients],
        roles=sorted(get_policy_engine().roles),
        **extra,
    )


@bp.get("/clients")
@page("clients", "read")
def clients() -> Response:
    return _clients_page()


@bp.post("/clients")
@page("clients", "create")
def client_create() -> Response:
    name, role = forms.text(request.form, "name"), forms.text(request.form, "role", max_length=64)
    try:
        issued = auth.create_client(
            get_session(),
            name=name,
            role=role,
            known_roles=get_policy_engine().roles,
            created_by=current_principal().principal_id,
        )
    except ValidationFailed as error:
        return _clients_page(422, errors=FormErrors.of(error), values={"name": name, "role": role})
    auth.record_client_created(get_session(), issued.client)
    # The key is in this response only: not in a redirect's URL, never stored, never cached (Cache-Control).
    return _clients_page(201, issued=issued)


@bp.post("/clients/<string:client_id>/revoke")
@page("clients", "revoke")
def client_revoke(client_id: str) -> Response:
    try:
        client = auth.revoke_client(get_session(), client_id)
    except ConflictError as error:
        return _clients_page(409, errors=FormErrors.of(error))
    auth.record_client_revoked(get_session(), client)
    return redirect(url_for("admin.clients", revoked=client.client_id))


# -- errors ------------------------------------------------------------------------------------------------------


@bp.get("/<path:unknown>")
@public
def not_found(unknown: str) -> Response:
    return render("admin/error.html", 404, title_key="not_found", status_code=404)


@bp.errorhandler(ServiceError)
def _service_error(error: ServiceError) -> Response:
    title = {404: "not_found", 409: "conflict", 403: "forbidden", 410: "gone"}.get(error.status, "invalid")
    return render(
        "admin/error.html", error.status, title_key=title, status_code=error.status, errors=FormErrors.of(error)
    )


@bp.errorhandler(Exception)
def _unexpected(error: Exception) -> Response:
    if isinstance(error, HTTPException):
        status = error.code or 500
        title = {404: "not_found", 405: "invalid", 413: "too_large"}.get(status, "invalid")
        return render("admin/error.html", status, title_key=title, status_code=status)
    current_app.logger.exception("admin UI error on %s", request.url_rule)
    return render("admin/error.html", 500, title_key="internal", status_code=500)
