"""Response letters to the subject, from templates (``govsvc/dsr/letters/{en,zh}.txt``) in English and Simplified
Chinese: acknowledgement, extension, completion, partial completion (what was kept and why), denial (reason and
legal basis) and cancellation, each with the complaint channel of the governing jurisdiction profile. Letters
name no personal data: they are addressed by request reference."""

from __future__ import annotations

import json
from datetime import timedelta
from pathlib import Path
from typing import Any

from jinja2 import Environment, FileSystemLoader, StrictUndefined

from govsvc.core.errors import ConflictError, ValidationFailed
from govsvc.dsr.deadlines import Profile
from govsvc.dsr.models import DsrRequest
from govsvc.dsr.rules import DsrRules

KINDS = ("acknowledgement", "extension", "completed", "partially_completed", "denied", "cancelled")
_ENV = Environment(
    loader=FileSystemLoader(Path(__file__).parent / "letters"),
    undefined=StrictUndefined,
    autoescape=False,  # noqa: S701 - plain-text letters, never HTML
    keep_trailing_newline=True,
)
TYPE_NAMES = {
    "en": {
        "access": "access",
        "portability": "data portability",
        "rectification": "correction",
        "erasure": "erasure",
        "restriction": "restriction of processing",
        "objection": "objection",
        "withdraw_consent": "consent withdrawal",
        "opt_out_sale_share": "opt-out of sale or sharing",
        "limit_spi": "limit the use of sensitive information",
        "account_cancellation": "account cancellation",
    },
    "zh": {
        "access": "查阅、复制",
        "portability": "转移",
        "rectification": "更正、补充",
        "erasure": "删除",
        "restriction": "限制处理",
        "objection": "拒绝处理",
        "withdraw_consent": "撤回同意",
        "opt_out_sale_share": "拒绝出售或共享",
        "limit_spi": "限制使用敏感个人信息",
        "account_cancellation": "注销账号",
    },
}
DENIALS = {
    "en": {
        "suspected_fraud": "we suspect the request was not made by you or someone you authorised",
        "insuf_verification": "we could not confirm your identity",
        "no_match": "we hold no personal data that matches the details you gave",
        "claim_not_covered": "the law does not give this right for this data",
        "outside_jurisdiction": "the law you named does not apply to your data held by us",
        "too_many_requests": "the request is manifestly unfounded or excessive (for example, repeated)",
        "legal_exemption": "a legal exemption applies",
        "other": "see the explanation given by our staff",
    },
    "zh": {
        "suspected_fraud": "我们怀疑该请求并非由您本人或您授权的人提出",
        "insuf_verification": "我们无法核实您的身份",
        "no_match": "我们未持有与您提供的信息相匹配的个人信息",
        "claim_not_covered": "法律未就该信息赋予此项权利",
        "outside_jurisdiction": "您所援引的法律不适用于我们持有的您的信息",
        "too_many_requests": "该请求明显缺乏依据或过度（例如重复提出）",
        "legal_exemption": "存在法定例外情形",
        "other": "详见工作人员的说明",
    },
}
VERIFICATION = {
    "en": {
        "reasonable": "two details that match our records",
        "high": "three details that match our records and a signed declaration",
        "none": "",
    },
    "zh": {"reasonable": "与我们记录相符的两项信息", "high": "与我们记录相符的三项信息及签署的声明", "none": ""},
}


def _date(value: Any, language: str) -> str:
    day = value.date() if hasattr(value, "date") else value
    return f"{day.year}年{day.month}月{day.day}日" if language == "zh" else day.isoformat()


def render(
    rules: DsrRules, request: DsrRequest, kind: str, language: str | None = None, *, export_hours: int = 72
) -> dict[str, str]:
    """The letter of ``kind`` for a request, in ``language`` (the request's by default)."""
    language = language or request.language
    if kind not in KINDS:
        raise ValidationFailed("Unknown letter.", errors=[{"field": "kind", "message": f"one of {', '.join(KINDS)}"}])
    if language not in ("en", "zh"):
        raise ValidationFailed("Unknown language.", errors=[{"field": "language", "message": "en or zh"}])
    needs = {
        "completed": {"completed"},
        "partially_completed": {"partially_completed"},
        "denied": {"denied"},
        "cancelled": {"cancelled"},
    }.get(kind)
    if needs is not None and request.status not in needs:
        raise ConflictError(f"A request that is {request.status} has no {kind} letter.")
    if kind == "extension" and request.extended_at is None:
        raise ConflictError("The request was not extended.")
    profile: Profile = rules.profiles[request.governing_regime]
    outcome = json.loads(request.outcome) if request.outcome else {}
    kept = []
    for item in outcome.get("kept", []):
        reason = item.get("reason") if isinstance(item.get("reason"), dict) else None
        text = reason.get(language) if reason else None
        if not text:
            code = item.get("reason_code", "retained")
            text = {"en": f"kept by {item.get('source')}: {code}", "zh": f"{item.get('source')} 依法保留：{code}"}[
                language
            ]
        kept.append({"text": text, "legal_basis": item.get("legal_basis")})
    runs = outcome.get("runs", [])
    body = _ENV.get_template(f"{language}.txt").render(
        kind=kind,
        type=request.request_type,
        type_name=TYPE_NAMES[language][request.request_type],
        request_id=request.request_id,
        received=_date(request.received_at, language),
        due=_date(request.due_at, language),
        verification=request.verification_level,
        verification_text=VERIFICATION[language][request.verification_level],
        extension_reason=request.extension_reason or "",
        legal_basis=request.denial_legal_basis if kind == "denied" else profile.legal_basis,
        denial_text=DENIALS[language].get(request.denial_reason or "other", ""),
        download=any(run.get("operation") == "collect" for run in runs),
        download_expires=_date((request.closed_at or request.updated_at) + timedelta(hours=export_hours), language),
        schema_url="/v1/dsr/schemas/export-bundle.json",
        kept=kept,
        authority=profile.authority[language],
    )
    subject_line, _, text = body.partition("\n")
    return {
        "kind": kind,
        "language": language,
        "subject": subject_line.split("：", 1)[-1].split(": ", 1)[-1],
        "body": text.strip() + "\n",
    }
