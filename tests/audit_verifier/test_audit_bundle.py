"""BundleWriter and in-process verifier tests (format details and less common tampering)."""

from __future__ import annotations

import io
import json

import pytest

from audit import bundle, merkle, note, verify
from audit.bundle import BundleFormatError, BundleWriter


def _verify(case, lines, trusted=True):
    data = "".join(line + "\n" for line in lines).encode("utf-8")
    return verify.verify_bundle(io.BytesIO(data), [case.vkey] if trusted else [])


def _kinds(report):
    return [(f.kind, f.seq) for f in report.sorted_findings()]


def test_writer_line_order_and_shapes(make_bundle):
    case = make_bundle("range")
    types = [json.loads(line)["type"] for line in case.lines]
    assert types == ["header", "key", "checkpoint", *["event"] * 50, "range_proof", "trailer"]
    header = case.line_obj(0)
    order = "type format origin tree_size from_seq to_seq exported_at filters filtered proofs"
    assert list(header) == order.split()
    assert header["format"] == bundle.FORMAT and header["proofs"] == "range" and header["filtered"] is False
    event_line = case.line_obj(3)
    assert set(event_line) == {"type", "leaf_hash", "event"} and event_line["event"]["seq"] == 10
    assert case.line_obj(-1) == {"type": "trailer", "event_count": 50}
    assert case.line_obj(-2)["start"] == 10 and case.line_obj(-2)["end"] == 60
    inclusion = make_bundle("inclusion")
    assert "proof" in inclusion.line_obj(3)
    assert "range_proof" not in {json.loads(x)["type"] for x in inclusion.lines}


def test_iter_bundle_lines_matches_write_bundle(make_bundle, signer):
    skey, vkey = signer
    events = [{"seq": i, "time": "2025-01-01T00:00:00Z", "actor": f"psn_{i}"} for i in range(9)]
    tree = merkle.MemoryTree(merkle.event_leaf_hash(e) for e in events)
    fields = dict(
        origin="o.example/log",
        tree_size=9,
        from_seq=2,
        to_seq=7,
        vkeys=[vkey],
        checkpoint=note.sign_checkpoint("o.example/log", 9, tree.root(), skey),
        proofs="range",
        range_proof=tree.range_proof(2, 7),
        exported_at="2025-01-01T00:00:00Z",
    )
    out = io.StringIO()
    assert bundle.write_bundle(out, events=events[2:7], **fields) == 5
    lines = list(bundle.iter_bundle_lines(events=iter(events[2:7]), **fields))
    assert "".join(lines) == out.getvalue()
    report = verify.verify_bundle(io.BytesIO(out.getvalue().encode()), [vkey])
    assert report.ok, report.summary()


def test_writer_rejects_misuse(signer):
    skey, vkey = signer
    w = BundleWriter(io.StringIO())
    with pytest.raises(BundleFormatError):
        w.key(vkey)  # before the header
    with pytest.raises(BundleFormatError):
        w2 = BundleWriter(io.StringIO())
        w2.header(origin="o", tree_size=5, from_seq=0, to_seq=5, proofs="range", filtered=True)
    with pytest.raises(BundleFormatError):
        BundleWriter(io.StringIO()).header(origin="o", tree_size=5, from_seq=3, to_seq=6)
    w.header(origin="o", tree_size=3, from_seq=0, to_seq=3)
    with pytest.raises(BundleFormatError):
        w.checkpoint("x")  # no key yet
    w.key(vkey)
    root = merkle.MemoryTree([merkle.event_leaf_hash({"seq": i, "time": "t"}) for i in range(3)]).root()
    with pytest.raises(BundleFormatError):
        w.checkpoint(note.sign_checkpoint("other", 3, root, skey))
    w.checkpoint(note.sign_checkpoint("o", 3, root, skey))
    with pytest.raises(BundleFormatError):
        w.event({"seq": 1, "time": "t"})  # must start at from_seq
    w.event({"seq": 0, "time": "t"})
    with pytest.raises(BundleFormatError):
        w.event({"seq": 1})  # no time
    with pytest.raises(ValueError):
        w.event({"seq": 1, "time": "t", "x": 1.5})  # floats are not canonical
    with pytest.raises(BundleFormatError):
        w.event({"seq": 1, "time": "t"}, proof=[])  # range mode carries no per-event proof
    with pytest.raises(BundleFormatError):
        w.range_proof([])  # events missing
    with pytest.raises(BundleFormatError):
        w.trailer()  # range proof missing


