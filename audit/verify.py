"""Verify a govsvc audit export bundle: ``python -m audit.verify BUNDLE [--pubkey VKEY]... [--json]``.

The bundle is read as a stream (memory does not grow with the number of
events). The checks: the checkpoint's signature against the trusted keys, each
event's leaf hash, the sequence numbers, the range proof or every inclusion
proof against the checkpoint root, and the header and trailer promises.

Every problem is a finding of one kind, with the first bad sequence number:

``modified``       an event's content changed (leaf hash or inclusion proof fails at its place)
``deleted``        seqs missing from the middle of the exported range
``inserted``       an extra event: a duplicate seq, or a seq outside the exported range
``reordered``      events present but out of order
``truncated``      events missing at the end, and/or the trailer missing
``bad_signature``  the checkpoint is not validly signed by a trusted key
``bad_checkpoint`` the checkpoint is missing, malformed or does not match the header
``root_mismatch``  the recomputed root differs but no single event can be blamed
``malformed``      a line is not valid JSON or not of the expected shape

Exit status: 0 verified, 1 findings, 2 usage error or unreadable file.
"""

from __future__ import annotations

import argparse
import base64
import binascii
import bisect
import hashlib
import io
import json
import sys
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from typing import IO, Any

from .bundle import FORMAT, PROOFS_INCLUSION, PROOFS_RANGE, BundleFormatError, decode_line, read_lines
from .canonical import canonical_json
from .merkle import HASH_SIZE, CompactRange, ProofError, verify_inclusion
from .note import (
    NoteError,
    NoteFormatError,
    NoteSignatureError,
    Verifier,
    parse_checkpoint,
    parse_vkey,
    verify_note,
)

__all__ = ["KINDS", "Finding", "Report", "main", "verify_bundle", "verify_bundle_file"]

KINDS = (
    "modified",
    "deleted",
    "inserted",
    "reordered",
    "truncated",
    "bad_signature",
    "bad_checkpoint",
    "root_mismatch",
    "malformed",
)
_EVENT_KINDS = frozenset({"modified", "deleted", "inserted", "reordered", "truncated"})
MAX_FINDINGS = 1000
_MAX_PROOF_HASHES = 130

_HEADER_KEYS = {
    "type",
    "format",
    "origin",
    "tree_size",
    "from_seq",
    "to_seq",
    "exported_at",
    "filters",
    "proofs",
}
_HEADER_OPTIONAL = {"filtered"}
_ENCODER = json.JSONEncoder(
    sort_keys=True, separators=(",", ":"), ensure_ascii=False, allow_nan=False, check_circular=False
)
_sha256 = hashlib.sha256
_b64encode = base64.b64encode


@dataclass
class Finding:
    """One verification failure; ``seq`` is the first bad sequence number, when there is one."""

    kind: str
    message: str
    seq: int | None = None
    line: int | None = None
    count: int = 1

    def to_dict(self) -> dict[str, Any]:
        """JSON form."""
        return {
            "kind": self.kind,
            "seq": self.seq,
            "line": self.line,
            "count": self.count,
            "message": self.message,
        }


