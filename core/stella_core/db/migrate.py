"""Create or migrate the schema (`stella db upgrade`). Idempotent; needs an admin connection."""

from __future__ import annotations

from pathlib import Path

from alembic import command
from alembic.config import Config
from alembic.runtime.migration import MigrationContext
from alembic.script import ScriptDirectory
from sqlalchemy import Engine, text

from stella_core.db.schema_sql import APP_ROLE, META_SCHEMA, ORCHESTRATOR_ROLE, OWNER_ROLE

MIGRATIONS = Path(__file__).with_name("migrations")

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
    cfg = Config()
    cfg.set_main_option("script_location", str(MIGRATIONS))
    return cfg


def head_revision() -> str | None:
    return ScriptDirectory.from_config(_config()).get_current_head()


def current_revision(engine: Engine) -> str | None:
    with engine.connect() as conn:
        exists = conn.execute(
            text("SELECT to_regclass(:t)"), {"t": f"{META_SCHEMA}.alembic_version"}
        )
        if exists.scalar() is None:
            return None
        return MigrationContext.configure(
            conn, opts={"version_table_schema": META_SCHEMA}
        ).get_current_revision()


def upgrade(admin_engine: Engine) -> tuple[str | None, str | None]:
    """Migrate to head; returns (before, after) revisions."""
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
