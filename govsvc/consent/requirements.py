"""What the law asks of consent for one subject and purpose: which regimes apply, which items need a separate
act (PIPL 单独同意), and when a guardian must consent. Shared by the consent ledger and the decision engine."""

from __future__ import annotations

import functools
from collections.abc import Iterable
from dataclasses import dataclass

from govsvc.taxonomy.service import Purpose, Taxonomy

PIPL_CONSENT_BASES = frozenset({"consent", "separate_consent"})
GDPR_CONSENT_BASES = frozenset({"consent", "explicit_consent"})
EXPLICIT_TYPES = frozenset({"explicit", "separate", "written"})
SEPARATE_TYPES = frozenset({"separate", "written"})


def regimes_of(jurisdictions: Iterable[str]) -> frozenset[str]:
    """``gdpr:de`` -> ``gdpr``; the regimes that apply to a subject."""
    return _regimes(tuple(jurisdictions))


@functools.lru_cache(maxsize=256)
def _regimes(jurisdictions: tuple[str, ...]) -> frozenset[str]:
    return frozenset(j.split(":")[0] for j in jurisdictions)


def gdpr_member_state(jurisdictions: Iterable[str]) -> str | None:
    for value in jurisdictions:
        if value.startswith("gdpr:"):
            return value.split(":")[1]
    return None


def guardian_age(taxonomy: Taxonomy, jurisdictions: Iterable[str]) -> int | None:
    """The strictest (highest) age below which a guardian must consent, over the subject's regimes."""
    jurisdictions = list(jurisdictions)
    regimes = regimes_of(jurisdictions)
    ages = []
    if "pipl" in regimes:
        ages.append(int(taxonomy.jurisdictions["pipl"]["guardian_consent_below_age"]))
    if "gdpr" in regimes:
        profile = taxonomy.jurisdictions["gdpr"]
        state = gdpr_member_state(jurisdictions)
        ages.append(int((profile.get("member_states") or {}).get(state, profile["guardian_consent_below_age"])))
    return max(ages) if ages else None


def needs_guardian(taxonomy: Taxonomy, jurisdictions: Iterable[str], age: int | None) -> bool:
    """True for a known age under the threshold (an unknown age is treated as an adult's, and documented so)."""
    threshold = guardian_age(taxonomy, jurisdictions)
    return age is not None and threshold is not None and age < threshold


def ccpa_minor_rule(taxonomy: Taxonomy, age: int | None) -> str | None:
    """``parental`` under 13, ``opt_in`` from 13 to 15 (CCPA 1798.120(c)), else None."""
    if age is None:
        return None
    profile = taxonomy.jurisdictions["ccpa"]
    if age < int(profile["parental_authorization_below_age"]):
        return "parental"
    if age < int(profile["opt_in_below_age"]):
        return "opt_in"
    return None


def consent_is_the_basis(purpose: Purpose, regimes: frozenset[str]) -> bool:
    """True when, for one of the subject's regimes (GDPR or PIPL), the purpose rests on consent."""
    return ("gdpr" in regimes and purpose.lawful_basis["gdpr"] in GDPR_CONSENT_BASES) or (
        "pipl" in regimes and purpose.lawful_basis["pipl"] in PIPL_CONSENT_BASES
    )


def needs_explicit(taxonomy: Taxonomy, purpose: Purpose, regimes: frozenset[str]) -> bool:
    """GDPR explicit consent: an explicit-consent basis or special-category (Art 9) data."""
    if "gdpr" not in regimes or purpose.lawful_basis["gdpr"] not in GDPR_CONSENT_BASES:
        return False
    if purpose.lawful_basis["gdpr"] == "explicit_consent":
        return True
    return any("gdpr_art9" in _flags(taxonomy, c) for c in purpose.data_categories)


def _flags(taxonomy: Taxonomy, category: str) -> frozenset[str]:
    found = taxonomy.category(category)
    return found.flags if found else frozenset()


@dataclass(frozen=True)
class SeparateItem:
    """An item that needs its own consent act under PIPL, and the reason code when it is missing."""

    scope: str  # "" (the purpose itself), category:<k>, recipient:<k>, xb:<CC>
    missing_reason: str


def separate_items(taxonomy: Taxonomy, purpose: Purpose, regimes: frozenset[str]) -> list[SeparateItem]:
    """PIPL Arts 23, 29, 39: sensitive data, provision to a recipient and cross-border transfer each need 单独同意."""
    if "pipl" not in regimes or purpose.lawful_basis["pipl"] not in PIPL_CONSENT_BASES:
        return []
    key = ("separate", purpose.key, str(purpose.version))
    return list(taxonomy.memoized(key, lambda: _separate(taxonomy, purpose)))


def _separate(taxonomy: Taxonomy, purpose: Purpose) -> tuple[SeparateItem, ...]:
    items = []
    if purpose.lawful_basis["pipl"] == "separate_consent":
        items.append(SeparateItem("", "separate_consent_missing"))
    items += [
        SeparateItem(f"category:{c}", "separate_consent_missing")
        for c in purpose.data_categories
        if "pipl_sensitive" in _flags(taxonomy, c)
    ]
    items += [SeparateItem(f"recipient:{r.key}", "separate_consent_missing") for r in purpose.recipients]
    items += [SeparateItem(f"xb:{x.country}", "xb_separate_consent_missing") for x in purpose.cross_border]
    return tuple(items)


def valid_scopes(purpose: Purpose) -> set[str]:
    """The scopes a consent act may name for this purpose."""
    return (
        {""}
        | {f"category:{c}" for c in purpose.data_categories}
        | {f"recipient:{r.key}" for r in purpose.recipients}
        | {f"xb:{x.country}" for x in purpose.cross_border}
    )
