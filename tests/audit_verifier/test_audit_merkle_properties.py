"""Property tests of the Merkle proofs (hypothesis)."""

from __future__ import annotations

import pytest

hypothesis = pytest.importorskip("hypothesis")

from hypothesis import given, settings  # noqa: E402
from hypothesis import strategies as st  # noqa: E402

from audit import merkle  # noqa: E402
from audit.merkle import (  # noqa: E402
    CompactRange,
    MemoryTree,
    ProofError,
    leaf_hash,
    root_from_leaf_hashes,
    root_from_range,
    verify_consistency,
    verify_inclusion,
)

MAX_SIZE = 300
SETTINGS = settings(max_examples=40, deadline=None, database=None)


def _tree(size: int, salt: int) -> tuple[list[bytes], MemoryTree]:
    leaves = [leaf_hash(f"{salt}:{i}".encode()) for i in range(size)]
    return leaves, MemoryTree(leaves)


def _zero(start: int, end: int) -> bytes:
    return bytes(32)


def _expect_fail_unless_same_shape(same_shape: bool, check) -> None:
    """A proof binds a tree size only through its shape (the checkpoint signature binds the size)."""
    if same_shape:
        check()
    else:
        with pytest.raises(ProofError):
            check()


def _flip(proof: list[bytes], element: int, byte: int) -> list[bytes]:
    tampered = list(proof)
    h = bytearray(tampered[element])
    h[byte % len(h)] ^= 0x01
    tampered[element] = bytes(h)
    return tampered


@SETTINGS
@given(size=st.integers(1, MAX_SIZE), salt=st.integers(0, 1000))
def test_every_inclusion_proof_verifies(size: int, salt: int) -> None:
    leaves, tree = _tree(size, salt)
    root = tree.root()
    assert root_from_leaf_hashes(leaves) == root
    for i in range(size):
        verify_inclusion(leaves[i], i, size, tree.inclusion_proof(i), root)


@SETTINGS
@given(size=st.integers(2, MAX_SIZE), salt=st.integers(0, 1000))
def test_every_consistency_proof_verifies(size: int, salt: int) -> None:
    _, tree = _tree(size, salt)
    root = tree.root()
    for m in range(1, size + 1):
        verify_consistency(m, size, tree.root(m), root, tree.consistency_proof(m))


@SETTINGS
@given(data=st.data(), size=st.integers(2, MAX_SIZE), salt=st.integers(0, 1000))
def test_tampered_inclusion_proofs_fail(data: st.DataObject, size: int, salt: int) -> None:
    leaves, tree = _tree(size, salt)
    root = tree.root()
    index = data.draw(st.integers(0, size - 1), label="index")
    proof = tree.inclusion_proof(index)
    for element in range(len(proof)):
        for byte in (0, 17, 31):
            with pytest.raises(ProofError):
                verify_inclusion(leaves[index], index, size, _flip(proof, element, byte), root)
    other_index = data.draw(st.integers(0, size - 1).filter(lambda i: i != index), label="other_index")
    with pytest.raises(ProofError):
        verify_inclusion(leaves[index], other_index, size, proof, root)
    other_size = data.draw(st.integers(1, 2 * MAX_SIZE).filter(lambda n: n != size), label="other_size")
    same_shape = other_size > index and len(merkle.inclusion_proof(index, other_size, _zero)) == len(proof)
    check = lambda: verify_inclusion(leaves[index], index, other_size, proof, root)  # noqa: E731
    _expect_fail_unless_same_shape(same_shape, check)


@SETTINGS
@given(data=st.data(), size=st.integers(3, MAX_SIZE), salt=st.integers(0, 1000))
def test_tampered_consistency_proofs_fail(data: st.DataObject, size: int, salt: int) -> None:
    _, tree = _tree(size, salt)
    old = data.draw(st.integers(1, size - 1), label="old")
    proof = tree.consistency_proof(old)
    old_root, new_root = tree.root(old), tree.root()
    for element in range(len(proof)):
        for byte in (0, 9, 31):
            with pytest.raises(ProofError):
                verify_consistency(old, size, old_root, new_root, _flip(proof, element, byte))
    other_old = data.draw(st.integers(1, size - 1).filter(lambda m: m != old), label="other_old")
    with pytest.raises(ProofError):
        verify_consistency(other_old, size, old_root, new_root, proof)
    other_new = data.draw(st.integers(1, 2 * MAX_SIZE).filter(lambda n: n != size), label="other_new")
    same_shape = other_new > old and len(merkle.consistency_proof(old, other_new, _zero)) == len(proof)
    check = lambda: verify_consistency(old, other_new, old_root, new_root, proof)  # noqa: E731
    _expect_fail_unless_same_shape(same_shape, check)


@SETTINGS
@given(data=st.data(), size=st.integers(1, MAX_SIZE), salt=st.integers(0, 1000))
def test_root_from_range_matches(data: st.DataObject, size: int, salt: int) -> None:
    leaves, tree = _tree(size, salt)
    start = data.draw(st.integers(0, size), label="start")
    end = data.draw(st.integers(start, size), label="end")
    proof = tree.range_proof(start, end)
    assert root_from_range(start, end, size, leaves[start:end], proof) == root_from_leaf_hashes(leaves)
    if start == 0 and end == size:
        assert proof == []
    if proof:
        element = data.draw(st.integers(0, len(proof) - 1), label="element")
        assert root_from_range(start, end, size, leaves[start:end], _flip(proof, element, 5)) != tree.root()
    if end > start:
        tampered = list(leaves[start:end])
        tampered[data.draw(st.integers(0, end - start - 1), label="leaf")] = leaf_hash(b"forged")
        assert root_from_range(start, end, size, tampered, proof) != tree.root()


@SETTINGS
@given(begin=st.integers(0, 2000), count=st.integers(0, 300))
def test_compact_range_round_trip(begin: int, count: int) -> None:
    cr = CompactRange(begin)
    cr.extend(leaf_hash(i.to_bytes(4, "big")) for i in range(count))
    assert CompactRange.from_dict(cr.to_dict()) == cr
    assert cr.size == count and cr.end == begin + count
