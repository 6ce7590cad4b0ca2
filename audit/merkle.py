"""RFC 9162 (RFC 6962) Merkle tree hashing, proofs and compact ranges.

Terminology: the tree over leaves ``D[0:n]`` has the RFC 6962 shape, where a
node over ``n > 1`` leaves splits at ``k``, the largest power of two smaller
than ``n``. A *perfect* subtree covers ``[start, end)`` where ``end - start`` is
a power of two and ``start`` is a multiple of it.

Proof generators take a ``subtree_hash(start, end) -> bytes`` callback. It is
only ever called for perfect subtrees, so a service can answer it from a table
of stored node hashes (or by hashing the leaves); hashes of the ragged
right-edge nodes are computed here by combining perfect ones.
"""

from __future__ import annotations

import hashlib
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from typing import Any

from .canonical import canonical_json

__all__ = [
    "EMPTY_ROOT",
    "HASH_SIZE",
    "CompactRange",
    "MemoryTree",
    "ProofError",
    "SubtreeHash",
    "consistency_proof",
    "consistency_proof_from_leaves",
    "event_leaf_hash",
    "inclusion_proof",
    "inclusion_proof_from_leaves",
    "leaf_hash",
    "node_hash",
    "range_proof",
    "range_proof_from_leaves",
    "root_from_leaf_hashes",
    "root_from_range",
    "verify_consistency",
    "verify_inclusion",
]

HASH_SIZE = 32
EMPTY_ROOT = hashlib.sha256(b"").digest()

SubtreeHash = Callable[[int, int], bytes]
"""Callback ``subtree_hash(start, end)``: the hash of the perfect subtree over ``[start, end)``."""

_sha256 = hashlib.sha256


class ProofError(ValueError):
    """A Merkle proof (or a compact range) does not verify."""


def leaf_hash(data: bytes) -> bytes:
    """Return the RFC 9162 leaf hash ``SHA-256(0x00 || data)``."""
    return _sha256(b"\x00" + data).digest()


def node_hash(left: bytes, right: bytes) -> bytes:
    """Return the RFC 9162 interior node hash ``SHA-256(0x01 || left || right)``."""
    return _sha256(b"\x01" + left + right).digest()


def event_leaf_hash(event: Mapping[str, Any]) -> bytes:
    """Return the leaf hash of an audit event: ``leaf_hash(canonical_json(event))``."""
    return leaf_hash(canonical_json(event))


def _split(n: int) -> int:
    """Return the largest power of two smaller than ``n`` (``n >= 2``)."""
    return 1 << ((n - 1).bit_length() - 1)


def _blocks(begin: int, end: int) -> list[tuple[int, int]]:
    """Split ``[begin, end)`` into its maximal perfect subtrees, left to right."""
    out = []
    while begin < end:
        size = begin & -begin if begin else 1 << (end.bit_length() - 1)
        while begin + size > end:
            size >>= 1
        out.append((begin, begin + size))
        begin += size
    return out


def _fold(hashes: Sequence[bytes]) -> bytes:
    """Combine perfect-subtree hashes of a tree node, merging right to left."""
    root = hashes[-1]
    for h in reversed(hashes[:-1]):
        root = node_hash(h, root)
    return root


def _node(start: int, end: int, subtree_hash: SubtreeHash) -> bytes:
    """Return the hash of the tree node ``[start, end)`` asking only for perfect subtrees."""
    return _fold([subtree_hash(a, b) for a, b in _blocks(start, end)])


def _check_hash(value: bytes, what: str) -> None:
    """Raise ``ProofError`` unless ``value`` is a 32-byte hash."""
    if not isinstance(value, bytes | bytearray) or len(value) != HASH_SIZE:
        raise ProofError(f"{what} is not a {HASH_SIZE}-byte hash")


# --------------------------------------------------------------------------- roots


