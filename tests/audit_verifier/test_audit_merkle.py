"""Merkle tree tests: transparency-dev/merkle vectors, the RFC 6962 reference tree and edge cases."""

from __future__ import annotations

import base64
import hashlib
import json
from pathlib import Path

import pytest

from audit import merkle
from audit.merkle import (
    EMPTY_ROOT,
    CompactRange,
    MemoryTree,
    ProofError,
    leaf_hash,
    node_hash,
    root_from_leaf_hashes,
    root_from_range,
    verify_consistency,
    verify_inclusion,
)

VECTORS = Path(__file__).resolve().parent / "vectors"
REFERENCE = json.loads((VECTORS / "rfc6962_reference_tree.json").read_text(encoding="utf-8"))
LEAVES = [leaf_hash(bytes.fromhex(x)) for x in REFERENCE["leaf_inputs_hex"]]
ROOTS = [bytes.fromhex(x) for x in REFERENCE["root_hashes_hex"]]
NODES = [[bytes.fromhex(x) for x in level] for level in REFERENCE["node_hashes_hex"]]


def _vectors(kind: str) -> list[Path]:
    files = sorted((VECTORS / kind).glob("*/*.json"))
    assert files, f"no {kind} vectors found"
    return files


def _b64(value: str) -> bytes:
    return base64.b64decode(value)


@pytest.mark.parametrize("path", _vectors("inclusion"), ids=lambda p: f"{p.parent.name}/{p.stem}")
def test_inclusion_vectors(path: Path) -> None:
    v = json.loads(path.read_text(encoding="utf-8"))
    index = v["leafIdx"] if "leafIdx" in v else v["leafIndex"]
    proof = [_b64(p) for p in v["proof"] or []]
    args = (_b64(v["leafHash"]), index, v["treeSize"], proof, _b64(v["root"]))
    if v["wantErr"]:
        with pytest.raises(ProofError):
            verify_inclusion(*args)
    else:
        verify_inclusion(*args)


@pytest.mark.parametrize("path", _vectors("consistency"), ids=lambda p: f"{p.parent.name}/{p.stem}")
def test_consistency_vectors(path: Path) -> None:
    v = json.loads(path.read_text(encoding="utf-8"))
    proof = [_b64(p) for p in v["proof"] or []]
    args = (v["size1"], v["size2"], _b64(v["root1"]), _b64(v["root2"]), proof)
    if v["wantErr"]:
        with pytest.raises(ProofError):
            verify_consistency(*args)
    else:
        verify_consistency(*args)


def test_happy_vectors_are_what_we_generate() -> None:
    """Our generators produce exactly the proofs of the published happy paths."""
    tree = MemoryTree(LEAVES)
    for path in _vectors("inclusion"):
        v = json.loads(path.read_text(encoding="utf-8"))
        if not v["wantErr"]:
            expected = [_b64(p) for p in v["proof"] or []]
            assert tree.inclusion_proof(v["leafIdx"], v["treeSize"]) == expected, path
    for path in _vectors("consistency"):
        v = json.loads(path.read_text(encoding="utf-8"))
        if not v["wantErr"]:
            expected = [_b64(p) for p in v["proof"] or []]
            assert tree.consistency_proof(v["size1"], v["size2"]) == expected, path


def test_reference_roots() -> None:
    assert EMPTY_ROOT == hashlib.sha256(b"").digest() == ROOTS[0]
    tree = MemoryTree(LEAVES)
    for size, root in enumerate(ROOTS):
        assert root_from_leaf_hashes(LEAVES[:size]) == root
        assert tree.root(size) == root


def test_reference_node_hashes() -> None:
    tree = MemoryTree(LEAVES)
    for level, hashes in enumerate(NODES):
        for index, expected in enumerate(hashes):
            width = 1 << level
            assert tree.subtree_hash(index * width, (index + 1) * width) == expected
    assert NODES[1][0] == node_hash(LEAVES[0], LEAVES[1])


def test_reference_compact_ranges() -> None:
    cr = CompactRange()
    for size, refs in enumerate(REFERENCE["compact_trees"]):
        assert list(cr.hashes) == [NODES[level][index] for level, index in refs]
        assert cr.root() == ROOTS[size]
        if size < len(LEAVES):
            cr.append(LEAVES[size])


def test_compact_range_persistence() -> None:
    cr = CompactRange()
    leaves = [leaf_hash(i.to_bytes(4, "big")) for i in range(1000)]
    for i, leaf in enumerate(leaves):
        if i % 97 == 0:  # "restart" now and then
            cr = CompactRange.from_dict(json.loads(json.dumps(cr.to_dict())))
        cr.append(leaf)
    assert cr.end == 1000 and len(cr.hashes) == bin(1000).count("1")
    assert cr.root() == MemoryTree(leaves).root()
    copy = cr.copy()
    copy.append(leaves[0])
    assert copy != cr and cr.end == 1000


@pytest.mark.parametrize(
    "data",
    [
        {"size": 3, "hashes": ["00" * 32]},
        {"size": 2, "hashes": ["zz" * 32]},
        {"size": 1, "hashes": ["00" * 31]},
        {"size": -1, "hashes": []},
        {"size": 1, "hashes": "00" * 32},
        {"begin": 5, "size": 4, "hashes": []},
    ],
)
def test_compact_range_from_dict_rejects(data) -> None:
    with pytest.raises(ValueError):
        CompactRange.from_dict(data)


