"""Masking profiles (``policies/masking.yaml``) and the operators that apply them.

Operators: ``mask`` (the category's fixed window), ``mask_all``, ``replace`` (entity tag), ``redact``,
``pseudonymize`` (HMAC-SHA256 under a dedicated key: the same value always gives the same pseudonym, unlike Presidio's
hash operator and its random salt) and ``encrypt`` (AES-256-GCM tokens ``[pii:v1:<ENTITY>:<base64url>]``, the entity
type bound as associated data, so an altered or re-labelled token fails to decrypt).
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import hmac
import os
import re
from collections import Counter
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml
from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives.ciphers.aead import AESGCM

from govsvc.crypto.kdf import derive_key
from govsvc.pii.engines import Finding, fold_width

OPERATORS = ("mask", "mask_all", "replace", "redact", "pseudonymize", "encrypt")
MASKING_FILE = "masking.yaml"
MASK_CHAR = "*"
TOKEN_VERSION = "v1"  # noqa: S105 - a format version, not a secret
TOKEN_RE = re.compile(r"\[pii:(v\d+):([A-Z][A-Z0-9_]{1,39}):([A-Za-z0-9_-]*)\]")
_NONCE = 12
_DISTRICT_RE = re.compile(r"区|县|旗")
_CITY_RE = re.compile(r"市|州|盟")
_PHONE_PREFIX_RE = re.compile(r"^(?:(?:\+|00)86[- ]?(?=1\d{2}[- ]?\d{4}[- ]?\d{4}$)|\+\d{1,3}[- ]|00\d{1,3}[- ])")


class MaskingConfigError(ValueError):
    """``policies/masking.yaml`` is invalid; the message names every offending key (``problems`` lists them)."""

    def __init__(self, message: str, problems: Sequence[str] = ()) -> None:
        super().__init__(message)
        self.problems = list(problems)


class TokenError(ValueError):
    """An encryption token was altered, truncated, or not issued under this service's key."""


@dataclass(frozen=True)
class Window:
    """What a mask keeps of a category's values (fixed across roles)."""

    keep_first: int = 0
    keep_last: int = 0
    style: str = "chars"  # chars | email | address


@dataclass(frozen=True)
class MaskingRules:
    """The validated contents of ``masking.yaml``."""

    entities: Mapping[str, str]
    windows: Mapping[str, Window]
    profiles: Mapping[str, Mapping[str, str]]
    roles: Mapping[str, str]

    def category(self, entity_type: str) -> str:
        """The data category of an entity type (unknown types count as ``user``)."""
        return self.entities.get(entity_type, "user")

    def categories(self, entity_types: Iterable[str]) -> list[str]:
        """The data categories of these entity types, sorted, each once (what an audit event records)."""
        return sorted({self.category(entity_type) for entity_type in entity_types})

    def window(self, category: str) -> Window:
        """The category's window, else its nearest parent's, else the default."""
        key = category
        while key:
            if key in self.windows:
                return self.windows[key]
            key = key.rpartition(".")[0]
        return self.windows["default"]

    def operator(self, profile: str, category: str) -> str:
        """The profile's operator for a category (nearest parent rule, else the profile's default)."""
        rules = self.profiles[profile]
        key = category
        while key:
            if key in rules:
                return rules[key]
            key = key.rpartition(".")[0]
        return rules["default"]

    def profile_for_role(self, role: str) -> str:
        return self.roles.get(role, self.roles["default"])


def _taxonomy_categories(policy_dir: Path) -> set[str]:
    path = policy_dir / "taxonomy" / "data_categories.yaml"
    document = yaml.safe_load(path.read_text(encoding="utf-8")) or {}
    return {item["key"] for item in document.get("categories", []) if isinstance(item, dict) and "key" in item}


