"""The service's own RBAC: casbin policy loaded from the database, checked through a version-keyed cache.

The default policy lives in ``policies/policy.csv`` and is written to the ``casbin_rule`` table by the
casbin SQLAlchemy adapter (``seed_policy``). Every instance keeps a casbin ``FastEnforcer`` (indexed on
resource and action) and a cache of answers; both are rebuilt when the ``policy_state.version`` row changes, so a
policy change made through any instance applies to the very next request everywhere.
"""

from __future__ import annotations

import csv
import hashlib
import io
import threading
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path

import casbin
from casbin.model import FastModel
from casbin_sqlalchemy_adapter import Adapter
from sqlalchemy import Connection, Engine, select, update
from sqlalchemy.orm import Session

from govsvc.audit.service import AuditContext, record
from govsvc.core.db import utcnow
from govsvc.core.errors import ConflictError, ValidationFailed
from govsvc.policy.models import CasbinRule, PolicyState

MODEL_FILE = "model.conf"
DATA_PREFIX = "data:"
POLICY_FILE = "policy.csv"
POLICY_STATE_ID = 1
_NAME_CHARS = set("abcdefghijklmnopqrstuvwxyz0123456789_.:-")


@dataclass(frozen=True)
class PolicyLine:
    """One casbin line: ``p, role, resource, action`` or ``g, role, parent_role``."""

    ptype: str
    values: tuple[str, ...]

    def as_row(self) -> list[str]:
        return [self.ptype, *self.values]


def parse_policy_csv(text: str, *, source: str = POLICY_FILE) -> list[PolicyLine]:
    """Parse and validate policy CSV; errors name the line and what is wrong."""
    lines: list[PolicyLine] = []
    errors: list[dict[str, object]] = []
    seen: set[PolicyLine] = set()
    for number, row in enumerate(csv.reader(io.StringIO(text)), start=1):
        cells = [cell.strip() for cell in row]
        if not cells or not cells[0] or cells[0].startswith("#"):
            continue
        ptype, values = cells[0], tuple(cells[1:])
        expected = {"p": 3, "g": 2}.get(ptype)
        where = f"{source}:{number}"
        if expected is None:
            errors.append({"field": where, "message": f"unknown line type {ptype!r} (expected p or g)"})
            continue
        if len(values) != expected:
            errors.append({"field": where, "message": f"{ptype} lines take {expected} values, got {len(values)}"})
            continue
        bad = [v for v in values if not v or not set(v) <= _NAME_CHARS]
        if bad:
            errors.append({"field": where, "message": f"names must be lower-case [a-z0-9_.:-]: {bad!r}"})
            continue
        line = PolicyLine(ptype, values)
        if line in seen:
            errors.append({"field": where, "message": "duplicate line"})
            continue
        seen.add(line)
        lines.append(line)
    if errors:
        raise ValidationFailed(f"{source} is invalid", errors=errors)
    if not any(line.ptype == "p" for line in lines):
        raise ValidationFailed(f"{source} has no p lines: everything would be denied")
    return lines


def policy_digest(lines: Iterable[PolicyLine]) -> str:
    """A digest of a policy, independent of line order."""
    canonical = "\n".join(sorted(",".join(line.as_row()) for line in lines))
    return hashlib.sha256(canonical.encode()).hexdigest()


def roles_of(lines: Iterable[PolicyLine]) -> set[str]:
    """Every role named by a policy."""
    roles: set[str] = set()
    for line in lines:
        roles.add(line.values[0])
        if line.ptype == "g":
            roles.add(line.values[1])
    return roles


def load_policy_file(policy_dir: Path) -> list[PolicyLine]:
    path = policy_dir / POLICY_FILE
    return parse_policy_csv(path.read_text(encoding="utf-8"), source=str(path.name))


def _model(model_text: str) -> FastModel:
    model = FastModel([1, 2])  # index policy lines by (resource, action)
    model.load_model_from_text(model_text)
    return model


def current_lines(session: Session) -> list[PolicyLine]:
    """The policy lines stored in the database."""
    rows = session.scalars(select(CasbinRule).order_by(CasbinRule.id))
    return [PolicyLine(row.ptype, row.as_tuple()[1:]) for row in rows]


_CURRENT_VERSION = select(PolicyState.__table__.c.version).where(PolicyState.__table__.c.id == POLICY_STATE_ID)


def current_version(session: Session) -> int:
    """The stored policy version (0 when never seeded); checked on every request, so plain Core."""
    version = session.connection().execute(_CURRENT_VERSION).scalar()
    return int(version or 0)


