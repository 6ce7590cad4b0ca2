"""Auditor exports, the standalone verifier run as an auditor would, and tampering with the stored log."""

from __future__ import annotations

import csv
import io
import json
import subprocess
import sys
from pathlib import Path

import pytest
from sqlalchemy import func, insert, select

from audit import merkle
from audit.canonical import canonical_json
from govsvc.audit.models import AuditEvent, AuditLeaf
from govsvc.config import PROJECT_ROOT
from govsvc.core.db import utcnow
from tests.support.asserts import assert_problem
from tests.support.audit import drain, record_events, tamper


@pytest.fixture
def auditor(auth_headers) -> dict[str, str]:
    return auth_headers("auditor")


@pytest.fixture
def log_of_40(app) -> None:
    record_events(app, 40)
    drain(app)


def _vkeys(client) -> list[str]:
    return [key["vkey"] for key in client.get("/v1/audit/keys").get_json()["keys"]]


def run_verifier(bundle: Path, vkeys: list[str]) -> tuple[int, dict]:
    """``python -m audit.verify BUNDLE --pubkey ... --json`` from a checkout, as an auditor runs it."""
    args = [sys.executable, "-m", "audit.verify", str(bundle), "--json"]
    for vkey in vkeys:
        args += ["--pubkey", vkey]
    result = subprocess.run(args, cwd=PROJECT_ROOT, capture_output=True, text=True, check=False)
    return result.returncode, json.loads(result.stdout)


def _export(client, headers, tmp_path: Path, query: str = "", name: str = "bundle.jsonl") -> Path:
    response = client.get(f"/v1/audit/export?{query}", headers=headers)
    assert response.status_code == 200, response.get_data(as_text=True)
    path = tmp_path / name
    path.write_bytes(response.get_data())
    return path


def test_a_range_export_verifies_offline_and_is_itself_audited(app, client, auditor, tmp_path, log_of_40) -> None:
    response = client.get("/v1/audit/export?seq_from=5&seq_to=30", headers=auditor)
    assert response.mimetype == "application/jsonl"
    assert "attachment" in response.headers["Content-Disposition"]
    path = tmp_path / "range.jsonl"
    path.write_bytes(response.get_data())
    lines = [json.loads(line) for line in path.read_text().splitlines()]
    assert lines[0]["type"] == "header" and lines[0]["proofs"] == "range"
    assert [line["event"]["seq"] for line in lines if line["type"] == "event"] == list(range(5, 30))
    code, report = run_verifier(path, _vkeys(client))
    assert code == 0 and report["ok"] is True, report
    drain(app)
    with app.extensions["govsvc.db"].transaction(write=False) as session:
        exported = session.scalar(select(func.count()).where(AuditEvent.action == "audit.exported"))
    assert exported == 1


def test_a_filtered_export_carries_inclusion_proofs(client, auditor, tmp_path, log_of_40) -> None:
    path = _export(client, auditor, tmp_path, "subject=sub_7")
    events = [json.loads(line) for line in path.read_text().splitlines() if '"type":"event"' in line]
    assert [event["event"]["subject_ref"] for event in events] == ["sub_7"]
    assert events[0]["proof"]
    code, report = run_verifier(path, _vkeys(client))
    assert code == 0, report


def test_csv_export_for_spreadsheets(client, auditor, log_of_40) -> None:
    response = client.get("/v1/audit/export?format=csv&action=data.read", headers=auditor)
    assert response.mimetype == "text/csv"
    rows = list(csv.DictReader(io.StringIO(response.get_data(as_text=True))))
    assert len(rows) == 40 and rows[0]["action"] == "data.read" and rows[0]["subject_ref"] == "sub_0"
    assert len(bytes.fromhex(rows[0]["leaf_hash"])) == 32


def test_export_before_any_checkpoint_is_404(client, auditor, database) -> None:
    assert_problem(client.get("/v1/audit/export", headers=auditor), 404, "not-found")


def test_the_verifier_without_a_trusted_key_warns(client, auditor, tmp_path, log_of_40) -> None:
    path = _export(client, auditor, tmp_path)
    result = subprocess.run(
        [sys.executable, "-m", "audit.verify", str(path)], cwd=PROJECT_ROOT, capture_output=True, text=True, check=False
    )
    assert result.returncode == 0
    assert "NOT independently trusted" in result.stdout + result.stderr


# -- tampering with the stored log: the server-side verify and the standalone verifier agree ------------------


TAMPERING = {
    "modified": (
        ["UPDATE audit_leaves SET event_json = replace(event_json, '\"sub_12\"', '\"sub_99\"') WHERE seq = {s12}"],
        "{s12}",
    ),
    "modified-row": (
        [
            "UPDATE audit_events SET subject_ref = 'sub_forged' "
            "WHERE id = (SELECT event_pk FROM audit_leaves WHERE seq = {s12})"
        ],
        "{s12}",
    ),
    "deleted": (["DELETE FROM audit_leaves WHERE seq = {s12}"], "{s12}"),
    "reordered": (
        [
            "UPDATE audit_leaves SET seq = -1 WHERE seq = {s12}",
            "UPDATE audit_leaves SET seq = {s12} WHERE seq = {s13}",
            "UPDATE audit_leaves SET seq = {s13} WHERE seq = -1",
        ],
        "{s12}",
    ),
    "truncated": (["DELETE FROM audit_leaves WHERE seq >= {s35}"], "{s35}"),
}


