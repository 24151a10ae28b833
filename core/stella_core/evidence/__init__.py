"""Evidence: signed packets (in-toto Statement v1 in DSSE in a Sigstore bundle v0.3), predicate
types and their schemas, and RFC 6962/9162 Merkle trees with signed checkpoints.

These are the pure building blocks; the ledger, export, verify and replay build on them.
"""
