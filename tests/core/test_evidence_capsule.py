"""Decision capsules offline: built in memory as an export builds them, checked with no database."""

from __future__ import annotations

import subprocess
import sys


def test_offline_verification_loads_no_database_driver() -> None:
    """An auditor's laptop verifies and replays a capsule with the core alone."""
    code = (
        "import sys\n"
        "import stella_core.evidence.verify, stella_core.evidence.replay\n"
        "from stella_core.evidence.chain import chain_hash\n"
        "print(sorted({m.split('.')[0] for m in sys.modules} & {'psycopg', 'sqlalchemy'}))\n"
    )
    done = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, check=True, timeout=60
    )
    assert done.stdout.strip() == "[]"
