"""Tenancy lookups in PL/pgSQL: same semantics, cached plans.

RLS policies call `tenancy.current_tenant()` and `tenancy.current_product_role()` several times
per statement. As SQL functions with `SET search_path` they cannot be inlined and are planned at
every call; PL/pgSQL caches the plan per session (measured +30-40% on the engine's hot path).

Revision ID: 0003
Revises: 0002
"""

from alembic import op

revision = "0003"
down_revision = "0002"
branch_labels = None
depends_on = None

UPGRADE = """
CREATE OR REPLACE FUNCTION tenancy.current_tenant() RETURNS uuid
LANGUAGE plpgsql STABLE SECURITY DEFINER SET search_path = pg_catalog AS $$
DECLARE
  found uuid;
BEGIN
  SELECT u.tenant_id INTO found FROM tenancy.users u
   WHERE u.db_role = session_user AND NOT u.disabled
     AND u.tenant_id = NULLIF(current_setting('app.tenant_id', true), '')::uuid;
  RETURN found;
END $$;
CREATE OR REPLACE FUNCTION tenancy.current_product_role() RETURNS text
LANGUAGE plpgsql STABLE SECURITY DEFINER SET search_path = pg_catalog AS $$
DECLARE
  found text;
BEGIN
  SELECT u.role INTO found FROM tenancy.users u
   WHERE u.db_role = session_user AND NOT u.disabled
     AND u.tenant_id = NULLIF(current_setting('app.tenant_id', true), '')::uuid;
  RETURN found;
END $$;
"""

DOWNGRADE = """
CREATE OR REPLACE FUNCTION tenancy.current_tenant() RETURNS uuid
LANGUAGE sql STABLE SECURITY DEFINER SET search_path = pg_catalog AS $$
  SELECT u.tenant_id FROM tenancy.users u
   WHERE u.db_role = session_user AND NOT u.disabled
     AND u.tenant_id = NULLIF(current_setting('app.tenant_id', true), '')::uuid
$$;
CREATE OR REPLACE FUNCTION tenancy.current_product_role() RETURNS text
LANGUAGE sql STABLE SECURITY DEFINER SET search_path = pg_catalog AS $$
  SELECT u.role FROM tenancy.users u
   WHERE u.db_role = session_user AND NOT u.disabled
     AND u.tenant_id = NULLIF(current_setting('app.tenant_id', true), '')::uuid
$$;
"""


def upgrade() -> None:
    op.execute(UPGRADE)


def downgrade() -> None:
    op.execute(DOWNGRADE)