def test_trailer_count_mismatch(make_bundle):
    case = make_bundle("range")
    lines = list(case.lines)
    lines[-1] = '{"type":"trailer","event_count":49}'
    assert _kinds(_verify(case, lines)) == [("malformed", None)]


def test_content_after_trailer(make_bundle):
    case = make_bundle("range")
    report = _verify(case, [*case.lines, case.lines[5]])
    assert _kinds(report) == [("malformed", None)]
    assert report.findings[0].line == len(case.lines) + 1


def test_missing_checkpoint(make_bundle):
    case = make_bundle("range")
    report = _verify(case, case.lines[:2] + case.lines[3:])
    assert [f.kind for f in report.sorted_findings()] == ["bad_checkpoint"]
    assert any("no trusted checkpoint" in w for w in report.warnings)


def test_bad_header_stops_everything(make_bundle):
    case = make_bundle("range")
    for header in ('{"type":"header"}', "[]", case.lines[1], case.lines[0].replace("bundle/1", "bundle/9")):
        report = _verify(case, [header, *case.lines[1:]])
        assert _kinds(report) == [("malformed", None)], header
        assert report.findings[0].line == 1
    assert _kinds(verify.verify_bundle(io.BytesIO(b""))) == [("malformed", None)]


def test_range_proof_tampering(make_bundle):
    case = make_bundle("range")
    lines = list(case.lines)
    proof = case.line_obj(-2)
    proof["hashes"] = proof["hashes"][:-1]
    lines[-2] = json.dumps(proof)
    assert _kinds(_verify(case, lines)) == [("root_mismatch", None)]
    proof["start"] = 11
    lines[-2] = json.dumps(proof)
    assert ("malformed", None) in _kinds(_verify(case, lines))
    assert _kinds(_verify(case, case.lines[:-2] + case.lines[-1:])) == [("malformed", None)]


def test_duplicate_json_keys_are_malformed(make_bundle):
    case = make_bundle("range")
    lines = list(case.lines)
    i = case.index_of(20)
    lines[i] = lines[i][:-1] + ',"type":"event"}'
    report = _verify(case, lines)
    assert report.sorted_findings()[0].kind == "malformed"


def test_event_moved_earlier_is_reordered(make_bundle):
    case = make_bundle("range")
    lines = list(case.lines)
    moved = lines.pop(case.index_of(25))
    lines.insert(case.index_of(20), moved)
    report = _verify(case, lines)
    assert [(f.kind, f.seq, f.count) for f in report.sorted_findings()] == [("reordered", 20, 5)]


def test_many_findings_are_capped(make_bundle):
    case = make_bundle("range", log_size=2100, from_seq=0, to_seq=2100)
    lines = list(case.lines)
    for seq in range(0, 2100, 2):
        i = case.index_of(seq)
        lines[i] = lines[i].replace('"purpose":"analytics"', '"purpose":"marketing"')
    report = _verify(case, lines)
    assert len(report.findings) == verify.MAX_FINDINGS and report.findings_omitted == 50
    assert report.first_bad_seq == 0 and not report.ok


def test_report_json_and_summary(make_bundle):
    case = make_bundle("inclusion")
    report = _verify(case, case.lines, trusted=False)
    data = report.to_dict()
    assert data["ok"] and data["key_trusted"] is False and data["bundle_keys"] == [case.vkey]
    assert data["root"] and data["origin"] == "example.org/govsvc-audit"
    assert "NOT trusted" in report.summary()


@pytest.mark.parametrize("proofs", ["range", "inclusion"])
@pytest.mark.parametrize(("log_size", "at"), [(0, 0), (5, 0), (5, 3), (5, 5)])
def test_empty_exports_verify(make_bundle, proofs, log_size, at):
    case = make_bundle(proofs, log_size=log_size, from_seq=at, to_seq=at)
    report = _verify(case, case.lines)
    assert report.ok, report.summary()
    assert report.event_count == 0 and report.tree_size == log_size
