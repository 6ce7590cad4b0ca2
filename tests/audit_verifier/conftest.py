"""Fixtures for the audit verifier tests: a signer, generated events and bundles to tamper with."""

from __future__ import annotations

import base64
import hashlib
import io
import json
import os
import subprocess
import sys
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest

REPO_ROOT = Path(__file__).resolve().parents[2]
if str(REPO_ROOT) not in sys.path:  # test the working tree's audit package
    sys.path.insert(0, str(REPO_ROOT))

from audit import bundle, merkle, note  # noqa: E402

ORIGIN = "example.org/govsvc-audit"
VECTORS = Path(__file__).resolve().parent / "vectors"


def make_events(count: int, start: int = 0) -> list[dict[str, Any]]:
    """Generate audit events carrying pseudonymous ids only."""
    events = []
    for seq in range(start, start + count):
        digest = hashlib.sha256(f"event-{seq}".encode()).hexdigest()
        events.append(
            {
                "seq": seq,
                "time": f"2025-05-{1 + seq % 28:02d}T10:{seq % 60:02d}:00Z",
                "actor": f"psn_{digest[:16]}",
                "subject": f"psn_{digest[16:32]}",
                "action": ("consent.grant", "consent.withdraw", "policy.decide")[seq % 3],
                "purpose": "analytics",
                "details": {"channel": "web", "version": seq % 4, "granted": seq % 2 == 0, "ref": None},
            }
        )
    return events


@dataclass
class BundleCase:
    """A generated bundle and what is needed to tamper with it."""

    path: Path
    lines: list[str]
    vkey: str
    skey: str
    tree: merkle.MemoryTree
    events: list[dict[str, Any]]
    from_seq: int
    to_seq: int
    proofs: str
    filtered: bool = False
    exported: list[int] = field(default_factory=list)

    def index_of(self, seq: int) -> int:
        """Line index (0-based) of the event with ``seq``."""
        return 3 + self.exported.index(seq)

    def line_obj(self, index: int) -> dict[str, Any]:
        """Decode the JSON of a line."""
        return json.loads(self.lines[index])

    def write(self, lines: list[str], name: str = "tampered.jsonl") -> Path:
        """Write lines (without newlines) to a new bundle file."""
        path = self.path.with_name(name)
        path.write_text("".join(line + "\n" for line in lines), encoding="utf-8")
        return path


def leaf_b64(event: dict[str, Any]) -> str:
    """Base64 leaf hash of an event."""
    return base64.b64encode(merkle.event_leaf_hash(event)).decode("ascii")


def dumps(obj: Any) -> str:
    """Compact JSON for a bundle line."""
    return json.dumps(obj, ensure_ascii=False, separators=(",", ":"))


@pytest.fixture(scope="session")
def signer() -> tuple[str, str]:
    """The log's (skey, vkey)."""
    return note.generate_signer(ORIGIN)


@pytest.fixture(scope="session")
def attacker() -> tuple[str, str]:
    """Another key with the same name: (skey, vkey)."""
    return note.generate_signer(ORIGIN)


@pytest.fixture
def make_bundle(tmp_path: Path, signer: tuple[str, str]) -> Callable[..., BundleCase]:
    """Build a bundle of a 70-event log exporting seqs [10, 60) (50 events) by default."""

    def build(
        proofs: str = "range",
        log_size: int = 70,
        from_seq: int = 10,
        to_seq: int = 60,
        select: Callable[[dict[str, Any]], bool] | None = None,
    ) -> BundleCase:
        skey, vkey = signer
        events = make_events(log_size)
        tree = merkle.MemoryTree(merkle.event_leaf_hash(e) for e in events)
        checkpoint = note.sign_checkpoint(ORIGIN, log_size, tree.root(), skey)
        chosen = [e for e in events[from_seq:to_seq] if select is None or select(e)]
        out = io.StringIO()
        bundle.write_bundle(
            out,
            origin=ORIGIN,
            tree_size=log_size,
            from_seq=from_seq,
            to_seq=to_seq,
            vkeys=[vkey],
            checkpoint=checkpoint,
            events=chosen,
            proofs=proofs,
            range_proof=tree.range_proof(from_seq, to_seq) if proofs == "range" else None,
            inclusion_proof=tree.inclusion_proof if proofs == "inclusion" else None,
            filters={"actor": "psn_x"} if select else None,
            filtered=select is not None,
            exported_at="2025-06-01T00:00:00Z",
        )
        path = tmp_path / f"bundle-{proofs}.jsonl"
        path.write_text(out.getvalue(), encoding="utf-8")
        lines = out.getvalue().split("\n")[:-1]
        return BundleCase(
            path=path,
            lines=lines,
            vkey=vkey,
            skey=skey,
            tree=tree,
            events=events,
            from_seq=from_seq,
            to_seq=to_seq,
            proofs=proofs,
            filtered=select is not None,
            exported=[e["seq"] for e in chosen],
        )

    return build


@dataclass
class CliResult:
    """Outcome of one ``python -m audit.verify`` run."""

    code: int
    stdout: str
    stderr: str

    @property
    def report(self) -> dict[str, Any]:
        """The ``--json`` report."""
        return json.loads(self.stdout)

    @property
    def first(self) -> dict[str, Any]:
        """The first finding of the ``--json`` report."""
        return self.report["findings"][0]


@pytest.fixture
def run_cli() -> Callable[..., CliResult]:
    """Run the verifier CLI in a subprocess from the repository root."""

    def run(*args: str | Path) -> CliResult:
        proc = subprocess.run(
            [sys.executable, "-m", "audit.verify", *map(str, args)],
            cwd=REPO_ROOT,
            capture_output=True,
            text=True,
            timeout=120,
            env={**os.environ, "PYTHONDONTWRITEBYTECODE": "1", "PYTHONPATH": str(REPO_ROOT)},
        )
        return CliResult(proc.returncode, proc.stdout, proc.stderr)

    return run


@pytest.fixture
def helpers() -> Any:
    """Small helpers shared by the tests (module-like namespace)."""

    class _Helpers:
        leaf_b64 = staticmethod(leaf_b64)
        dumps = staticmethod(dumps)
        make_events = staticmethod(make_events)
        origin = ORIGIN
        vectors = VECTORS

    return _Helpers
