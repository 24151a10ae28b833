"""Workflows can be renamed and retired (the desk's library: Rename…, Delete…).

Revision ID: 0011
Revises: 0010

A workflow's versions are append-only and runs and evidence name them, so a workflow is never
deleted: it is retired (`retired_at`, `retired_by`), leaves the library and can no longer be
started by name or chosen for an environment; its versions stay readable for the runs that used
them. Renaming changes the template row's name; versions keep the document they were stored
with, and runs keep the name they ran under. Release managers and admins only (the table's
existing write policy).
"""

from alembic import op

from stella_core.db.schema_sql import APP_ROLE

revision = "0011"
down_revision = "0010"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.execute(
        f"""
ALTER TABLE workflow.templates ADD COLUMN retired_at timestamptz;
ALTER TABLE workflow.templates ADD COLUMN retired_by text;
GRANT UPDATE (name, retired_at, retired_by) ON workflow.templates TO {APP_ROLE};

-- Who retired a workflow and when is the database's word, not the client's.
CREATE FUNCTION workflow.stamp_retired() RETURNS trigger
LANGUAGE plpgsql AS $$
BEGIN
  IF NEW.retired_at IS NULL THEN
    NEW.retired_by := NULL;
  ELSIF OLD.retired_at IS NULL THEN
    NEW.retired_at := now();
    NEW.retired_by := tenancy.actor_name();
  ELSE
    NEW.retired_at := OLD.retired_at;
    NEW.retired_by := OLD.retired_by;
  END IF;
  RETURN NEW;
END $$;
CREATE TRIGGER templates_stamp_retired BEFORE UPDATE ON workflow.templates
  FOR EACH ROW EXECUTE FUNCTION workflow.stamp_retired();
"""
    )


def downgrade() -> None:
    op.execute(
        f"""
DROP TRIGGER templates_stamp_retired ON workflow.templates;
DROP FUNCTION workflow.stamp_retired();
REVOKE UPDATE (name, retired_at, retired_by) ON workflow.templates FROM {APP_ROLE};
ALTER TABLE workflow.templates DROP COLUMN retired_by;
ALTER TABLE workflow.templates DROP COLUMN retired_at;
"""
    )