@dataclass
class Report:
    """The outcome of verifying one bundle."""

    source: str
    findings: list[Finding] = field(default_factory=list)
    warnings: list[str] = field(default_factory=list)
    findings_omitted: int = 0
    origin: str | None = None
    tree_size: int | None = None
    root: bytes | None = None
    from_seq: int | None = None
    to_seq: int | None = None
    proofs: str | None = None
    filtered: bool = False
    event_count: int = 0
    signed_by: tuple[str, ...] = ()
    key_trusted: bool = False
    bundle_keys: list[str] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        """True when there are no findings."""
        return not self.findings and not self.findings_omitted

    @property
    def first_bad_seq(self) -> int | None:
        """The smallest sequence number named by a finding."""
        seqs = [f.seq for f in self.findings if f.seq is not None]
        return min(seqs) if seqs else None

    def sorted_findings(self) -> list[Finding]:
        """Findings without a seq (file-level) first, then by seq, then by line."""
        return sorted(self.findings, key=lambda f: (f.seq is not None, f.seq or 0, f.line or 0))

    def to_dict(self) -> dict[str, Any]:
        """Machine-readable report."""
        return {
            "ok": self.ok,
            "source": self.source,
            "format": FORMAT,
            "origin": self.origin,
            "tree_size": self.tree_size,
            "root": base64.b64encode(self.root).decode("ascii") if self.root is not None else None,
            "from_seq": self.from_seq,
            "to_seq": self.to_seq,
            "proofs": self.proofs,
            "filtered": self.filtered,
            "event_count": self.event_count,
            "signed_by": list(self.signed_by),
            "key_trusted": self.key_trusted,
            "bundle_keys": self.bundle_keys,
            "first_bad_seq": self.first_bad_seq,
            "findings": [f.to_dict() for f in self.sorted_findings()],
            "findings_omitted": self.findings_omitted,
            "warnings": self.warnings,
        }

    def summary(self) -> str:
        """Human-readable report."""
        out = []
        if self.ok:
            out.append(f"OK: audit bundle verified ({self.source})")
        else:
            out.append(f"FAILED: audit bundle did not verify ({self.source})")
        if self.origin is not None:
            out.append(f"  log origin:  {self.origin}")
        if self.tree_size is not None and self.root is not None:
            root = base64.b64encode(self.root).decode("ascii")
            out.append(f"  checkpoint:  tree size {self.tree_size}, root {root}")
        if self.signed_by:
            how = "key from the bundle, NOT trusted"
            if self.key_trusted:
                how = "trusted key given with --pubkey"
            out.append(f"  signed by:   {', '.join(self.signed_by)} ({how})")
        if self.from_seq is not None and self.to_seq is not None:
            mode = f"{self.proofs} proofs" + (", filtered export" if self.filtered else "")
            span = f"[{self.from_seq}, {self.to_seq})"
            out.append(f"  events:      {self.event_count} in seq range {span} ({mode})")
        if not self.ok:
            first = self.first_bad_seq
            out.append(f"  first bad seq: {first if first is not None else '-'}")
            out.append(f"  findings ({len(self.findings) + self.findings_omitted}):")
            for f in self.sorted_findings():
                where = []
                if f.seq is not None:
                    where.append(f"seq {f.seq}" if f.count == 1 else f"seq {f.seq}..{f.seq + f.count - 1}")
                if f.line is not None:
                    where.append(f"line {f.line}")
                place = f" [{', '.join(where)}]" if where else ""
                out.append(f"    {f.kind}{place}: {f.message}")
            if self.findings_omitted:
                out.append(f"    ... and {self.findings_omitted} more findings not listed")
        for w in self.warnings:
            out.append(f"WARNING: {w}")
        return "\n".join(out)


def _decode_hash(value: Any) -> bytes | None:
    """Decode a base64 32-byte hash, or return None."""
    if type(value) is not str or len(value) != 44:
        return None
    try:
        raw = base64.b64decode(value, validate=True)
    except (binascii.Error, ValueError):
        return None
    return raw if len(raw) == HASH_SIZE and base64.b64encode(raw).decode("ascii") == value else None


def _decode_hashes(value: Any, limit: int) -> list[bytes] | None:
    """Decode a list of base64 hashes, or return None."""
    if type(value) is not list or len(value) > limit:
        return None
    out = []
    for item in value:
        h = _decode_hash(item)
        if h is None:
            return None
        out.append(h)
    return out


def _lenient_event_seq(raw: bytes) -> int | None:
    """The seq of an event line that failed strict decoding, if plain JSON parsing can find it."""
    try:
        obj = json.loads(raw)
    except (ValueError, RecursionError):
        return None
    ev = obj.get("event") if type(obj) is dict and obj.get("type") == "event" else None
    seq = ev.get("seq") if type(ev) is dict else None
    return seq if type(seq) is int and seq >= 0 else None


