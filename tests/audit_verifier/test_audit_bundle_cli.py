"""End-to-end tests of ``python -m audit.verify`` on generated and tampered bundles."""

from __future__ import annotations

import base64
import json

import pytest

from audit import merkle, note


def _leaf_b64(event):
    return base64.b64encode(merkle.event_leaf_hash(event)).decode("ascii")


def test_valid_range_bundle_verifies(make_bundle, run_cli):
    case = make_bundle("range")
    result = run_cli(case.path, "--pubkey", case.vkey)
    assert result.code == 0, result.stdout + result.stderr
    assert result.stdout.startswith("OK")
    assert "tree size 70" in result.stdout
    assert "example.org/govsvc-audit (trusted key given with --pubkey)" in result.stdout
    assert "WARNING" not in result.stdout


def test_valid_inclusion_bundle_verifies_json(make_bundle, run_cli):
    case = make_bundle("inclusion")
    result = run_cli(case.path, "--pubkey", case.vkey, "--json")
    assert result.code == 0, result.stdout + result.stderr
    report = result.report
    assert report["ok"] is True
    assert report["findings"] == []
    assert report["tree_size"] == 70
    assert report["event_count"] == 50
    assert report["key_trusted"] is True
    assert report["signed_by"] == ["example.org/govsvc-audit"]
    assert report["first_bad_seq"] is None


def test_pubkey_file(make_bundle, run_cli, tmp_path):
    case = make_bundle("range")
    keys = tmp_path / "keys.txt"
    keys.write_text(f"# the log's key\n\n{case.vkey}\n", encoding="utf-8")
    assert run_cli(case.path, "--pubkey-file", keys).code == 0


def test_without_pubkey_the_key_is_not_trusted(make_bundle, run_cli):
    case = make_bundle("range")
    result = run_cli(case.path)
    assert result.code == 0
    assert "NOT independently trusted" in result.stdout
    report = run_cli(case.path, "--json").report
    assert report["ok"] is True and report["key_trusted"] is False
    assert any("NOT independently trusted" in w for w in report["warnings"])


def _tamper_field(case, seq, rehash=False):
    lines = list(case.lines)
    i = case.index_of(seq)
    obj = case.line_obj(i)
    obj["event"]["purpose"] = "marketing"
    if rehash:
        obj["leaf_hash"] = _leaf_b64(obj["event"])
    lines[i] = json.dumps(obj, separators=(",", ":"))
    return case.write(lines)


@pytest.mark.parametrize("proofs", ["range", "inclusion"])
def test_modified_event_field(make_bundle, run_cli, proofs):
    case = make_bundle(proofs)
    result = run_cli(_tamper_field(case, 33), "--pubkey", case.vkey, "--json")
    assert result.code == 1
    assert result.first["kind"] == "modified"
    assert result.first["seq"] == 33
    assert result.report["first_bad_seq"] == 33
    assert len(result.report["findings"]) == 1


def test_modified_event_and_leaf_hash_range_mode_is_root_mismatch(make_bundle, run_cli):
    case = make_bundle("range")
    result = run_cli(_tamper_field(case, 33, rehash=True), "--pubkey", case.vkey, "--json")
    assert result.code == 1
    findings = result.report["findings"]
    assert [f["kind"] for f in findings] == ["root_mismatch"]
    assert findings[0]["seq"] is None
    assert "cannot tell" in findings[0]["message"]


def test_modified_event_and_leaf_hash_inclusion_mode_is_located(make_bundle, run_cli):
    case = make_bundle("inclusion")
    result = run_cli(_tamper_field(case, 33, rehash=True), "--pubkey", case.vkey, "--json")
    assert result.code == 1
    assert [(f["kind"], f["seq"]) for f in result.report["findings"]] == [("modified", 33)]
    assert "inclusion proof" in result.first["message"]