def _expected_kind(name: str) -> str:
    return "modified" if name == "modified-row" else name


@pytest.mark.parametrize("name", list(TAMPERING))
def test_tampering_with_the_database_is_found_at_the_first_bad_seq(
    app, client, auditor, auth_headers, database, tmp_path, log_of_40, name: str
) -> None:
    with app.extensions["govsvc.db"].transaction(write=False) as session:
        base = session.scalar(select(func.min(AuditEvent.id)).where(AuditEvent.subject_ref == "sub_0"))
        first_seq = session.scalar(select(AuditLeaf.seq).where(AuditLeaf.event_pk == base))
    seqs = {"s12": first_seq + 12, "s13": first_seq + 13, "s35": first_seq + 35}
    statements, bad_seq = TAMPERING[name]
    clean = client.get("/v1/audit/verify", headers=auditor).get_json()
    assert clean["ok"] is True, clean
    tamper(database.url, *(statement.format(**seqs) for statement in statements))
    expected_seq = int(bad_seq.format(**seqs))

    report = client.get("/v1/audit/verify", headers=auditor).get_json()
    assert report["ok"] is False
    assert report["first_bad_seq"] == expected_seq, report
    assert _expected_kind(name) in {finding["kind"] for finding in report["findings"]}, report

    if name != "modified-row":  # the export carries what was committed to the tree, not the query rows
        code, offline = run_verifier(_export(client, auditor, tmp_path), _vkeys(client))
        assert code == 1
        kinds = {finding["kind"] for finding in offline["findings"]}
        assert _expected_kind(name) in kinds, offline
        assert min(f["seq"] for f in offline["findings"] if f["seq"] is not None) == expected_seq


def test_an_inserted_forged_event_is_found(app, client, auditor, database, tmp_path, log_of_40) -> None:
    """An attacker shifts the tail and slips a self-consistent forged event (with its own leaf hash) in."""
    size = client.get("/v1/audit/verify", headers=auditor).get_json()["tree_size"]
    forged_seq = size - 3

    def insert_forged(connection) -> None:
        template = json.loads(
            connection.execute(select(AuditLeaf.event_json).where(AuditLeaf.seq == forged_seq - 1)).scalar()
        )
        forged = {**template, "seq": forged_seq, "event_id": "f" * 32, "subject_ref": "sub_forged"}
        pk = connection.execute(
            insert(AuditEvent).values(
                event_id="f" * 32, time=utcnow(), action="data.read", outcome="success", subject_ref="sub_forged"
            )
        ).inserted_primary_key[0]
        connection.execute(
            insert(AuditLeaf).values(
                seq=forged_seq,
                event_pk=pk,
                event_json=canonical_json(forged).decode(),
                leaf_hash=merkle.event_leaf_hash(forged),
            )
        )

    tamper(
        database.url,
        f"UPDATE audit_leaves SET seq = seq + 1000000 WHERE seq >= {forged_seq}",
        "UPDATE audit_leaves SET seq = seq - 999999 WHERE seq >= 1000000",
        insert_forged,
    )
    report = client.get("/v1/audit/verify", headers=auditor).get_json()
    assert report["ok"] is False
    assert report["first_bad_seq"] == forged_seq, report
    code, offline = run_verifier(_export(client, auditor, tmp_path), _vkeys(client))
    assert code == 1
    assert "inserted" in {finding["kind"] for finding in offline["findings"]}, offline


def test_a_tampered_export_bundle_is_caught_offline(client, auditor, tmp_path, log_of_40) -> None:
    path = _export(client, auditor, tmp_path)
    lines = path.read_text().splitlines()
    index = next(i for i, line in enumerate(lines) if '"subject_ref":"sub_20"' in line)
    seq = json.loads(lines[index])["event"]["seq"]
    lines[index] = lines[index].replace('"sub_20"', '"sub_21"')
    path.write_text("\n".join(lines) + "\n")
    code, report = run_verifier(path, _vkeys(client))
    assert code == 1
    assert report["findings"][0]["kind"] == "modified" and report["findings"][0]["seq"] == seq


def test_verify_range_parameters(client, auditor, log_of_40) -> None:
    report = client.get("/v1/audit/verify?from=3&to=9", headers=auditor).get_json()
    assert report["ok"] and report["from_seq"] == 3 and report["to_seq"] == 9 and report["event_count"] == 6
    assert_problem(client.get("/v1/audit/verify?from=-2", headers=auditor), 422, "validation-error")
    assert_problem(client.get("/v1/audit/verify?from=x", headers=auditor), 422, "validation-error")