class _Verifier:
    """Streaming bundle checker: ``line()`` for each line, then ``finish()``."""

    def __init__(self, report: Report, trusted: Sequence[Verifier]) -> None:
        """Start checking into ``report`` with the auditor's trusted keys."""
        self.report = report
        self.trusted = list(trusted)
        self.section = "header"
        self.fatal = False
        self.bundle_keys: list[Verifier] = []
        self.checkpoint_seen = False
        self.root: bytes | None = None  # trusted root, usable for proofs
        self.size = 0
        self.from_seq = 0
        self.to_seq = 0
        self.inclusion = False
        self.filtered = False
        self.next_seq = 0  # unfiltered: the next seq expected in order
        self.last_seq: int | None = None  # filtered: the last seq seen
        self.missing: list[list[int]] = []  # unfiltered: skipped [lo, hi) intervals, ascending
        self.event_lines = 0
        self.event_findings = 0
        self.compact: CompactRange | None = None
        self.range_hashes: list[bytes] | None = None
        self.trailer_count: int | None = None
        self.after_trailer_reported = False

    # ------------------------------------------------------------------ findings

    def add(
        self,
        kind: str,
        message: str,
        seq: int | None = None,
        line: int | None = None,
        count: int = 1,
    ) -> None:
        """Record a finding, merging runs of consecutive seqs of the same kind."""
        report = self.report
        if kind in _EVENT_KINDS:
            self.event_findings += 1
        if report.findings and seq is not None:
            last = report.findings[-1]
            if last.kind == kind and last.seq is not None and last.seq + last.count == seq:
                last.count += count
                return
        if len(report.findings) >= MAX_FINDINGS:
            report.findings_omitted += 1
            return
        report.findings.append(Finding(kind, message, seq, line, count))

    # --------------------------------------------------------------------- lines

    def line(self, number: int, raw: bytes | None) -> None:
        """Check one line of the bundle."""
        if self.fatal:
            return
        if self.section == "done":
            if not self.after_trailer_reported:
                self.add("malformed", "content after the trailer line", line=number)
                self.after_trailer_reported = True
            return
        if raw is None:
            self.add("malformed", "line is too long", line=number)
            self.fatal = self.section == "header"
            return
        try:
            obj = decode_line(raw)
        except BundleFormatError as exc:
            seq = _lenient_event_seq(raw) if self.section == "events" else None
            if seq is None:
                self.add("malformed", f"line is not a valid JSON object: {exc}", line=number)
                self.fatal = self.section == "header"
            else:  # an event line with, say, a float in it: keep its place in the sequence
                self.event_lines += 1
                self._bad_event(f"event line is not strict JSON: {exc}", seq, number)
            return
        kind = obj.get("type")
        if self.section == "header":
            self.header(number, obj)
        elif kind == "event":
            if self.section == "keys":
                self._no_checkpoint(number)
            if self.section == "events":
                self.event(number, obj, raw.isascii())
            else:
                self.add("malformed", "event line after the range_proof line", line=number)
        elif kind == "key":
            self.key(number, obj)
        elif kind == "checkpoint":
            self.checkpoint(number, obj)
        elif kind == "range_proof":
            self.range_proof(number, obj)
        elif kind == "trailer":
            self.trailer(number, obj)
        else:
            self.add("malformed", f"unknown line type {kind!r}", line=number)

    def header(self, number: int, obj: dict[str, Any]) -> None:
        """Check the header line; a bad header stops verification."""
        self.fatal = True
        if obj.get("type") != "header":
            self.add("malformed", "the first line is not a header", line=number)
            return
        keys = set(obj)
        if not _HEADER_KEYS <= keys <= _HEADER_KEYS | _HEADER_OPTIONAL:
            self.add("malformed", f"header fields are wrong: {sorted(keys ^ _HEADER_KEYS)}", line=number)
            return
        if obj["format"] != FORMAT:
            self.add("malformed", f"unsupported bundle format {obj['format']!r}", line=number)
            return
        origin, size, lo, hi = obj["origin"], obj["tree_size"], obj["from_seq"], obj["to_seq"]
        ints_ok = all(type(v) is int and v >= 0 for v in (size, lo, hi))
        if type(origin) is not str or not origin or not ints_ok or not lo <= hi <= size:
            self.add("malformed", "header origin/tree_size/from_seq/to_seq are invalid", line=number)
            return
        filtered = obj.get("filtered", False)
        proofs = obj["proofs"]
        types_ok = type(obj["exported_at"]) is str and type(obj["filters"]) is dict
        if not types_ok or type(filtered) is not bool:
            self.add("malformed", "header exported_at/filters/filtered are invalid", line=number)
            return
        if proofs not in (PROOFS_RANGE, PROOFS_INCLUSION) or (filtered and proofs != PROOFS_INCLUSION):
            self.add("malformed", f"header proofs {proofs!r} is invalid (filtered exports need 'inclusion')")
            return
        self.fatal = False
        r = self.report
        r.origin, r.tree_size, r.from_seq, r.to_seq = origin, size, lo, hi
        r.proofs, r.filtered = proofs, filtered
        self.size, self.from_seq, self.to_seq = size, lo, hi
        self.inclusion, self.filtered = proofs == PROOFS_INCLUSION, filtered
        self.next_seq = lo
        if not self.inclusion:
            self.compact = CompactRange(lo)
        self.section = "keys"

    def key(self, number: int, obj: dict[str, Any]) -> None:
        """Collect a published verifier key."""
        if self.section != "keys":
            self.add("malformed", "key line out of place", line=number)
            return
        vkey = obj.get("vkey")
        if set(obj) != {"type", "vkey"} or type(vkey) is not str:
            self.add("malformed", "key line must be {type, vkey}", line=number)
            return
        try:
            verifier = parse_vkey(vkey)
        except NoteError as exc:
            self.add("malformed", f"key line holds an invalid verifier key: {exc}", line=number)
            return
        if verifier not in self.bundle_keys:
            self.bundle_keys.append(verifier)
            self.report.bundle_keys.append(verifier.vkey)

    def _no_checkpoint(self, number: int) -> None:
        """The keys section ended without a checkpoint."""
        self.add("bad_checkpoint", "the bundle has no checkpoint line", line=number)
        self.section = "events"

    def checkpoint(self, number: int, obj: dict[str, Any]) -> None:
        """Check the checkpoint's signature and that it matches the header."""
        if self.section != "keys":
            self.add("malformed", "checkpoint line out of place", line=number)
            return
        self.section = "events"
        self.checkpoint_seen = True
        note = obj.get("note")
        if set(obj) != {"type", "note"} or type(note) is not str:
            self.add("malformed", "checkpoint line must be {type, note}", line=number)
            return
        if not self.bundle_keys:
            self.add("malformed", "the bundle has no key lines", line=number)
        try:
            claimed = parse_checkpoint(note)
        except NoteFormatError as exc:
            self.add("bad_checkpoint", f"checkpoint note is malformed: {exc}", line=number)
            return
        r = self.report
        r.tree_size, r.root = claimed.size, claimed.root
        keys = self.trusted or self.bundle_keys
        if not keys:
            self.add("bad_signature", "no verifier key to check the checkpoint signature", line=number)
            return
        try:
            cp = verify_note(note, keys)
        except NoteSignatureError as exc:
            self.add("bad_signature", f"checkpoint signature: {exc}", line=number)
            return
        except NoteError as exc:
            self.add("bad_checkpoint", f"checkpoint: {exc}", line=number)
            return
        r.signed_by, r.key_trusted = cp.verified_by, bool(self.trusted)
        problems = []
        if cp.origin != r.origin:
            problems.append(f"origin {cp.origin!r} differs from the header's {r.origin!r}")
        if cp.size != self.size:
            problems.append(f"tree size {cp.size} differs from the header's {self.size}")
        if cp.size < self.to_seq:
            problems.append(f"tree size {cp.size} does not cover to_seq {self.to_seq}")
        if problems:
            self.add("bad_checkpoint", "checkpoint " + "; ".join(problems), line=number)
            return
        self.root = cp.root

    def _order(self, seq: int, number: int) -> None:
        """Track sequence numbers and report gaps, duplicates and disorder."""
        if not self.from_seq <= seq < self.to_seq:
            self.add("inserted", f"seq {seq} is outside the exported range", seq, number)
            return
        if self.filtered:
            last = self.last_seq
            if last is not None and seq == last:
                self.add("inserted", f"seq {seq} appears twice", seq, number)
            elif last is not None and seq < last:
                self.add("reordered", f"seq {seq} appears after seq {last}", seq, number)
            else:
                self.last_seq = seq
            return
        nxt = self.next_seq
        if seq == nxt:
            self.next_seq = nxt + 1
        elif seq > nxt:
            self.missing.append([nxt, seq])
            self.next_seq = seq + 1
        elif not self._take_missing(seq):
            self.add("inserted", f"seq {seq} appears again (duplicate)", seq, number)
        else:
            self.add("reordered", f"seq {seq} appears after seq {nxt - 1}", seq, number)

    def _take_missing(self, seq: int) -> bool:
        """Remove ``seq`` from the skipped intervals; return whether it was there."""
        missing = self.missing
        i = bisect.bisect_right(missing, [seq, float("inf")]) - 1
        if i < 0 or not missing[i][0] <= seq < missing[i][1]:
            return False
        lo, hi = missing[i]
        parts = [p for p in ([lo, seq], [seq + 1, hi]) if p[0] < p[1]]
        missing[i : i + 1] = parts
        return True

    def event(self, number: int, obj: dict[str, Any], ascii_line: bool) -> None:
        """Check one event line (``ascii_line``: the raw line is pure ASCII)."""
        self.event_lines += 1
        ev = obj.get("event")
        claimed = obj.get("leaf_hash")
        proof_b64 = obj.get("proof")
        expected_len = 4 if self.inclusion else 3
        seq = ev.get("seq") if type(ev) is dict else None
        if type(seq) is not int or seq < 0:
            self.add("malformed", "event line has no event object with an integer seq", line=number)
            return
        if len(obj) != expected_len or type(claimed) is not str or (self.inclusion and proof_b64 is None):
            keys = "type, leaf_hash, event" + (", proof" if self.inclusion else "")
            self._bad_event(f"event line must have exactly: {keys}", seq, number)
            return
        try:
            # decode_line already rejected floats, NaN and unsafe integers; keys of an ASCII line
            # cannot hold characters beyond U+FFFF, so only other lines need the full check.
            body = _ENCODER.encode(ev).encode("utf-8") if ascii_line else canonical_json(ev)
        except ValueError as exc:
            self._bad_event(f"event cannot be canonically encoded: {exc}", seq, number)
            return
        computed = _sha256(b"\x00" + body).digest()
        problem = None
        if _b64encode(computed).decode("ascii") != claimed:
            problem = "its leaf hash does not match its content"
        elif self.inclusion and self.root is not None and self.from_seq <= seq < self.to_seq:
            proof = _decode_hashes(proof_b64, _MAX_PROOF_HASHES)
            if proof is None:
                self._bad_event("event proof must be a list of base64 SHA-256 hashes", seq, number)
                return
            try:
                verify_inclusion(computed, seq, self.size, proof, self.root)
            except ProofError as exc:
                problem = f"its inclusion proof does not verify against the checkpoint ({exc})"
        if problem is not None:
            self._modified(seq, number, problem)
            return
        if "time" not in ev:
            self.add("malformed", "event has no 'time' field", seq, number)
        self._order(seq, number)
        if self.compact is not None and not self.event_findings:
            self.compact.append(computed)

    def _bad_event(self, message: str, seq: int, number: int) -> None:
        """Report an event line of the wrong shape; its seq still counts as present."""
        self.add("malformed", message, seq, number)
        self.event_findings += 1  # its leaf is unknown: the range root cannot be recomputed
        self._order(seq, number)

    def _modified(self, seq: int, number: int, problem: str) -> None:
        """Report an event that fails authentication, blaming the place it occupies."""
        if self.filtered:
            self.add("modified", f"event seq {seq}: {problem}", seq, number)
            self.last_seq = max(seq, self.last_seq or 0)
            return
        nxt = self.next_seq
        if seq == nxt or (seq > nxt and nxt < self.to_seq):
            note = "" if seq == nxt else f" (it claims seq {seq})"
            self.add("modified", f"event at the place of seq {nxt}{note}: {problem}", nxt, number)
            self.next_seq = nxt + 1
        else:
            self.add("inserted", f"unauthentic extra event claiming seq {seq}: {problem}", seq, number)

    def range_proof(self, number: int, obj: dict[str, Any]) -> None:
        """Collect the range proof (range mode)."""
        if self.section != "events" or self.inclusion:
            self.add("malformed", "range_proof line out of place", line=number)
            return
        self.section = "proof"
        hashes = _decode_hashes(obj.get("hashes"), _MAX_PROOF_HASHES)
        if set(obj) != {"type", "start", "end", "hashes"} or hashes is None:
            msg = "range_proof line must be {type, start, end, hashes: [base64]}"
            self.add("malformed", msg, line=number)
            return
        if obj["start"] != self.from_seq or obj["end"] != self.to_seq:
            msg = "range_proof start/end differ from the header's from_seq/to_seq"
            self.add("malformed", msg, line=number)
            return
        self.range_hashes = hashes

    def trailer(self, number: int, obj: dict[str, Any]) -> None:
        """Read the trailer."""
        if self.section not in ("events", "proof"):
            self.add("malformed", "trailer line out of place", line=number)
            return
        if self.section == "events" and not self.inclusion:
            self.add("malformed", "range-proof bundle has no range_proof line", line=number)
        self.section = "done"
        count = obj.get("event_count")
        if set(obj) != {"type", "event_count"} or type(count) is not int or count < 0:
            self.add("malformed", "trailer line must be {type, event_count}", line=number)
            return
        self.trailer_count = count

    # ---------------------------------------------------------------------- end

    def finish(self) -> None:
        """Report what can only be known at the end of the file."""
        r = self.report
        r.event_count = self.event_lines
        if self.fatal:
            return
        if self.section == "header":
            self.add("malformed", "the bundle is empty")
            return
        if self.section == "keys":
            self.add("bad_checkpoint", "the bundle has no checkpoint line")
        trailer_missing = self.section != "done"
        if not self.filtered:
            for lo, hi in self.missing:
                what = f"seq {lo} is missing" if hi - lo == 1 else f"seqs {lo} to {hi - 1} are missing"
                self.add("deleted", what, lo, count=hi - lo)
            if self.next_seq < self.to_seq:
                tail = self.to_seq - self.next_seq
                extra = " and the trailer is missing" if trailer_missing else ""
                msg = f"the last {tail} event(s) of the range are missing{extra}"
                self.add("truncated", msg, self.next_seq, count=tail)
            elif trailer_missing:
                self.add("truncated", "the bundle ends without its trailer line")
        elif trailer_missing:
            self.add("truncated", "the bundle ends without its trailer line (filtered export)")
        count_wrong = self.trailer_count is not None and self.trailer_count != self.event_lines
        if count_wrong and not self.event_findings:
            msg = f"trailer announces {self.trailer_count} events, the bundle has {self.event_lines}"
            if not self.filtered:
                self.add("malformed", msg)
            elif self.trailer_count > self.event_lines:
                self.add("deleted", msg + " (filtered export: the missing ones cannot be located)")
            else:
                self.add("inserted", msg)
        self._check_root()
        self._warn()

    def _check_root(self) -> None:
        """Range mode: recompute the root from the events and the range proof."""
        if self.inclusion or self.compact is None:
            return
        if self.root is None:
            self.report.warnings.append("the range proof was not checked: there is no trusted checkpoint")
            return
        if self.event_findings:
            self.report.warnings.append(
                "the root was not recomputed because events are missing, extra, out of order or modified, "
                "so an event rewritten together with its leaf_hash would go unnoticed in this bundle"
            )
            return
        if self.range_hashes is None:
            return
        try:
            root = self.compact.root_with_proof(self.size, self.range_hashes)
        except ProofError as exc:
            self.add("root_mismatch", f"the range proof does not fit the tree: {exc}")
            return
        if root != self.root:
            self.add(
                "root_mismatch",
                "the root recomputed from the exported events and the range proof differs from the signed "
                "checkpoint root. Every event matches its leaf_hash, so an event was rewritten together "
                "with its leaf_hash (or the range proof was altered); a range-proof bundle cannot tell "
                "which event: export the range again with inclusion proofs to locate it",
            )

    def _warn(self) -> None:
        """Add warnings about what the verification did not establish."""
        r = self.report
        if not self.trusted and r.signed_by:
            r.warnings.append(
                "no --pubkey given: the checkpoint signature was checked against the key(s) listed in the "
                "bundle itself, which were NOT independently trusted; anyone able to edit the bundle could "
                "have re-signed it. Pass the log's verifier key, obtained out of band, with --pubkey."
            )
        if self.filtered:
            r.warnings.append(
                "filtered export: gaps between seqs are expected, so events left out of the selection "
                "cannot be detected; each exported event is proven to be in the log"
            )