def write_policy(connection: Connection, model_text: str, lines: Sequence[PolicyLine], *, actor: str) -> int:
    """Replace the stored policy through the casbin adapter and bump the version, in the caller's transaction."""
    enforcer = casbin.Enforcer(_model(model_text))
    for line in lines:
        if line.ptype == "p":
            enforcer.add_named_policy("p", list(line.values))
        else:
            enforcer.add_named_grouping_policy("g", list(line.values))
    adapter = Adapter(connection, db_class=CasbinRule, create_all_models=False)
    adapter.save_policy(enforcer.get_model())
    digest = policy_digest(lines)
    state = connection.execute(select(PolicyState.version).where(PolicyState.id == POLICY_STATE_ID)).first()
    if state is None:
        connection.execute(
            PolicyState.__table__.insert().values(
                id=POLICY_STATE_ID, version=1, source_digest=digest, updated_at=utcnow(), updated_by=actor
            )
        )
        return 1
    new_version = int(state[0]) + 1
    connection.execute(
        update(PolicyState)
        .where(PolicyState.id == POLICY_STATE_ID)
        .values(version=new_version, source_digest=digest, updated_at=utcnow(), updated_by=actor)
    )
    return new_version


def bump_version(session: Session, *, actor: str) -> int:
    """Mark the stored policy as changed so every instance reloads it before its next check."""
    version = current_version(session) + 1
    session.execute(
        update(PolicyState)
        .where(PolicyState.id == POLICY_STATE_ID)
        .values(version=version, updated_at=utcnow(), updated_by=actor)
    )
    return version


@dataclass(frozen=True)
class SeedResult:
    changed: bool
    version: int
    added: list[PolicyLine]
    removed: list[PolicyLine]


def seed_policy(engine: Engine, policy_dir: Path, *, replace: bool = False, actor: str = "cli") -> SeedResult:
    """Load ``policies/`` into an empty database (or, with ``replace``, over the stored policy)."""
    model_text = (policy_dir / MODEL_FILE).read_text(encoding="utf-8")
    lines = load_policy_file(policy_dir)
    with engine.begin() as connection, Session(bind=connection) as session:
        stored = current_lines(session)
        version = current_version(session)
        stored_set, file_set = set(stored), set(lines)
        added = [line for line in lines if line not in stored_set]
        removed = [line for line in stored if line not in file_set]
        if (stored and not replace) or (not added and not removed and version > 0):
            return SeedResult(False, version, [], [])
        version = write_policy(connection, model_text, lines, actor=actor)
        record(
            session,
            "config.changed",
            object_ref="policy:rbac",
            reason_code="seed",
            details={"version": version, "lines_added": len(added), "lines_removed": len(removed)},
            context=AuditContext(principal_id=actor, role="system"),
        )
        session.flush()
        return SeedResult(True, version, added, removed)


class PolicyEngine:
    """Answers ``may role R do A on resource O`` from the stored policy, thread-safely and fast."""

    def __init__(self, policy_dir: Path) -> None:
        self._model_text = (policy_dir / MODEL_FILE).read_text(encoding="utf-8")
        _model(self._model_text)  # fail at start-up on a broken model
        self._lock = threading.Lock()
        self._load_lock = threading.Lock()
        self._enforcer: casbin.FastEnforcer | None = None
        self._version: int | None = None
        self._cache: dict[tuple[str, str, str], bool] = {}
        self._roles: frozenset[str] = frozenset()
        self._data_index: dict[tuple[str, str], frozenset[str]] = {}
        self._implicit_roles: dict[str, frozenset[str]] = {}
        self._reload_listeners: list[Callable[[Session], object]] = []

    def add_reload_listener(self, listener: Callable[[Session], object]) -> None:
        """Call ``listener(session)`` after each (re)load: policy that rides on the policy version (masking rules)."""
        self._reload_listeners.append(listener)

    @property
    def loaded(self) -> bool:
        return self._enforcer is not None and bool(self._roles)

    @property
    def version(self) -> int | None:
        return self._version

    @property
    def roles(self) -> frozenset[str]:
        """Roles named by the loaded policy."""
        return self._roles

    @property
    def model_text(self) -> str:
        return self._model_text

    def ensure_current(self, session: Session) -> int:
        """Reload when the stored version differs from the loaded one, or nothing usable is loaded; returns the
        version in force."""
        version = current_version(session)
        if version != self._version or not self.loaded:
            with self._load_lock:  # one thread loads a new version; the others wait for it instead of loading too
                if version != self._version or not self.loaded:
                    self._load(session, version)
        return version

    def _load(self, session: Session, version: int) -> None:
        adapter = Adapter(session.connection(), db_class=CasbinRule, create_all_models=False)
        enforcer = casbin.FastEnforcer(_model(self._model_text), adapter, cache_key_order=[1, 2])
        enforcer.enable_auto_save(False)
        lines = current_lines(session)
        roles = roles_of(lines)
        data_index: dict[tuple[str, str], set[str]] = {}
        for line in lines:
            if line.ptype == "p" and line.values[1].startswith(DATA_PREFIX):
                role, resource, action = line.values
                data_index.setdefault((role, action), set()).add(resource.removeprefix(DATA_PREFIX))
        implicit = {role: frozenset({role, *enforcer.get_implicit_roles_for_user(role)}) for role in roles}
        with self._lock:
            self._enforcer, self._version, self._cache, self._roles = enforcer, version, {}, frozenset(roles)
            self._data_index = {key: frozenset(value) for key, value in data_index.items()}
            self._implicit_roles = implicit
        for listener in self._reload_listeners:
            listener(session)

    def data_allowed(self, roles: Iterable[str], category: str, action: str) -> bool:
        """May any of ``roles`` (with the roles they inherit) do ``action`` on data of ``category``?

        Data lines are ``p, <role>, data:<category>, <action>``; a category covers its sub-categories.
        """
        index, implicit = self._data_index, self._implicit_roles
        for role in roles:
            for effective in implicit.get(role, (role,)):
                granted = index.get((effective, action))
                if not granted:
                    continue
                probe = category
                while probe:
                    if probe in granted:
                        return True
                    probe = probe.rpartition(".")[0]
        return False

    def roles_allowed(self, resource: str, action: str) -> list[str]:
        """The roles of the loaded policy that may do ``action`` on ``resource`` (directly or inherited), sorted."""
        return sorted(role for role in self.roles if self.is_allowed(role, resource, action))

    def is_allowed(self, role: str, resource: str, action: str) -> bool:
        """True when the loaded policy allows it; False when no policy is loaded (deny by default)."""
        key = (role, resource, action)
        cache = self._cache
        answer = cache.get(key)
        if answer is not None:
            return answer
        with self._lock:  # casbin's enforce() is not thread-safe
            if self._enforcer is None:
                return False
            answer = bool(self._enforcer.enforce(role, resource, action))
            self._cache[key] = answer
        return answer


