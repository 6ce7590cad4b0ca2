"""The dashboard's panels of phase 1: consent given and withdrawn per purpose over time, and the audit log's latest
signed checkpoint with the last verification. Each builder returns its template's variables."""

from __future__ import annotations

from collections.abc import Mapping
from datetime import UTC, datetime, time, timedelta
from typing import Any

from flask_babel import lazy_gettext

from govsvc.admin.charts import diverging_bars, sparkline
from govsvc.admin.registry import Panel, PanelContext, registry
from govsvc.audit import proofs, signing
from govsvc.audit.service import latest_event
from govsvc.consent.service import hourly_counts

TREND_DAYS = 30


def local_days(context: PanelContext, days: int) -> tuple[list[Any], datetime]:
    """The last ``days`` calendar days in the viewer's time zone, and the UTC instant the first one starts."""
    today = context.now.astimezone(context.time_zone).date()
    first = today - timedelta(days=days - 1)
    start = datetime.combine(first, time(), context.time_zone).astimezone(UTC)
    return [first + timedelta(days=offset) for offset in range(days)], start


def consent_trend(context: PanelContext) -> Mapping[str, Any]:
    """Given and withdrawn consents per purpose and local day over the last 30 days."""
    days, start = local_days(context, TREND_DAYS)
    index = {day: position for position, day in enumerate(days)}
    per_purpose: dict[str, dict[str, list[int]]] = {}
    for count in hourly_counts(context.session, start):
        day = count.hour.astimezone(context.time_zone).date()
        if day not in index:
            continue
        series = per_purpose.setdefault(count.purpose, {"given": [0] * len(days), "withdrawn": [0] * len(days)})
        series[count.event_type][index[day]] += count.count
    taxonomy = context.extensions["govsvc.taxonomy"].current(context.session)
    rows = []
    for key in sorted(set(per_purpose) | set(taxonomy.purposes)):
        series = per_purpose.get(key, {"given": [0] * len(days), "withdrawn": [0] * len(days)})
        purpose = taxonomy.purposes.get(key)
        rows.append(
            {
                "key": key,
                "name": purpose.name.get(context.language, key) if purpose else key,
                "given": sum(series["given"]),
                "withdrawn": sum(series["withdrawn"]),
                "sparkline": sparkline([("up", series["given"]), ("down", series["withdrawn"])]),
            }
        )
    given = [sum(s["given"][i] for s in per_purpose.values()) for i in range(len(days))]
    withdrawn = [sum(s["withdrawn"][i] for s in per_purpose.values()) for i in range(len(days))]
    labels = [day.strftime("%m-%d") for day in days]
    return {
        "chart": diverging_bars(labels, given, withdrawn, up_label="given", down_label="withdrawn"),
        "rows": rows,
        "days": TREND_DAYS,
        "first_day": days[0],
        "last_day": days[-1],
        "given_total": sum(given),
        "withdrawn_total": sum(withdrawn),
    }


def audit_status(context: PanelContext) -> Mapping[str, Any]:
    """The latest signed checkpoint and the last verification of the stored log."""
    checkpoint = proofs.latest_checkpoint(context.session)
    key = signing.active_key(context.session)
    verified = latest_event(context.session, "audit.verified")
    return {
        "checkpoint": checkpoint,
        "key_id": signing.key_id_hex(key.vkey) if key else None,
        "verified": verified,
        "may_verify": context.allowed("audit", "verify"),
    }


registry.add_panel(
    Panel("consent", lazy_gettext("Consent"), ("consents", "read"), "admin/panels/consent.html", consent_trend, 10)
)
registry.add_panel(
    Panel("audit", lazy_gettext("Audit log"), ("audit", "read"), "admin/panels/audit.html", audit_status, 20)
)