def test_modified_seq_field_blames_its_place(make_bundle, run_cli):
    case = make_bundle("range")
    lines = list(case.lines)
    i = case.index_of(20)
    obj = case.line_obj(i)
    obj["event"]["seq"] = 21
    lines[i] = json.dumps(obj)
    result = run_cli(case.write(lines), "--pubkey", case.vkey, "--json")
    assert result.code == 1
    assert [(f["kind"], f["seq"]) for f in result.report["findings"]] == [("modified", 20)]


@pytest.mark.parametrize("proofs", ["range", "inclusion"])
def test_deleted_middle_event(make_bundle, run_cli, proofs):
    case = make_bundle(proofs)
    lines = list(case.lines)
    del lines[case.index_of(25)]
    result = run_cli(case.write(lines), "--pubkey", case.vkey, "--json")
    assert result.code == 1
    assert [(f["kind"], f["seq"]) for f in result.report["findings"]] == [("deleted", 25)]


def test_deleted_first_event(make_bundle, run_cli):
    case = make_bundle("range")
    lines = list(case.lines)
    del lines[case.index_of(10)]
    result = run_cli(case.write(lines), "--pubkey", case.vkey, "--json")
    assert (result.first["kind"], result.first["seq"]) == ("deleted", 10)


def test_deleted_several_middle_events(make_bundle, run_cli):
    case = make_bundle("range")
    lines = list(case.lines)
    del lines[case.index_of(30) : case.index_of(34)]
    result = run_cli(case.write(lines), "--pubkey", case.vkey, "--json")
    assert result.code == 1
    assert [(f["kind"], f["seq"], f["count"]) for f in result.report["findings"]] == [("deleted", 30, 4)]


@pytest.mark.parametrize("proofs", ["range", "inclusion"])
def test_inserted_duplicate_event(make_bundle, run_cli, proofs):
    case = make_bundle(proofs)
    lines = list(case.lines)
    i = case.index_of(40)
    lines.insert(i + 1, lines[i])
    result = run_cli(case.write(lines), "--pubkey", case.vkey, "--json")
    assert result.code == 1
    assert [(f["kind"], f["seq"]) for f in result.report["findings"]] == [("inserted", 40)]


def test_inserted_event_outside_range(make_bundle, run_cli, helpers):
    case = make_bundle("range")
    lines = list(case.lines)
    extra = case.events[60]  # a real event of the log, but not of the exported range
    line = helpers.dumps({"type": "event", "leaf_hash": helpers.leaf_b64(extra), "event": extra})
    lines.insert(case.index_of(59) + 1, line)
    result = run_cli(case.write(lines), "--pubkey", case.vkey, "--json")
    assert result.code == 1
    assert [(f["kind"], f["seq"]) for f in result.report["findings"]] == [("inserted", 60)]


def test_inserted_forged_event_inside_range(make_bundle, run_cli, helpers):
    case = make_bundle("inclusion")
    lines = list(case.lines)
    forged = dict(case.events[22], action="consent.withdraw", purpose="marketing")
    proof = case.line_obj(case.index_of(22))["proof"]
    forged_line = {"type": "event", "leaf_hash": helpers.leaf_b64(forged), "event": forged, "proof": proof}
    line = helpers.dumps(forged_line)
    lines.insert(case.index_of(30), line)
    result = run_cli(case.write(lines), "--pubkey", case.vkey, "--json")
    assert result.code == 1
    assert [(f["kind"], f["seq"]) for f in result.report["findings"]] == [("inserted", 22)]


@pytest.mark.parametrize("proofs", ["range", "inclusion"])
def test_swapped_events_are_reordered(make_bundle, run_cli, proofs):
    case = make_bundle(proofs)
    lines = list(case.lines)
    a, b = case.index_of(17), case.index_of(18)
    lines[a], lines[b] = lines[b], lines[a]
    result = run_cli(case.write(lines), "--pubkey", case.vkey, "--json")
    assert result.code == 1
    assert [(f["kind"], f["seq"]) for f in result.report["findings"]] == [("reordered", 17)]