class CompactRange:
    """The hashes of the maximal perfect subtrees covering leaves ``[begin, end)``.

    With ``begin == 0`` this is the frontier of an append-only log: ``append``
    adds a leaf in amortised O(1) hashing, ``root()`` gives the tree head at any
    time, memory is O(log n), and ``to_dict``/``from_dict`` persist it. With
    ``begin > 0`` it accumulates a contiguous range of a larger tree, whose root
    ``root_with_proof`` recomputes from a range proof.
    """

    __slots__ = ("_begin", "_end", "_hashes")

    def __init__(self, begin: int = 0) -> None:
        """Start an empty range at leaf index ``begin``."""
        if type(begin) is not int or begin < 0:
            raise ValueError("begin must be a non-negative integer")
        self._begin = begin
        self._end = begin
        self._hashes: list[bytes] = []

    @property
    def begin(self) -> int:
        """Index of the first leaf in the range."""
        return self._begin

    @property
    def end(self) -> int:
        """Index one past the last leaf (the tree size when ``begin == 0``)."""
        return self._end

    @property
    def size(self) -> int:
        """Number of leaves in the range."""
        return self._end - self._begin

    @property
    def hashes(self) -> tuple[bytes, ...]:
        """The perfect-subtree hashes, left to right."""
        return tuple(self._hashes)

    def __len__(self) -> int:
        """Number of leaves in the range."""
        return self._end - self._begin

    def __repr__(self) -> str:
        """Short description."""
        return f"CompactRange(begin={self._begin}, end={self._end})"

    def __eq__(self, other: object) -> bool:
        """Equal when covering the same range with the same hashes."""
        if not isinstance(other, CompactRange):
            return NotImplemented
        return (self._begin, self._end, self._hashes) == (other._begin, other._end, other._hashes)

    __hash__ = None  # type: ignore[assignment]

    def copy(self) -> CompactRange:
        """Return an independent copy."""
        new = CompactRange(self._begin)
        new._end = self._end
        new._hashes = list(self._hashes)
        return new

    def append(self, leaf: bytes) -> None:
        """Append one leaf hash (32 bytes) at index ``end``."""
        if len(leaf) != HASH_SIZE:
            raise ValueError("a leaf hash is 32 bytes")
        hashes = self._hashes
        pos = self._end + 1  # the end of the range once ``leaf`` is in
        width = 2
        # Merge with the left neighbour while the combined subtree is perfect and in range.
        while not pos & (width - 1) and pos - width >= self._begin:
            leaf = _sha256(b"\x01" + hashes.pop() + leaf).digest()
            width <<= 1
        hashes.append(leaf)
        self._end = pos

    def extend(self, leaves: Iterable[bytes]) -> None:
        """Append several leaf hashes."""
        for leaf in leaves:
            self.append(leaf)

    def root(self) -> bytes:
        """Return the root hash of the tree ``[0, end)`` (requires ``begin == 0``)."""
        if self._begin != 0:
            raise ValueError("root() needs a range starting at 0; use root_with_proof()")
        if not self._hashes:
            return EMPTY_ROOT
        return _fold(self._hashes)

    def root_with_proof(self, size: int, proof: Sequence[bytes]) -> bytes:
        """Return the root of the tree of ``size`` leaves containing this range.

        ``proof`` is the range proof of ``range_proof(begin, end, size, ...)``;
        ``ProofError`` is raised if it has the wrong number of hashes.
        """
        if type(size) is not int or size < self._end:
            raise ProofError(f"tree size {size} is smaller than the end of the range {self._end}")
        for i, h in enumerate(proof):
            _check_hash(h, f"range proof element {i}")
        blocks = _blocks(self._begin, self._end)
        known = iter(zip(blocks, self._hashes, strict=True))
        supplied = iter(proof)
        used = 0
        begin, end = self._begin, self._end

        def walk(a: int, b: int) -> bytes:
            """Hash of node [a, b), from the range's blocks or the proof."""
            nonlocal used
            if b <= begin or a >= end or begin == end:
                try:
                    h = next(supplied)
                except StopIteration:
                    raise ProofError(f"range proof is too short ({len(proof)} hashes)") from None
                used += 1
                return h
            if begin <= a and b <= end:
                # A maximal node inside the range is made of consecutive blocks of it.
                parts = []
                (lo, hi), h = next(known)
                assert lo == a, "compact range blocks do not line up with the tree"
                parts.append(h)
                while hi < b:
                    (lo, hi), h = next(known)
                    parts.append(h)
                return _fold(parts)
            k = _split(b - a)
            left = walk(a, a + k)
            return node_hash(left, walk(a + k, b))

        root = walk(0, size) if size else EMPTY_ROOT
        if used != len(proof):
            raise ProofError(f"range proof is too long ({len(proof)} hashes, {used} used)")
        return root

    def to_dict(self) -> dict[str, Any]:
        """Return a JSON-serialisable form (hex hashes)."""
        out: dict[str, Any] = {"size": self._end, "hashes": [h.hex() for h in self._hashes]}
        if self._begin:
            out["begin"] = self._begin
        return out

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> CompactRange:
        """Restore a range saved by ``to_dict``, checking its shape."""
        begin = data.get("begin", 0)
        end = data.get("size")
        hashes = data.get("hashes")
        if type(begin) is not int or type(end) is not int or not 0 <= begin <= end:
            raise ValueError("compact range: bad begin/size")
        if not isinstance(hashes, list):
            raise ValueError("compact range: hashes must be a list")
        expected = len(_blocks(begin, end))
        if len(hashes) != expected:
            raise ValueError(f"compact range: {len(hashes)} hashes, {expected} expected for its size")
        decoded = []
        for h in hashes:
            if not isinstance(h, str) or len(h) != 2 * HASH_SIZE:
                raise ValueError("compact range: each hash must be 64 hex digits")
            decoded.append(bytes.fromhex(h))
        new = cls(begin)
        new._end = end
        new._hashes = decoded
        return new


