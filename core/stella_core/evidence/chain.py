"""The ledger's hash chain: each packet's link hashes the previous link, its number and its
bundle's digest. Pure, so offline verification computes it without a database driver; the
database trigger of migration 0004 computes the same."""

from __future__ import annotations

import hashlib

GENESIS = "0" * 64
CHAIN_DOMAIN = "stella-evidence-chain/v1"


def chain_hash(prev_hash: str, seq: int, bundle_digest: str) -> str:
    """The chain link of packet `seq`, as the database trigger computes it."""
    data = "\n".join((CHAIN_DOMAIN, prev_hash, str(seq), bundle_digest)).encode()
    return hashlib.sha256(data).hexdigest()