def load_rules(policy_dir: Path) -> MaskingRules:
    """Read and validate ``<policy_dir>/masking.yaml``; MaskingConfigError lists every problem."""
    path = policy_dir / MASKING_FILE
    try:
        document = yaml.safe_load(path.read_text(encoding="utf-8"))
    except (OSError, yaml.YAMLError) as error:
        raise MaskingConfigError(f"{path}: cannot be read: {error}") from None
    try:
        categories = _taxonomy_categories(policy_dir)
    except (OSError, yaml.YAMLError) as error:
        raise MaskingConfigError(f"{path}: the taxonomy it is checked against cannot be read: {error}") from None
    return parse_rules(document, categories, source=str(path))


def parse_rules(document: Any, categories: set[str] | None, *, source: str = MASKING_FILE) -> MaskingRules:
    """Validate a masking document against the taxonomy's categories (None: a stored document, validated against
    the taxonomy when it was saved)."""
    errors: list[str] = []
    if not isinstance(document, dict):
        raise MaskingConfigError(f"{source}: the document must be a mapping", ["the document must be a mapping"])
    unknown = set(document) - {"version", "entities", "windows", "profiles", "roles"}
    errors += [f"unknown key {key!r}" for key in sorted(unknown)]
    if document.get("version") != 1:
        errors.append("version: must be 1")

    def known_category(where: str, key: Any) -> bool:
        if key == "default" or categories is None or key in categories:
            return True
        errors.append(f"{where}: {key!r} is not a data category of the taxonomy")
        return False

    entities: dict[str, str] = {}
    for entity, category in _mapping(document, "entities", errors).items():
        if not isinstance(entity, str) or not re.fullmatch(r"[A-Z][A-Z0-9_]*", entity):
            errors.append(f"entities: {entity!r} is not an entity type name")
        elif category != "default" and known_category(f"entities.{entity}", category):
            entities[entity] = category
    windows: dict[str, Window] = {}
    for category, raw in _mapping(document, "windows", errors).items():
        where = f"windows.{category}"
        if not known_category(where, category):
            continue
        if not isinstance(raw, dict) or set(raw) - {"keep_first", "keep_last", "style"}:
            errors.append(f"{where}: a mapping of keep_first, keep_last and style")
            continue
        style = raw.get("style", "chars")
        first, last = raw.get("keep_first", 0), raw.get("keep_last", 0)
        if style not in ("chars", "email", "address"):
            errors.append(f"{where}.style: chars, email or address")
        elif any(type(value) is not int or not 0 <= value <= 8 for value in (first, last)):
            errors.append(f"{where}: keep_first and keep_last are integers from 0 to 8")
        else:
            windows[category] = Window(first, last, style)
    if "default" not in windows:
        errors.append("windows.default: required")
    profiles: dict[str, dict[str, str]] = {}
    for name, rules in _mapping(document, "profiles", errors).items():
        where = f"profiles.{name}"
        if not isinstance(name, str) or not re.fullmatch(r"[a-z][a-z0-9_]*", name):
            errors.append(f"{where}: profile names are lower-case words")
            continue
        if not isinstance(rules, dict) or "default" not in rules:
            errors.append(f"{where}: a mapping of category to operator, with a default")
            continue
        for category, operator in rules.items():
            if isinstance(operator, dict):
                errors.append(f"{where}.{category}: windows are set per category under windows:, never per profile")
            elif operator not in OPERATORS:
                errors.append(f"{where}.{category}: {operator!r} is not one of {', '.join(OPERATORS)}")
            else:
                known_category(f"{where}.{category}", category)
        profiles[name] = dict(rules)
    roles: dict[str, str] = {}
    for role, profile in _mapping(document, "roles", errors).items():
        if profile not in profiles:
            errors.append(f"roles.{role}: {profile!r} is not a profile")
        roles[str(role)] = profile
    if "default" not in roles:
        errors.append("roles.default: required")
    if errors:
        raise MaskingConfigError(f"{source} is invalid: " + "; ".join(errors), errors)
    return MaskingRules(entities, windows, profiles, roles)


def _mapping(document: Mapping[str, Any], key: str, errors: list[str]) -> dict[Any, Any]:
    value = document.get(key)
    if not isinstance(value, dict) or not value:
        errors.append(f"{key}: a non-empty mapping is required")
        return {}
    return value