def root_from_leaf_hashes(leaves: Iterable[bytes]) -> bytes:
    """Return the Merkle tree hash of a stream of leaf hashes in O(log n) memory."""
    cr = CompactRange()
    cr.extend(leaves)
    return cr.root()


def root_from_range(
    start: int,
    end: int,
    size: int,
    leaf_hashes: Iterable[bytes],
    proof: Sequence[bytes],
) -> bytes:
    """Recompute the root of a ``size``-leaf tree from the leaf hashes of ``[start, end)`` and a range proof.

    Raises ``ProofError`` if the number of leaves or of proof hashes is wrong.
    Comparing the result with a trusted root is up to the caller.
    """
    if not 0 <= start <= end <= size:
        raise ProofError(f"bad range [{start}, {end}) for tree size {size}")
    cr = CompactRange(start)
    for leaf in leaf_hashes:
        if cr.end == end:
            raise ProofError(f"more than {end - start} leaves for range [{start}, {end})")
        _check_hash(leaf, f"leaf {cr.end}")
        cr.append(leaf)
    if cr.end != end:
        raise ProofError(f"{cr.size} leaves given for range [{start}, {end})")
    return cr.root_with_proof(size, proof)


# -------------------------------------------------------------------------- proofs


def inclusion_proof(index: int, size: int, subtree_hash: SubtreeHash) -> list[bytes]:
    """Return the RFC 9162 §2.1.3.1 inclusion proof (PATH) of leaf ``index`` in a tree of ``size``."""
    if not 0 <= index < size:
        raise ValueError(f"leaf index {index} is not in a tree of size {size}")
    proof = []
    a, b = 0, size
    while b - a > 1:
        mid = a + _split(b - a)
        if index < mid:
            proof.append(_node(mid, b, subtree_hash))
            b = mid
        else:
            proof.append(_node(a, mid, subtree_hash))
            a = mid
    proof.reverse()
    return proof


def consistency_proof(old_size: int, new_size: int, subtree_hash: SubtreeHash) -> list[bytes]:
    """Return the RFC 9162 §2.1.4.1 consistency proof (SUBPROOF) from ``old_size`` to ``new_size``.

    ``0 < old_size <= new_size`` is required; equal sizes give an empty proof.
    """
    if not 0 < old_size <= new_size:
        raise ValueError(f"no consistency proof from size {old_size} to size {new_size}")
    proof = []
    a, b, m = 0, new_size, old_size
    complete = True  # SUBPROOF's flag: whether [0, a + m) is still the whole old tree
    while m != b - a:
        k = _split(b - a)
        if m <= k:
            proof.append(_node(a + k, b, subtree_hash))
            b = a + k
        else:
            proof.append(_node(a, a + k, subtree_hash))
            a += k
            m -= k
            complete = False
    if not complete:
        proof.append(_node(a, b, subtree_hash))
    proof.reverse()
    return proof


