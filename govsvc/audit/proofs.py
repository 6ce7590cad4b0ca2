"""Proofs answered from storage: checkpoints, inclusion, consistency and range proofs.

The Merkle algorithms live in ``audit.merkle`` (shared with the auditor's verifier); this module only supplies
the subtree hashes they ask for, fetching all of them in one or two queries.
"""

from __future__ import annotations

from collections.abc import Callable

from sqlalchemy import select
from sqlalchemy.orm import Session

from audit import merkle
from govsvc.audit.models import AuditCheckpoint
from govsvc.audit.sequencer import fetch_nodes
from govsvc.core.errors import NotFoundError, ValidationFailed

_PLACEHOLDER = b"\x00" * 32


def _node_of(start: int, end: int) -> tuple[int, int]:
    level = (end - start).bit_length() - 1
    if end - start != 1 << level or start % (1 << level):
        raise AssertionError(f"[{start}, {end}) is not a perfect aligned subtree")
    return level, start >> level


def with_stored_nodes(session: Session, build: Callable[[merkle.SubtreeHash], list[bytes]]) -> list[bytes]:
    """Run a proof builder twice: once to learn which subtrees it needs, once with their stored hashes."""
    wanted: list[tuple[int, int]] = []
    build(lambda start, end: wanted.append(_node_of(start, end)) or _PLACEHOLDER)
    hashes = fetch_nodes(session, wanted)
    return build(lambda start, end: hashes[_node_of(start, end)])


def latest_checkpoint(session: Session) -> AuditCheckpoint | None:
    return session.scalar(select(AuditCheckpoint).order_by(AuditCheckpoint.tree_size.desc()).limit(1))


def checkpoint_at(session: Session, tree_size: int | None) -> AuditCheckpoint:
    """The checkpoint of a given size (or the latest); NotFoundError if none was signed at that size."""
    checkpoint = latest_checkpoint(session) if tree_size is None else session.get(AuditCheckpoint, tree_size)
    if checkpoint is None:
        what = "yet" if tree_size is None else f"at tree size {tree_size}"
        raise NotFoundError(f"No signed checkpoint {what}.")
    return checkpoint


def inclusion_proof(session: Session, seq: int, tree_size: int) -> list[bytes]:
    """The audit path of leaf ``seq`` in the tree of ``tree_size`` leaves (a signed checkpoint size)."""
    if not 0 <= seq < tree_size:
        raise ValidationFailed(
            "The event is not in that tree.",
            errors=[{"field": "seq", "message": f"must be below the tree size {tree_size}"}],
        )
    return with_stored_nodes(session, lambda get: merkle.inclusion_proof(seq, tree_size, get))


def consistency_proof(session: Session, old_size: int, new_size: int) -> list[bytes]:
    """Proof that the tree of ``old_size`` leaves is a prefix of the tree of ``new_size`` leaves."""
    if not 0 < old_size <= new_size:
        raise ValidationFailed(
            "Consistency needs 0 < first <= second.",
            errors=[{"field": "first", "message": "must be at least 1 and at most second"}],
        )
    return with_stored_nodes(session, lambda get: merkle.consistency_proof(old_size, new_size, get))


def range_proof(session: Session, start: int, end: int, tree_size: int) -> list[bytes]:
    """The subtree hashes outside ``[start, end)`` needed to recompute the root of ``tree_size`` leaves."""
    return with_stored_nodes(session, lambda get: merkle.range_proof(start, end, tree_size, get))
