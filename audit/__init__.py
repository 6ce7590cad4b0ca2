"""Standalone verifier for govsvc's append-only audit log.

The package is self-contained (standard library and ``cryptography`` only) so
that an auditor can run it without trusting, or even installing, the service:

* :mod:`audit.canonical` - the canonical JSON encoding of audit events;
* :mod:`audit.merkle` - RFC 9162 Merkle tree hashing, proofs and compact ranges;
* :mod:`audit.note` - C2SP signed notes and tlog checkpoints with Ed25519;
* :mod:`audit.bundle` - the JSONL export bundle format and its writer;
* :mod:`audit.verify` - the auditor's command line tool (``python -m audit.verify``).
"""
