"""Run the benchmarks: ``python -m bench`` runs all; ``python -m bench pii`` (or another name) only that one;
options after the names go to a bench that takes them (``python -m bench retention --rows 100000``)."""

import sys

from bench import audit, crypto, decisions, dsr, pii, rbac, retention

BENCHES = {
    "rbac": lambda: rbac.main(),
    "audit": lambda: audit.main([]),
    "decisions": lambda: decisions.main(),
    "pii": lambda: pii.main([]),
    "crypto": lambda: crypto.main(),
    "dsr": lambda: dsr.main([]),
    "retention": lambda: retention.main(OPTIONS),
}
OPTIONS: list[str] = []

if __name__ == "__main__":
    arguments = sys.argv[1:]
    first_option = next((i for i, a in enumerate(arguments) if a.startswith("-")), len(arguments))
    OPTIONS.extend(arguments[first_option:])
    chosen = arguments[:first_option] or list(BENCHES)
    unknown = [name for name in chosen if name not in BENCHES]
    if unknown:
        sys.exit(f"unknown bench {', '.join(unknown)}; choose from {', '.join(BENCHES)}")
    sys.argv = sys.argv[:1]  # each bench parses its own (default) options
    for name in chosen:
        BENCHES[name]()