def test_event_moved_later_is_reordered(make_bundle, run_cli):
    case = make_bundle("range")
    lines = list(case.lines)
    moved = lines.pop(case.index_of(12))
    lines.insert(case.index_of(20), moved)  # now after seq 20
    result = run_cli(case.write(lines), "--pubkey", case.vkey, "--json")
    assert [(f["kind"], f["seq"]) for f in result.report["findings"]] == [("reordered", 12)]


def test_truncated_last_event_and_trailer(make_bundle, run_cli):
    case = make_bundle("inclusion")
    result = run_cli(case.write(case.lines[:-2]), "--pubkey", case.vkey, "--json")
    assert result.code == 1
    assert [(f["kind"], f["seq"]) for f in result.report["findings"]] == [("truncated", 59)]


def test_truncated_range_bundle_in_the_middle(make_bundle, run_cli):
    case = make_bundle("range")
    result = run_cli(case.write(case.lines[: case.index_of(41)]), "--pubkey", case.vkey, "--json")
    assert result.code == 1
    assert [(f["kind"], f["seq"], f["count"]) for f in result.report["findings"]] == [("truncated", 41, 19)]


def test_truncated_trailer_only(make_bundle, run_cli):
    case = make_bundle("range")
    result = run_cli(case.write(case.lines[:-1]), "--pubkey", case.vkey, "--json")
    assert result.code == 1
    assert [(f["kind"], f["seq"]) for f in result.report["findings"]] == [("truncated", None)]


def test_cut_mid_line_is_reported(make_bundle, run_cli):
    case = make_bundle("range")
    text = "".join(line + "\n" for line in case.lines[: case.index_of(30)])
    path = case.path.with_name("cut.jsonl")
    path.write_text(text + case.lines[case.index_of(30)][:40], encoding="utf-8")
    result = run_cli(path, "--pubkey", case.vkey, "--json")
    kinds = [(f["kind"], f["seq"]) for f in result.report["findings"]]
    assert kinds == [("malformed", None), ("truncated", 30)]


def _edit_checkpoint(case, edit):
    lines = list(case.lines)
    obj = case.line_obj(2)
    body, sigs = obj["note"].split("\n\n")
    obj["note"] = edit(body.split("\n")) + "\n\n" + sigs
    lines[2] = json.dumps(obj)
    return case.write(lines)


def test_checkpoint_root_changed_is_bad_signature(make_bundle, run_cli):
    case = make_bundle("range")
    other_root = "A" * 43 + "="
    path = _edit_checkpoint(case, lambda ls: "\n".join([ls[0], ls[1], other_root]))
    result = run_cli(path, "--pubkey", case.vkey, "--json")
    assert result.code == 1
    assert [f["kind"] for f in result.report["findings"]] == ["bad_signature"]


def test_checkpoint_size_changed_is_bad_signature(make_bundle, run_cli):
    case = make_bundle("range")
    path = _edit_checkpoint(case, lambda ls: "\n".join([ls[0], "71", ls[2]]))
    result = run_cli(path, "--pubkey", case.vkey, "--json")
    assert result.code == 1
    assert [f["kind"] for f in result.report["findings"]] == ["bad_signature"]


def test_checkpoint_size_with_leading_zero_is_bad_checkpoint(make_bundle, run_cli):
    case = make_bundle("range")
    path = _edit_checkpoint(case, lambda ls: "\n".join([ls[0], "070", ls[2]]))
    result = run_cli(path, "--pubkey", case.vkey, "--json")
    assert [f["kind"] for f in result.report["findings"]] == ["bad_checkpoint"]


def test_header_tree_size_changed_is_bad_checkpoint(make_bundle, run_cli):
    case = make_bundle("range")
    lines = list(case.lines)
    header = case.line_obj(0)
    header["tree_size"] = 80
    lines[0] = json.dumps(header)
    result = run_cli(case.write(lines), "--pubkey", case.vkey, "--json")
    assert result.code == 1
    assert [f["kind"] for f in result.report["findings"]] == ["bad_checkpoint"]