def test_inclusion_edge_cases() -> None:
    tree = MemoryTree(LEAVES)
    root = tree.root()
    proof = tree.inclusion_proof(3)
    verify_inclusion(LEAVES[3], 3, 8, proof, root)
    with pytest.raises(ProofError, match="not smaller than tree size"):
        verify_inclusion(LEAVES[3], 8, 8, proof, root)
    with pytest.raises(ProofError):
        verify_inclusion(LEAVES[3], -1, 8, proof, root)
    with pytest.raises(ProofError, match="too long"):
        verify_inclusion(LEAVES[3], 3, 8, [*proof, proof[0]], root)
    with pytest.raises(ProofError, match="too short"):
        verify_inclusion(LEAVES[3], 3, 8, proof[:-1], root)
    with pytest.raises(ProofError, match="32-byte"):
        verify_inclusion(LEAVES[3], 3, 8, [*proof[:-1], b"short"], root)
    with pytest.raises(ProofError, match="given root"):
        verify_inclusion(LEAVES[4], 3, 8, proof, root)
    with pytest.raises(ProofError):
        verify_inclusion(LEAVES[0], 0, 0, [], EMPTY_ROOT)
    with pytest.raises(ValueError):
        tree.inclusion_proof(8)


def test_consistency_edge_cases() -> None:
    tree = MemoryTree(LEAVES)
    r3, r8 = tree.root(3), tree.root(8)
    proof = tree.consistency_proof(3, 8)
    verify_consistency(3, 8, r3, r8, proof)
    verify_consistency(8, 8, r8, r8, [])
    assert tree.consistency_proof(8, 8) == []
    with pytest.raises(ProofError, match="empty tree"):
        verify_consistency(0, 8, EMPTY_ROOT, r8, [])
    with pytest.raises(ProofError, match="empty tree"):
        verify_consistency(0, 8, EMPTY_ROOT, r8, proof)
    with pytest.raises(ProofError, match="equal size"):
        verify_consistency(8, 8, r8, r8, [r8])
    with pytest.raises(ProofError, match="different roots"):
        verify_consistency(8, 8, r8, r3, [])
    with pytest.raises(ProofError, match="larger than"):
        verify_consistency(8, 3, r8, r3, proof)
    with pytest.raises(ProofError, match="empty consistency proof"):
        verify_consistency(3, 8, r3, r8, [])
    with pytest.raises(ProofError, match="too long"):
        verify_consistency(3, 8, r3, r8, [*proof, proof[0]])
    with pytest.raises(ProofError, match="too short"):
        verify_consistency(3, 8, r3, r8, proof[:-1])
    with pytest.raises(ValueError):
        tree.consistency_proof(0, 8)
    with pytest.raises(ValueError):
        tree.consistency_proof(5, 4)


def test_range_proof_shapes() -> None:
    tree = MemoryTree(LEAVES)
    assert tree.range_proof(0, 8) == []
    assert tree.range_proof(0, 4) == [NODES[2][1]]
    assert tree.range_proof(2, 5) == [NODES[1][0], NODES[0][5], NODES[1][3]]
    assert tree.range_proof(3, 3) == [ROOTS[8]]  # an empty range is proven by the root alone
    assert root_from_range(3, 3, 8, [], [ROOTS[8]]) == ROOTS[8]
    assert root_from_range(0, 0, 0, [], []) == EMPTY_ROOT
    proof = tree.range_proof(2, 5)
    assert root_from_range(2, 5, 8, LEAVES[2:5], proof) == ROOTS[8]
    with pytest.raises(ProofError, match="too short"):
        root_from_range(2, 5, 8, LEAVES[2:5], proof[:-1])
    with pytest.raises(ProofError, match="too long"):
        root_from_range(2, 5, 8, LEAVES[2:5], [*proof, proof[0]])
    with pytest.raises(ProofError, match="leaves"):
        root_from_range(2, 5, 8, LEAVES[2:4], proof)
    with pytest.raises(ProofError, match="more than"):
        root_from_range(2, 5, 8, LEAVES[2:6], proof)
    with pytest.raises(ProofError):
        root_from_range(2, 9, 8, LEAVES[2:8], proof)


def test_callback_only_sees_perfect_subtrees() -> None:
    leaves = [leaf_hash(bytes([i])) for i in range(45)]
    tree = MemoryTree(leaves)
    asked: list[tuple[int, int]] = []

    def subtree_hash(start: int, end: int) -> bytes:
        asked.append((start, end))
        return tree.subtree_hash(start, end)

    for size in range(1, 46):
        for i in range(size):
            merkle.inclusion_proof(i, size, subtree_hash)
        for m in range(1, size + 1):
            merkle.consistency_proof(m, size, subtree_hash)
        merkle.range_proof(size // 3, size - size // 4, size, subtree_hash)
    for start, end in asked:
        width = end - start
        assert width & (width - 1) == 0 and start % width == 0, (start, end)


def test_leaf_and_node_hash_domain_separation() -> None:
    assert leaf_hash(b"") == hashlib.sha256(b"\x00").digest()
    assert node_hash(b"a" * 32, b"b" * 32) == hashlib.sha256(b"\x01" + b"a" * 32 + b"b" * 32).digest()
    event = {"seq": 1, "time": "2025-01-01T00:00:00Z"}
    assert merkle.event_leaf_hash(event) == leaf_hash(b'{"seq":1,"time":"2025-01-01T00:00:00Z"}')


def test_list_conveniences() -> None:
    tree = MemoryTree(LEAVES)
    assert merkle.inclusion_proof_from_leaves(LEAVES, 5) == tree.inclusion_proof(5)
    assert merkle.consistency_proof_from_leaves(LEAVES, 3, 7) == tree.consistency_proof(3, 7)
    assert merkle.range_proof_from_leaves(LEAVES, 1, 6) == tree.range_proof(1, 6)