def _maskable(char: str) -> bool:
    return char.isalnum()


def mask_chars(value: str, keep_first: int, keep_last: int) -> str:
    """Mask letters, digits and Han characters outside the window; separators stay. A window never shows a whole
    value: at least one character is masked."""
    positions = [index for index, char in enumerate(value) if _maskable(char)]
    count = len(positions)
    while keep_first + keep_last >= count and (keep_first or keep_last):
        if keep_last:
            keep_last -= 1
        else:
            keep_first -= 1
    hidden = set(positions[keep_first : count - keep_last])
    return "".join(MASK_CHAR if index in hidden else char for index, char in enumerate(value))


def apply_window(value: str, window: Window) -> str:
    """The masked form of one value under a category's window."""
    if window.style == "email" and "@" in value:
        local, _, domain = value.rpartition("@")
        return (local[:1] if len(local) > 1 else "") + MASK_CHAR * 3 + "@" + domain
    if window.style == "address":
        division = _DISTRICT_RE.search(value) or _CITY_RE.search(value)  # the first district, else the city
        if division:  # the divisions are the window: what follows them is masked (a city alone stays)
            return value[: division.end()] + mask_chars(value[division.end() :], 0, 0)
        return mask_chars(value, 0, 0)
    prefix = _PHONE_PREFIX_RE.match(value)
    if prefix:  # the country code identifies no one: keep it, and the window applies to the number
        return prefix.group() + mask_chars(value[prefix.end() :], window.keep_first, window.keep_last)
    return mask_chars(value, window.keep_first, window.keep_last)


class PiiKeys:
    """The pseudonym (HMAC) and token-encryption keys, derived from the service secret with their own labels.

    They are deliberately not subject data keys: a text's findings are not tied to a known subject, and pseudonyms
    must stay stable across subjects (join keys). Crypto-shredding therefore does not reach PII tokens; values that
    belong to a subject go to the profile vault, which seals them under the subject's data key.
    """

    def __init__(self, secret_key: str) -> None:
        self._pseudonym_key = derive_key(secret_key, "govsvc pii pseudonym v1")
        self._aead = AESGCM(derive_key(secret_key, "govsvc pii token encryption v1"))

    def pseudonym(self, category: str, normalised: str) -> str:
        """64 bits of HMAC-SHA256 over the category and the normalised value, hex."""
        message = f"{category}\x1f{normalised}".encode()
        return hmac.new(self._pseudonym_key, message, hashlib.sha256).hexdigest()[:16]

    def encrypt(self, entity_type: str, value: str) -> str:
        """A self-describing token: ``[pii:v1:<ENTITY>:<base64url(nonce | ciphertext | tag)>]``."""
        nonce = os.urandom(_NONCE)
        sealed = self._aead.encrypt(nonce, value.encode(), _associated(entity_type))
        payload = base64.urlsafe_b64encode(nonce + sealed).rstrip(b"=").decode()
        return f"[pii:{TOKEN_VERSION}:{entity_type}:{payload}]"

    def decrypt(self, version: str, entity_type: str, payload: str) -> str:
        """The value inside a token; TokenError when it is not an intact token of this service."""
        if version != TOKEN_VERSION:
            raise TokenError(f"unsupported token version {version}")
        try:
            raw = base64.urlsafe_b64decode(payload + "=" * (-len(payload) % 4))
        except (binascii.Error, ValueError):
            raise TokenError("the token is not valid base64url") from None
        if len(raw) < _NONCE + 16:
            raise TokenError("the token is truncated")
        try:
            return self._aead.decrypt(raw[:_NONCE], raw[_NONCE:], _associated(entity_type)).decode()
        except InvalidTag:
            raise TokenError("the token was altered or was not issued by this service") from None


def _associated(entity_type: str) -> bytes:
    return f"govsvc pii token {TOKEN_VERSION}|{entity_type}".encode()


