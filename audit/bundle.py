"""The audit export bundle format (``govsvc-audit-bundle/1``): writer and strict line reader.

A bundle is JSONL (UTF-8, one JSON object per ``\\n``-terminated line), in this order:

1. ``{"type": "header", "format": "govsvc-audit-bundle/1", "origin": str, "tree_size": N,
   "from_seq": a, "to_seq": b, "exported_at": "...Z", "filters": {...}, "filtered": bool,
   "proofs": "range" | "inclusion"}`` - events ``a..b-1`` (0-based ``seq``, half-open);
2. one or more ``{"type": "key", "vkey": "<note verifier key>"}``;
3. ``{"type": "checkpoint", "note": "<signed checkpoint note>"}`` for a tree of size ``N >= b``;
4. ``{"type": "event", "leaf_hash": "<base64>", "event": {...}}`` per event in ``seq`` order, with
   ``"proof": [base64, ...]`` (inclusion proof against the checkpoint) when ``proofs`` is ``inclusion``;
5. with ``proofs`` ``range``: ``{"type": "range_proof", "start": a, "end": b, "hashes": [base64, ...]}``;
6. ``{"type": "trailer", "event_count": k}``.

Filtered exports (a subset of ``[a, b)``) must use inclusion proofs and set ``"filtered": true``.
"""

from __future__ import annotations

import base64
import json
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from datetime import UTC, datetime
from typing import IO, Any

from .canonical import MAX_SAFE_INTEGER, canonical_json
from .merkle import leaf_hash as _leaf_hash
from .note import parse_checkpoint, parse_vkey

__all__ = [
    "FORMAT",
    "MAX_LINE_BYTES",
    "PROOFS_INCLUSION",
    "PROOFS_RANGE",
    "BundleFormatError",
    "BundleWriter",
    "decode_line",
    "iter_bundle_lines",
    "read_lines",
    "write_bundle",
]

FORMAT = "govsvc-audit-bundle/1"
PROOFS_RANGE = "range"
PROOFS_INCLUSION = "inclusion"
MAX_LINE_BYTES = 8 << 20

InclusionProofs = Callable[[int], Sequence[bytes]]
"""Callback ``inclusion_proof(seq)``: the proof of event ``seq`` against the bundle's checkpoint."""


class BundleFormatError(ValueError):
    """A bundle line is not valid JSON of the expected shape, or lines are out of order."""


def _b64(raw: bytes) -> str:
    """Encode as standard base64."""
    return base64.b64encode(raw).decode("ascii")


def _dumps(obj: Any) -> str:
    """Compact JSON for one bundle line (no trailing newline)."""
    return json.dumps(obj, ensure_ascii=False, separators=(",", ":"), allow_nan=False)


def _now() -> str:
    """Current UTC time as ISO 8601 with a ``Z`` suffix."""
    return datetime.now(UTC).isoformat(timespec="seconds").replace("+00:00", "Z")