def range_proof(start: int, end: int, size: int, subtree_hash: SubtreeHash) -> list[bytes]:
    """Return the hashes of the maximal subtrees outside ``[start, end)``, in left-to-right order.

    With them and the leaf hashes of the range, ``root_from_range`` recomputes
    the root of the ``size``-leaf tree; ``[0, size)`` needs an empty proof.
    """
    if not 0 <= start <= end <= size:
        raise ValueError(f"bad range [{start}, {end}) for tree size {size}")
    out: list[bytes] = []

    def walk(a: int, b: int) -> None:
        """Collect the maximal nodes of [a, b) outside the range."""
        if b <= start or a >= end or start == end:
            out.append(_node(a, b, subtree_hash))
        elif not (start <= a and b <= end):
            k = _split(b - a)
            walk(a, a + k)
            walk(a + k, b)

    if size:
        walk(0, size)
    return out


# ---------------------------------------------------------------------- verification


def verify_inclusion(leaf_hash: bytes, index: int, size: int, proof: Sequence[bytes], root: bytes) -> None:
    """Check an inclusion proof with the RFC 9162 §2.1.3.2 algorithm; raise ``ProofError`` if it fails."""
    if type(index) is not int or type(size) is not int or index < 0 or size < 0:
        raise ProofError("leaf index and tree size must be non-negative integers")
    if index >= size:
        raise ProofError(f"leaf index {index} is not smaller than tree size {size}")
    _check_hash(leaf_hash, "leaf hash")
    fn, sn = index, size - 1
    r = bytes(leaf_hash)
    for i, p in enumerate(proof):
        _check_hash(p, f"proof element {i}")
        if sn == 0:
            raise ProofError(f"inclusion proof is too long ({len(proof)} hashes)")
        if fn & 1 or fn == sn:
            r = node_hash(p, r)
            while fn and not fn & 1:
                fn >>= 1
                sn >>= 1
        else:
            r = node_hash(r, p)
        fn >>= 1
        sn >>= 1
    if sn != 0:
        raise ProofError(f"inclusion proof is too short ({len(proof)} hashes)")
    if r != root:
        raise ProofError("inclusion proof does not lead to the given root")


def verify_consistency(
    old_size: int,
    new_size: int,
    old_root: bytes,
    new_root: bytes,
    proof: Sequence[bytes],
) -> None:
    """Check a consistency proof with the RFC 9162 §2.1.4.2 algorithm; raise ``ProofError`` if it fails.

    Equal sizes need an empty proof and equal roots; a proof from the empty tree
    (``old_size == 0``) is rejected, as RFC 9162 defines none.
    """
    for v in (old_size, new_size):
        if type(v) is not int or v < 0:
            raise ProofError("tree sizes must be non-negative integers")
    if old_size > new_size:
        raise ProofError(f"old size {old_size} is larger than new size {new_size}")
    if old_size == new_size:
        if proof:
            raise ProofError("trees of equal size need an empty consistency proof")
        if old_root != new_root:
            raise ProofError("trees of equal size have different roots")
        return
    if old_size == 0:
        raise ProofError("there is no consistency proof from the empty tree")
    if not proof:
        raise ProofError("empty consistency proof")
    for i, p in enumerate(proof):
        _check_hash(p, f"proof element {i}")
    path = list(proof)
    if old_size & (old_size - 1) == 0:  # an exact power of two: the old root is a node
        path.insert(0, old_root)
    fn, sn = old_size - 1, new_size - 1
    while fn & 1:
        fn >>= 1
        sn >>= 1
    fr = sr = path[0]
    for c in path[1:]:
        if sn == 0:
            raise ProofError(f"consistency proof is too long ({len(proof)} hashes)")
        if fn & 1 or fn == sn:
            fr = node_hash(c, fr)
            sr = node_hash(c, sr)
            while fn and not fn & 1:
                fn >>= 1
                sn >>= 1
        else:
            sr = node_hash(sr, c)
        fn >>= 1
        sn >>= 1
    if sn != 0:
        raise ProofError(f"consistency proof is too short ({len(proof)} hashes)")
    if fr != old_root:
        raise ProofError("consistency proof does not lead to the old root")
    if sr != new_root:
        raise ProofError("consistency proof does not lead to the new root")