def normalise_for_pseudonym(category: str, value: str) -> str:
    """The same person's value written differently gives the same pseudonym (width, case, separators)."""
    folded = fold_width(value).strip()
    if category.startswith("user.contact.phone_number"):
        digits = re.sub(r"\D", "", folded)
        return digits[-11:] if len(digits) > 11 and digits.startswith(("86", "0086")) else digits
    if category.startswith("user.contact.email"):
        return folded.lower()
    if category.startswith(("user.government_id", "user.financial", "user.unique_id")):
        return re.sub(r"[\s-]", "", folded).upper()
    return " ".join(folded.split()).casefold()


@dataclass(frozen=True)
class MaskedSpan:
    """One replaced span, in the original text and in the output."""

    entity_type: str
    start: int
    end: int
    operator: str
    new_start: int
    new_end: int


class Masker:
    """Applies a profile's operators to the findings of a text."""

    def __init__(self, rules: MaskingRules, keys: PiiKeys) -> None:
        self.rules = rules
        self.keys = keys

    def replacement(self, operator: str, entity_type: str, value: str) -> str:
        """The text that replaces a detected ``value`` under ``operator``."""
        return self.replace_value(operator, self.rules.category(entity_type), value, label=entity_type)

    def replace_value(self, operator: str, category: str, value: str, *, label: str) -> str:
        """The text that replaces a value of a data category under ``operator`` (the category's window for
        ``mask``); ``label`` names the value in the outputs of replace, pseudonymize and encrypt."""
        if operator == "mask":
            return apply_window(value, self.rules.window(category))
        if operator == "mask_all":
            return mask_chars(value, 0, 0)
        if operator == "replace":
            return f"<{label}>"
        if operator == "redact":
            return ""
        if operator == "pseudonymize":
            return f"{label}_{self.keys.pseudonym(category, normalise_for_pseudonym(category, value))}"
        if operator == "encrypt":
            return self.keys.encrypt(label, value)
        raise ValueError(f"unknown operator {operator!r}")

    def operator_for(self, entity_type: str, profile: str, override: str | None = None) -> str:
        return override or self.rules.operator(profile, self.rules.category(entity_type))

    def mask_text(
        self, text: str, findings: Sequence[Finding], profile: str, operator: str | None = None
    ) -> tuple[str, list[MaskedSpan]]:
        """The text with every finding replaced, and where each replacement went."""
        pieces: list[str] = []
        spans: list[MaskedSpan] = []
        cursor = 0
        length = 0
        for finding in sorted(findings, key=lambda f: f.start):
            chosen = self.operator_for(finding.entity_type, profile, operator)
            new = self.replacement(chosen, finding.entity_type, text[finding.start : finding.end])
            before = text[cursor : finding.start]
            pieces += [before, new]
            length += len(before)
            spans.append(MaskedSpan(finding.entity_type, finding.start, finding.end, chosen, length, length + len(new)))
            length += len(new)
            cursor = finding.end
        pieces.append(text[cursor:])
        return "".join(pieces), spans

    def decrypt_text(self, text: str) -> tuple[str, list[str]]:
        """Every token in ``text`` replaced by its value; the entity types restored. TokenError names the first
        bad token (by its position among the tokens)."""
        entity_types: list[str] = []
        pieces: list[str] = []
        cursor = 0
        for index, token in enumerate(TOKEN_RE.finditer(text)):
            try:
                value = self.keys.decrypt(*token.groups())
            except TokenError as error:
                raise TokenError(f"token {index + 1}: {error}") from None
            pieces += [text[cursor : token.start()], value]
            entity_types.append(token.group(2))
            cursor = token.end()
        pieces.append(text[cursor:])
        return "".join(pieces), entity_types


def revealed_positions(original: str, masked: str) -> set[int]:
    """Positions of ``original`` shown as-is in a same-length masked view (for the combination check)."""
    if len(original) != len(masked):
        return set()
    return {index for index, (a, b) in enumerate(zip(original, masked, strict=True)) if a == b and _maskable(a)}


def count_by_type(entity_types: Iterable[str]) -> dict[str, int]:
    """``{"CN_MOBILE": 2, ...}``: what the audit log records instead of the values."""
    return dict(sorted(Counter(entity_types).items()))
