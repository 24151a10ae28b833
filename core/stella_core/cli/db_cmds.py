"""`stella db …`: the schema, and the embedded server of this STELLA_HOME."""

from __future__ import annotations

import argparse
from typing import Any

from stella_core.cli.common import Leaf, show
from stella_core.errors import DatabaseError


def cmd_db_upgrade(args: argparse.Namespace) -> None:
    from stella_core.bootstrap import Backend, Stella
    from stella_core.db import migrate
    from stella_core.profiles import ProfileStore

    backend = Backend.open()
    try:
        before, after = backend.upgrade()
        profiles = ProfileStore(backend.home)
        backend.ensure_ready(profiles, args.profile)
        # The orchestrator gets its login and its key with the schema.
        stella = Stella(backend, profiles.get(backend.target, args.profile))
        try:
            stella.evidence.ensure_orchestrator_key()
        finally:
            stella.close(keep_backend=True)
        value = {
            "target": backend.target,
            "before": before,
            "after": after,
            "head": migrate.head_revision(),
        }
    finally:
        backend.close()
    show(args, value, lambda: [f"database {value['target']} at revision {after} (was {before})"])


def cmd_db_stop(args: argparse.Namespace) -> None:
    """Stop this STELLA_HOME's embedded server now instead of after its linger period. It is
    the embedded server of the home whatever STELLA_DATABASE_URL says (it may still run from
    before that was set)."""
    from stella_core.db.embedded import EmbeddedPostgres
    from stella_core.profiles import stella_home

    home = stella_home(create=False)
    running = False
    if (home / "pg").is_dir():
        # linger=0: this process never leaves anything running, whatever the environment says.
        server = EmbeddedPostgres(home, linger=0)
        running = server.is_running()
        if running and server.in_use() and not args.force:
            raise DatabaseError(
                f"the embedded database of {home} is in use (by the desk, 'stella serve' or "
                "another command); close them first, or give --force to disconnect them"
            )
        running = server.stop() if running else False
    value: dict[str, Any] = {"home": str(home), "was_running": running, "running": False}
    show(
        args,
        value,
        lambda: [
            f"stopped the embedded database of {home}"
            if running
            else f"no embedded database is running for {home}; nothing to stop"
        ],
    )


def group_db(groups: Any, leaf: Leaf, help_: str) -> None:
    db = groups.add_parser("db", help=help_).add_subparsers(dest="cmd", required=True)
    leaf(db, "upgrade", cmd_db_upgrade, "create or migrate the schema (idempotent)")
    p = leaf(
        db,
        "stop",
        cmd_db_stop,
        "stop this home's embedded database now (it otherwise stops by itself "
        "STELLA_EMBEDDED_LINGER seconds, default 600, after its last client)",
    )
    p.add_argument(
        "--force",
        action="store_true",
        help="stop it even while the desk or 'stella serve' uses it (they are disconnected)",
    )


GROUPS = {"db": group_db}