# -- editing the stored policy (the admin UI's policy editor) ------------------------------------------------------

# A policy that no role could edit any more, or that nobody could sign in to the admin UI with, is refused.
EDITOR_GRANTS = (("policy", "write"), ("admin_ui", "use"))


@dataclass(frozen=True)
class PolicyChange:
    """What replacing the stored policy with a proposed text does (``version`` is set once saved)."""

    added: list[PolicyLine]
    removed: list[PolicyLine]
    base_digest: str
    version: int | None = None

    @property
    def changed(self) -> bool:
        return bool(self.added or self.removed)


def policy_text(lines: Iterable[PolicyLine]) -> str:
    """The CSV form of policy lines (what ``policies/policy.csv`` holds, without its comments)."""
    return "".join(", ".join(line.as_row()) + "\n" for line in lines)


def _check_editable(model_text: str, lines: Sequence[PolicyLine]) -> None:
    enforcer = casbin.Enforcer(_model(model_text))
    for line in lines:
        if line.ptype == "p":
            enforcer.add_named_policy("p", list(line.values))
        else:
            enforcer.add_named_grouping_policy("g", list(line.values))
    if not any(all(enforcer.enforce(role, *grant) for grant in EDITOR_GRANTS) for role in roles_of(lines)):
        raise ValidationFailed(
            "No role would keep both 'policy, write' and 'admin_ui, use': nobody could change the policy again.",
            errors=[{"field": "policy", "message": "keep p, <role>, policy, write and p, <role>, admin_ui, use"}],
        )


def preview_policy(session: Session, model_text: str, text: str) -> PolicyChange:
    """Validate a proposed policy text and say what it adds and removes; nothing is stored."""
    lines = parse_policy_csv(text, source="policy")
    _check_editable(model_text, lines)
    stored = current_lines(session)
    stored_set, proposed_set = set(stored), set(lines)
    return PolicyChange(
        added=[line for line in lines if line not in stored_set],
        removed=[line for line in stored if line not in proposed_set],
        base_digest=policy_digest(stored),
    )


def replace_policy(session: Session, model_text: str, text: str, *, base_digest: str, actor: str) -> PolicyChange:
    """Replace the stored policy with a proposed text previewed against ``base_digest``: validated, written through
    the casbin adapter, the version bumped (every instance reloads before its next request), audited.
    ConflictError when the policy changed since the preview; ValidationFailed when nothing changes."""
    change = preview_policy(session, model_text, text)
    if change.base_digest != base_digest:
        raise ConflictError("The policy was changed by someone else since your preview; review the new diff.")
    if not change.changed:
        raise ValidationFailed(
            "Nothing to save: the policy is unchanged.", errors=[{"field": "policy", "message": "unchanged"}]
        )
    lines = parse_policy_csv(text, source="policy")
    version = write_policy(session.connection(), model_text, lines, actor=actor)
    session.expire_all()
    record(
        session,
        "config.changed",
        object_ref="policy:rbac",
        reason_code="policy_edit",
        details={"version": version, "lines_added": len(change.added), "lines_removed": len(change.removed)},
    )
    return PolicyChange(change.added, change.removed, change.base_digest, version)