def verify_bundle(
    stream: IO[bytes],
    trusted_vkeys: Iterable[str | Verifier] = (),
    source: str = "-",
) -> Report:
    """Verify a bundle read from a binary stream; ``trusted_vkeys`` are the auditor's keys."""
    trusted = [k if isinstance(k, Verifier) else parse_vkey(k) for k in trusted_vkeys]
    report = Report(source)
    checker = _Verifier(report, trusted)
    for number, raw in read_lines(stream):
        checker.line(number, raw)
    checker.finish()
    return report


def verify_bundle_file(path: str, trusted_vkeys: Iterable[str | Verifier] = ()) -> Report:
    """Verify the bundle at ``path`` (``-`` for standard input)."""
    if path == "-":
        return verify_bundle(sys.stdin.buffer, trusted_vkeys, "<stdin>")
    with open(path, "rb") as stream:
        return verify_bundle(stream, trusted_vkeys, path)


def _read_key_file(path: str) -> list[str]:
    """Read verifier keys, one per line; blank lines and ``#`` comments are ignored."""
    with open(path, encoding="utf-8") as fh:
        return [s for s in (line.strip() for line in fh) if s and not s.startswith("#")]


def main(argv: Sequence[str] | None = None) -> int:
    """Command line entry point."""
    parser = argparse.ArgumentParser(
        prog="python -m audit.verify",
        description="Verify a govsvc audit export bundle (JSONL) against a signed checkpoint.",
    )
    parser.add_argument("bundle", help="bundle file, or - for standard input")
    parser.add_argument(
        "--pubkey",
        action="append",
        default=[],
        metavar="VKEY",
        help="trusted log verifier key <name>+<hex id>+<base64 key>, obtained out of band (repeatable)",
    )
    parser.add_argument(
        "--pubkey-file",
        action="append",
        default=[],
        metavar="FILE",
        help="file of verifier keys, one per line",
    )
    parser.add_argument("--json", action="store_true", help="print a machine-readable JSON report")
    args = parser.parse_args(argv)
    if isinstance(sys.stdout, io.TextIOWrapper):  # never fail on printing an odd origin or key name
        sys.stdout.reconfigure(errors="backslashreplace")
    try:
        vkeys = list(args.pubkey)
        for path in args.pubkey_file:
            vkeys += _read_key_file(path)
        trusted = [parse_vkey(k) for k in vkeys]
    except (OSError, UnicodeDecodeError) as exc:
        print(f"error: cannot read key file: {exc}", file=sys.stderr)
        return 2
    except NoteError as exc:
        print(f"error: invalid verifier key: {exc}", file=sys.stderr)
        return 2
    try:
        report = verify_bundle_file(args.bundle, trusted)
    except OSError as exc:
        print(f"error: cannot read bundle: {exc}", file=sys.stderr)
        return 2
    if args.json:
        print(json.dumps(report.to_dict(), indent=2))
    else:
        print(report.summary())
    return 0 if report.ok else 1


if __name__ == "__main__":
    sys.exit(main())