def test_resigned_with_another_key(make_bundle, run_cli, attacker, helpers):
    case = make_bundle("range")
    evil_skey, evil_vkey = attacker
    lines = list(case.lines)
    cp = note.parse_checkpoint(case.line_obj(2)["note"])
    lines[1] = helpers.dumps({"type": "key", "vkey": evil_vkey})
    forged = note.sign_checkpoint(cp.origin, cp.size, cp.root, evil_skey)
    lines[2] = helpers.dumps({"type": "checkpoint", "note": forged})
    path = case.write(lines)
    result = run_cli(path, "--pubkey", case.vkey, "--json")
    assert result.code == 1
    assert [f["kind"] for f in result.report["findings"]] == ["bad_signature"]
    assert "not signed by any trusted key" in result.first["message"]
    # Without --pubkey it passes on the bundle's own (attacker's) key, and says so.
    untrusted = run_cli(path, "--json")
    assert untrusted.code == 0 and untrusted.report["key_trusted"] is False


def test_garbage_line(make_bundle, run_cli):
    case = make_bundle("range")
    lines = list(case.lines)
    at = case.index_of(27)
    lines.insert(at, "this is not json {")
    result = run_cli(case.write(lines), "--pubkey", case.vkey, "--json")
    assert result.code == 1
    findings = result.report["findings"]
    assert [(f["kind"], f["seq"], f["line"]) for f in findings] == [("malformed", None, at + 1)]
    human = run_cli(case.write(lines), "--pubkey", case.vkey)
    assert human.stdout.startswith("FAILED") and f"line {at + 1}" in human.stdout


def test_float_in_event_is_malformed(make_bundle, run_cli):
    case = make_bundle("range")
    lines = list(case.lines)
    i = case.index_of(15)
    lines[i] = lines[i].replace('"version":3', '"version":3.0')
    assert '"version":3.0' in lines[i]
    result = run_cli(case.write(lines), "--pubkey", case.vkey, "--json")
    assert result.code == 1
    assert [(f["kind"], f["seq"], f["line"]) for f in result.report["findings"]] == [("malformed", 15, i + 1)]


def test_filtered_export_with_gaps_verifies(make_bundle, run_cli):
    case = make_bundle("inclusion", select=lambda e: e["seq"] % 3 == 0)
    assert case.line_obj(0)["filtered"] is True
    result = run_cli(case.path, "--pubkey", case.vkey, "--json")
    assert result.code == 0, result.stdout
    assert result.report["event_count"] == len(case.exported)
    assert any("filtered export" in w for w in result.report["warnings"])


def test_filtered_export_tampering(make_bundle, run_cli):
    case = make_bundle("inclusion", select=lambda e: e["seq"] % 3 == 0)
    lines = list(case.lines)
    i = case.index_of(30)
    lines[i], lines[i + 1] = lines[i + 1], lines[i]
    swapped = run_cli(case.write(lines, "swapped.jsonl"), "--pubkey", case.vkey, "--json")
    assert [(f["kind"], f["seq"]) for f in swapped.report["findings"]] == [("reordered", 30)]
    modified = run_cli(_tamper_field(case, 36, rehash=True), "--pubkey", case.vkey, "--json")
    assert [(f["kind"], f["seq"]) for f in modified.report["findings"]] == [("modified", 36)]


def test_usage_errors_exit_2(make_bundle, run_cli, tmp_path):
    case = make_bundle("range")
    assert run_cli(tmp_path / "missing.jsonl").code == 2
    assert run_cli(case.path, "--pubkey", "not-a-key").code == 2
    assert run_cli(case.path, "--pubkey-file", tmp_path / "missing.txt").code == 2
    assert run_cli().code == 2
