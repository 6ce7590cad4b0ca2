"""The auditor's verifier must not depend on the service it audits."""

from __future__ import annotations

import ast
import sys
from pathlib import Path

AUDIT_DIR = Path(__file__).resolve().parents[2] / "audit"
ALLOWED_THIRD_PARTY = {"cryptography"}


def _imports(path: Path) -> list[tuple[str, int]]:
    tree = ast.parse(path.read_text(encoding="utf-8"), filename=str(path))
    found = []
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            found += [(alias.name, 0) for alias in node.names]
        elif isinstance(node, ast.ImportFrom):
            found.append((node.module or "", node.level))
        elif isinstance(node, ast.Call) and getattr(node.func, "id", None) == "__import__":
            found.append(("__import__", 0))
        elif isinstance(node, ast.Attribute) and node.attr == "import_module":
            found.append(("importlib.import_module", 0))
    return found


def test_audit_imports_only_stdlib_cryptography_and_itself() -> None:
    modules = sorted(AUDIT_DIR.glob("*.py"))
    assert {p.name for p in modules} >= {
        "__init__.py",
        "canonical.py",
        "merkle.py",
        "note.py",
        "bundle.py",
        "verify.py",
    }
    for path in modules:
        for name, level in _imports(path):
            if level > 0:
                continue  # relative import inside audit
            top = name.split(".")[0]
            assert top not in ("__import__", "importlib"), f"{path.name}: dynamic import"
            assert top != "govsvc", f"{path.name} imports the service ({name})"
            allowed = top in sys.stdlib_module_names or top in ALLOWED_THIRD_PARTY or top == "audit"
            assert allowed, f"{path.name} imports {name}, which is neither stdlib nor cryptography"