# ------------------------------------------------------------------------ in memory


class MemoryTree:
    """An in-memory Merkle tree over a list of leaf hashes (for tests, tools and small logs).

    It stores every perfect subtree hash (about 2n hashes) and answers
    ``subtree_hash`` in O(1) for perfect subtrees.
    """

    def __init__(self, leaves: Iterable[bytes] = ()) -> None:
        """Build the tree from leaf hashes."""
        self._levels: list[list[bytes]] = [[]]
        for leaf in leaves:
            self.append(leaf)

    def __len__(self) -> int:
        """Number of leaves."""
        return len(self._levels[0])

    def append(self, leaf: bytes) -> None:
        """Append a leaf hash."""
        if len(leaf) != HASH_SIZE:
            raise ValueError("a leaf hash is 32 bytes")
        levels = self._levels
        levels[0].append(bytes(leaf))
        level = 0
        while len(levels[level]) % 2 == 0:
            row = levels[level]
            parent = node_hash(row[-2], row[-1])
            if level + 1 == len(levels):
                levels.append([])
            levels[level + 1].append(parent)
            level += 1

    def leaf(self, index: int) -> bytes:
        """Return the leaf hash at ``index``."""
        return self._levels[0][index]

    def subtree_hash(self, start: int, end: int) -> bytes:
        """Return MTH(D[start:end]) for ``0 <= start < end <= len(self)``."""
        if not 0 <= start < end <= len(self):
            raise ValueError(f"bad subtree [{start}, {end}) of a tree of {len(self)} leaves")
        width = end - start
        if width & (width - 1) == 0 and start % width == 0:
            return self._levels[width.bit_length() - 1][start // width]
        k = _split(width)
        return node_hash(self.subtree_hash(start, start + k), self.subtree_hash(start + k, end))

    def _size(self, size: int | None) -> int:
        """Default ``size`` to the current size and check it."""
        if size is None:
            return len(self)
        if not 0 <= size <= len(self):
            raise ValueError(f"tree size {size} is beyond the {len(self)} leaves known")
        return size

    def root(self, size: int | None = None) -> bytes:
        """Return the root hash of the first ``size`` leaves (default: all)."""
        size = self._size(size)
        return _node(0, size, self.subtree_hash) if size else EMPTY_ROOT

    def inclusion_proof(self, index: int, size: int | None = None) -> list[bytes]:
        """Return the inclusion proof of leaf ``index`` in the tree of ``size`` leaves."""
        return inclusion_proof(index, self._size(size), self.subtree_hash)

    def consistency_proof(self, old_size: int, new_size: int | None = None) -> list[bytes]:
        """Return the consistency proof between two sizes of this tree."""
        return consistency_proof(old_size, self._size(new_size), self.subtree_hash)

    def range_proof(self, start: int, end: int, size: int | None = None) -> list[bytes]:
        """Return the range proof for ``[start, end)`` in the tree of ``size`` leaves."""
        return range_proof(start, end, self._size(size), self.subtree_hash)

    def leaves(self, start: int = 0, end: int | None = None) -> Iterator[bytes]:
        """Iterate over leaf hashes ``[start, end)``."""
        row = self._levels[0]
        return iter(row[start : len(row) if end is None else end])


def inclusion_proof_from_leaves(leaves: Sequence[bytes], index: int, size: int | None = None) -> list[bytes]:
    """Inclusion proof over an in-memory list of leaf hashes."""
    return MemoryTree(leaves).inclusion_proof(index, size)


def consistency_proof_from_leaves(
    leaves: Sequence[bytes],
    old_size: int,
    new_size: int | None = None,
) -> list[bytes]:
    """Consistency proof over an in-memory list of leaf hashes."""
    return MemoryTree(leaves).consistency_proof(old_size, new_size)


def range_proof_from_leaves(
    leaves: Sequence[bytes],
    start: int,
    end: int,
    size: int | None = None,
) -> list[bytes]:
    """Range proof over an in-memory list of leaf hashes."""
    return MemoryTree(leaves).range_proof(start, end, size)
