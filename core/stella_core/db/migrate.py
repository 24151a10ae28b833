"""Create or migrate the schema (`stella db upgrade`). Idempotent; needs an admin connection.

Checking whether the schema is behind (every command does) imports no Alembic: the head is read
from the revision files and the current revision from the version table.
"""

from __future__ import annotations

import functools
import re
from pathlib import Path
from typing import TYPE_CHECKING

from sqlalchemy import Engine, text

from stella_core.db.schema_sql import APP_ROLE, META_SCHEMA, ORCHESTRATOR_ROLE, OWNER_ROLE

if TYPE_CHECKING:
    from alembic.config import Config

MIGRATIONS = Path(__file__).with_name("migrations")
_REVISION = re.compile(r"^revision\s*(?::[^=]*)?=\s*[\"']([^\"']+)[\"']", re.MULTILINE)
_DOWN = re.compile(r"^down_revision\s*(?::[^=]*)?=\s*(.+)$", re.MULTILINE)
_QUOTED = re.compile(r"[\"']([^\"']+)[\"']")

# Roles and the meta schema must exist before Alembic can write its version table there.
PREPARE = f"""
DO $$
BEGIN
  IF NOT EXISTS (SELECT FROM pg_roles WHERE rolname = '{OWNER_ROLE}') THEN
    CREATE ROLE {OWNER_ROLE} NOLOGIN;
  END IF;
  IF NOT EXISTS (SELECT FROM pg_roles WHERE rolname = '{APP_ROLE}') THEN
    CREATE ROLE {APP_ROLE} NOLOGIN;
  END IF;
  IF NOT EXISTS (SELECT FROM pg_roles WHERE rolname = '{ORCHESTRATOR_ROLE}') THEN
    CREATE ROLE {ORCHESTRATOR_ROLE} NOLOGIN IN ROLE {APP_ROLE};
  END IF;
  IF NOT (SELECT rolsuper FROM pg_roles WHERE rolname = current_user) THEN
    EXECUTE format('GRANT {OWNER_ROLE} TO %I', current_user);
  END IF;
  EXECUTE format('GRANT CREATE, CONNECT ON DATABASE %I TO {OWNER_ROLE}', current_database());
  EXECUTE format('GRANT CONNECT ON DATABASE %I TO {APP_ROLE}', current_database());
END $$;
CREATE SCHEMA IF NOT EXISTS {META_SCHEMA} AUTHORIZATION {OWNER_ROLE};
"""


def _config() -> Config:
    from alembic.config import Config

    cfg = Config()
    cfg.set_main_option("script_location", str(MIGRATIONS))
    return cfg


@functools.cache
def head_revision() -> str | None:
    """The newest revision: the one no other revision revises (Alembic decides otherwise)."""
    revisions: set[str] = set()
    revised: set[str] = set()
    for path in (MIGRATIONS / "versions").glob("*.py"):
        source = path.read_text(encoding="utf-8")
        found = _REVISION.search(source)
        if found is None:
            continue
        revisions.add(found.group(1))
        down = _DOWN.search(source)
        if down is not None:
            revised.update(_QUOTED.findall(down.group(1)))
    heads = revisions - revised
    if len(heads) == 1:
        return heads.pop()
    from alembic.script import ScriptDirectory  # branches or an unusual file: ask Alembic

    return ScriptDirectory.from_config(_config()).get_current_head()


def current_revision(engine: Engine) -> str | None:
    with engine.connect() as conn:
        table = f"{META_SCHEMA}.alembic_version"
        exists = conn.execute(text("SELECT to_regclass(:t)"), {"t": table})
        if exists.scalar() is None:
            return None
        rows = conn.execute(text(f"SELECT version_num FROM {table}")).scalars().all()
        # One row on a linear history; several (branches) never equal the single head.
        return ",".join(sorted(rows)) if rows else None


def upgrade(admin_engine: Engine) -> tuple[str | None, str | None]:
    """Migrate to head; returns (before, after) revisions."""
    from alembic import command

    before = current_revision(admin_engine)
    with admin_engine.begin() as conn:
        # Serialise concurrent upgrades (two processes on first use).
        conn.execute(text("SELECT pg_advisory_xact_lock(hashtextextended('stella.migrate', 0))"))
        conn.execute(text(PREPARE))
        cfg = _config()
        cfg.attributes["connection"] = conn
        command.upgrade(cfg, "head")
    return before, current_revision(admin_engine)


def needs_upgrade(admin_engine: Engine) -> bool:
    return current_revision(admin_engine) != head_revision()