class BundleWriter:
    """Write a bundle line by line, enforcing the line order and the header's promises.

    ``out`` is a text stream (``write`` is called with whole lines) or any
    callable taking a string. Typical use: ``header``, ``key`` (one or more),
    ``checkpoint``, ``event`` per event, ``range_proof`` (range mode), ``trailer``
    - or the one-shot ``write_bundle``.
    """

    def __init__(self, out: IO[str] | Callable[[str], Any], *, verbatim: bool = False) -> None:
        """Wrap a text stream or a ``write(str)`` callable.

        ``verbatim=True`` is for exports from storage: ``stored_event`` lines are written as stored and the
        event count is not enforced, so that whatever is in the log reaches the auditor, who judges it.
        """
        self._verbatim = verbatim
        self._write: Callable[[str], Any] = out if callable(out) else out.write
        self._state = "start"
        self._keys = 0
        self._count = 0
        self._last_seq: int | None = None
        self._origin = ""
        self._tree_size = 0
        self._from = 0
        self._to = 0
        self._proofs = PROOFS_RANGE
        self._filtered = False

    @property
    def event_count(self) -> int:
        """Number of events written so far."""
        return self._count

    def _line(self, text: str) -> None:
        """Write one line."""
        self._write(text + "\n")

    def _expect(self, *states: str) -> None:
        """Enforce the line order."""
        if self._state not in states:
            raise BundleFormatError(f"bundle line out of order (state {self._state!r})")

    def header(
        self,
        *,
        origin: str,
        tree_size: int,
        from_seq: int,
        to_seq: int,
        proofs: str = PROOFS_RANGE,
        filters: Mapping[str, Any] | None = None,
        filtered: bool = False,
        exported_at: str | None = None,
    ) -> None:
        """Write the header line."""
        self._expect("start")
        if proofs not in (PROOFS_RANGE, PROOFS_INCLUSION):
            raise BundleFormatError(f"unknown proofs mode {proofs!r}")
        if filtered and proofs != PROOFS_INCLUSION:
            raise BundleFormatError("filtered exports must use inclusion proofs")
        for v in (tree_size, from_seq, to_seq):
            if type(v) is not int or not 0 <= v <= MAX_SAFE_INTEGER:
                raise BundleFormatError("tree_size, from_seq and to_seq must be non-negative integers")
        if not from_seq <= to_seq <= tree_size:
            raise BundleFormatError("need from_seq <= to_seq <= tree_size")
        header = {
            "type": "header",
            "format": FORMAT,
            "origin": origin,
            "tree_size": tree_size,
            "from_seq": from_seq,
            "to_seq": to_seq,
            "exported_at": exported_at or _now(),
            "filters": dict(filters or {}),
            "filtered": bool(filtered),
            "proofs": proofs,
        }
        self._origin, self._tree_size, self._from, self._to = origin, tree_size, from_seq, to_seq
        self._proofs, self._filtered = proofs, bool(filtered)
        self._line(_dumps(header))
        self._state = "keys"

    def key(self, vkey: str) -> None:
        """Write a verifier key line (all published verification keys)."""
        self._expect("keys")
        parse_vkey(vkey)
        self._line(_dumps({"type": "key", "vkey": vkey}))
        self._keys += 1

    def checkpoint(self, note: str) -> None:
        """Write the signed checkpoint note; it must match the header's origin and tree size."""
        self._expect("keys")
        if not self._keys:
            raise BundleFormatError("write at least one key line before the checkpoint")
        cp = parse_checkpoint(note)
        if cp.origin != self._origin or cp.size != self._tree_size:
            raise BundleFormatError("checkpoint origin/size do not match the header")
        self._line(_dumps({"type": "checkpoint", "note": note}))
        self._state = "events"

    def event(
        self,
        event: Mapping[str, Any],
        *,
        proof: Sequence[bytes] | None = None,
        leaf_hash: bytes | None = None,
    ) -> bytes:
        """Write one event (with its inclusion proof in inclusion mode); return its leaf hash."""
        self._expect("events")
        seq = event.get("seq")
        if type(seq) is not int or not self._from <= seq < self._to:
            raise BundleFormatError(f"event seq {seq!r} is outside [{self._from}, {self._to})")
        if self._last_seq is not None and seq <= self._last_seq:
            raise BundleFormatError(f"event seq {seq} does not increase")
        expected = self._from if self._last_seq is None else self._last_seq + 1
        if not self._filtered and seq != expected:
            raise BundleFormatError(f"unfiltered export: expected seq {expected}, got {seq}")
        if "time" not in event:
            raise BundleFormatError("events need a 'time' field")
        body = canonical_json(event)
        lh = _leaf_hash(body)
        if leaf_hash is not None and leaf_hash != lh:
            raise BundleFormatError(f"leaf hash given for seq {seq} does not match the event")
        parts = ['{"type":"event","leaf_hash":"', _b64(lh), '","event":', body.decode("utf-8")]
        if self._proofs == PROOFS_INCLUSION:
            if proof is None:
                raise BundleFormatError("inclusion mode: every event needs its proof")
            parts += [',"proof":', _dumps([_b64(h) for h in proof])]
        elif proof is not None:
            raise BundleFormatError("range mode: events carry no proof")
        parts.append("}")
        self._line("".join(parts))
        self._last_seq = seq
        self._count += 1
        return lh

    def stored_event(self, event_json: str, leaf_hash: bytes, *, proof: Sequence[bytes] | None = None) -> None:
        """Write an event exactly as stored (canonical JSON text and leaf hash), unchecked (verbatim mode)."""
        self._expect("events")
        if not self._verbatim:
            raise BundleFormatError("stored_event needs a verbatim writer")
        parts = ['{"type":"event","leaf_hash":"', _b64(leaf_hash), '","event":', event_json]
        if proof is not None:
            parts += [',"proof":', _dumps([_b64(h) for h in proof])]
        parts.append("}")
        self._line("".join(parts))
        self._count += 1

    def range_proof(self, hashes: Sequence[bytes]) -> None:
        """Write the range proof for ``[from_seq, to_seq)`` (range mode only)."""
        self._expect("events")
        if self._proofs != PROOFS_RANGE:
            raise BundleFormatError("inclusion mode bundles have no range proof")
        if not self._verbatim and self._count != self._to - self._from:
            raise BundleFormatError(f"{self._count} events written, header promised {self._to - self._from}")
        encoded = [_b64(h) for h in hashes]
        self._line(_dumps({"type": "range_proof", "start": self._from, "end": self._to, "hashes": encoded}))
        self._state = "proof"

    def trailer(self) -> None:
        """Write the trailer line with the event count."""
        self._expect("events", "proof")
        if self._proofs == PROOFS_RANGE and self._state != "proof":
            raise BundleFormatError("range mode: write the range proof before the trailer")
        self._line(_dumps({"type": "trailer", "event_count": self._count}))
        self._state = "done"

    def write(self, **fields: Any) -> int:
        """Write a whole bundle; return the number of events written.

        Fields: ``origin``, ``tree_size``, ``from_seq``, ``to_seq``, ``vkeys``,
        ``checkpoint`` (note text), ``events`` (iterable of event dicts in seq
        order), ``proofs``, and optionally ``filters``, ``filtered``,
        ``exported_at``. Range mode needs ``range_proof`` (e.g.
        ``merkle.range_proof(from_seq, to_seq, tree_size, subtree_hash)``);
        inclusion mode needs ``inclusion_proof(seq)`` (e.g.
        ``merkle.inclusion_proof(seq, tree_size, subtree_hash)``).
        """
        for _ in _write_steps(self, **fields):
            pass
        return self._count


