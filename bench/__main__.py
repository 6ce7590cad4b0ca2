"""Run every benchmark: ``python -m bench`` (``python -m bench.audit --help`` for the audit log's options)."""

from bench import audit, decisions, rbac

if __name__ == "__main__":
    rbac.main()
    audit.main([])
    decisions.main()
