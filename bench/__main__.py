"""Run the benchmarks: ``python -m bench`` runs all; ``python -m bench pii`` (or another name) only that one."""

import sys

from bench import audit, crypto, decisions, dsr, pii, rbac

BENCHES = {
    "rbac": lambda: rbac.main(),
    "audit": lambda: audit.main([]),
    "decisions": lambda: decisions.main(),
    "pii": lambda: pii.main([]),
    "crypto": lambda: crypto.main(),
    "dsr": lambda: dsr.main([]),
}

if __name__ == "__main__":
    chosen = sys.argv[1:] or list(BENCHES)
    unknown = [name for name in chosen if name not in BENCHES]
    if unknown:
        sys.exit(f"unknown bench {', '.join(unknown)}; choose from {', '.join(BENCHES)}")
    sys.argv = sys.argv[:1]  # each bench parses its own (default) options
    for name in chosen:
        BENCHES[name]()