def _write_steps(
    writer: BundleWriter,
    *,
    origin: str,
    tree_size: int,
    from_seq: int,
    to_seq: int,
    vkeys: Iterable[str],
    checkpoint: str,
    events: Iterable[Mapping[str, Any]],
    proofs: str = PROOFS_RANGE,
    range_proof: Sequence[bytes] | None = None,
    inclusion_proof: InclusionProofs | None = None,
    filters: Mapping[str, Any] | None = None,
    filtered: bool = False,
    exported_at: str | None = None,
) -> Iterator[None]:
    """Drive ``writer`` through a whole bundle, pausing after each line."""
    if proofs == PROOFS_RANGE and range_proof is None:
        raise BundleFormatError("range mode needs range_proof")
    if proofs == PROOFS_INCLUSION and inclusion_proof is None:
        raise BundleFormatError("inclusion mode needs inclusion_proof")
    writer.header(
        origin=origin,
        tree_size=tree_size,
        from_seq=from_seq,
        to_seq=to_seq,
        proofs=proofs,
        filters=filters,
        filtered=filtered,
        exported_at=exported_at,
    )
    yield
    for vkey in vkeys:
        writer.key(vkey)
        yield
    writer.checkpoint(checkpoint)
    yield
    for event in events:
        proof = inclusion_proof(event["seq"]) if proofs == PROOFS_INCLUSION and inclusion_proof else None
        writer.event(event, proof=proof)
        yield
    if range_proof is not None and proofs == PROOFS_RANGE:
        writer.range_proof(range_proof)
        yield
    writer.trailer()
    yield


def write_bundle(out: IO[str] | Callable[[str], Any], **fields: Any) -> int:
    """Write a whole bundle to ``out``; fields as ``BundleWriter.write``. Returns the event count."""
    return BundleWriter(out).write(**fields)


def iter_bundle_lines(**fields: Any) -> Iterator[str]:
    """Yield a bundle line by line, consuming ``events`` lazily (for streaming responses).

    Fields as ``BundleWriter.write``; each yielded string is one line ending in a newline.
    """
    pending: list[str] = []
    for _ in _write_steps(BundleWriter(pending.append), **fields):
        yield from pending
        pending.clear()


# ----------------------------------------------------------------------------- reading


def _reject_float(text: str) -> Any:
    """JSON decoder hook: floats are not allowed."""
    raise BundleFormatError(f"number {text} is not an integer (floats are not allowed)")


def _reject_constant(text: str) -> Any:
    """JSON decoder hook: NaN and Infinity are not JSON."""
    raise BundleFormatError(f"{text} is not valid JSON")


def _safe_int(text: str) -> int:
    """JSON decoder hook: integers must be within the I-JSON safe range."""
    value = int(text)
    if not -MAX_SAFE_INTEGER <= value <= MAX_SAFE_INTEGER:
        raise BundleFormatError(f"integer {text} is outside the I-JSON safe range")
    return value


def _no_duplicates(pairs: list[tuple[str, Any]]) -> dict[str, Any]:
    """JSON decoder hook: reject duplicate object keys."""
    obj = dict(pairs)
    if len(obj) != len(pairs):
        raise BundleFormatError("duplicate key in a JSON object")
    return obj


_DECODER = json.JSONDecoder(
    parse_float=_reject_float,
    parse_constant=_reject_constant,
    parse_int=_safe_int,
    object_pairs_hook=_no_duplicates,
)


def decode_line(raw: bytes) -> dict[str, Any]:
    """Strictly decode one bundle line into a JSON object.

    Rejects invalid UTF-8, non-objects, floats, NaN/Infinity, integers beyond
    2**53 - 1 and duplicate keys, raising ``BundleFormatError``.
    """
    try:
        text = raw.decode("utf-8")
        obj = _DECODER.decode(text)
    except BundleFormatError:
        raise
    except (UnicodeDecodeError, ValueError, RecursionError) as exc:
        raise BundleFormatError(f"not valid JSON: {exc}") from None
    if type(obj) is not dict:
        raise BundleFormatError("line is not a JSON object")
    return obj


def read_lines(stream: IO[bytes], max_line: int = MAX_LINE_BYTES) -> Iterator[tuple[int, bytes | None]]:
    """Yield ``(line number, line without its newline)`` from a binary stream.

    A line longer than ``max_line`` bytes is skipped and yielded as ``None``,
    so memory stays bounded whatever the input.
    """
    number = 0
    readline = stream.readline
    while True:
        line = readline(max_line + 1)
        if not line:
            return
        number += 1
        if len(line) > max_line and not line.endswith(b"\n"):
            while line and not line.endswith(b"\n"):
                line = readline(max_line + 1)
            yield number, None
            continue
        yield number, line[:-1] if line.endswith(b"\n") else line
