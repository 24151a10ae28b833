"""SQL building blocks that every module's migrations reuse: append-only tables, tenant RLS, grants.

Roles (created by the first migration):
- `stella_owner` (NOLOGIN) owns every schema, table and function; migrations act as it.
- `stella_app` (NOLOGIN) holds the runtime privileges; each person is a LOGIN role that is a
  member of it, so `session_user` is always the person's own login, never a shared account
  (named by tenant and person, `tenancy.users.db_role`; `tenancy.actor_name()` is their name).
- `stella_orchestrator` (NOLOGIN, member of `stella_app`) holds what only the orchestrator may
  do: decide promotions, write runs and steps. Each tenant's orchestrator login role is a member.
"""

from __future__ import annotations

OWNER_ROLE = "stella_owner"
APP_ROLE = "stella_app"
ORCHESTRATOR_ROLE = "stella_orchestrator"
META_SCHEMA = "stella"


def append_only(table: str) -> str:
    """Triggers refuse UPDATE, DELETE and TRUNCATE (even for the owner); REVOKE backs them up."""
    name = table.rsplit(".", maxsplit=1)[-1]
    return f"""
CREATE TRIGGER {name}_append_only BEFORE UPDATE OR DELETE ON {table}
  FOR EACH ROW EXECUTE FUNCTION {META_SCHEMA}.refuse_mutation();
CREATE TRIGGER {name}_no_truncate BEFORE TRUNCATE ON {table}
  FOR EACH STATEMENT EXECUTE FUNCTION {META_SCHEMA}.refuse_mutation();
REVOKE UPDATE, DELETE, TRUNCATE ON {table} FROM {APP_ROLE};
"""


def tenant_rls(table: str, *, write_check: str | None = None) -> str:
    """Rows are visible only inside the tenant the session user belongs to and has selected.

    `tenancy.current_tenant()` is NULL when no tenant is set or the person is not a member,
    so every comparison fails and the policy fails closed.
    """
    name = table.rsplit(".", maxsplit=1)[-1]
    check = "tenant_id = (SELECT tenancy.current_tenant())"
    if write_check:
        check = f"{check} AND ({write_check})"
    return f"""
ALTER TABLE {table} ENABLE ROW LEVEL SECURITY;
ALTER TABLE {table} FORCE ROW LEVEL SECURITY;
CREATE POLICY {name}_tenant_read ON {table} FOR SELECT
  USING (tenant_id = (SELECT tenancy.current_tenant()));
CREATE POLICY {name}_tenant_insert ON {table} FOR INSERT WITH CHECK ({check});
CREATE POLICY {name}_tenant_update ON {table} FOR UPDATE
  USING (tenant_id = (SELECT tenancy.current_tenant())) WITH CHECK ({check});
CREATE POLICY {name}_tenant_delete ON {table} FOR DELETE
  USING ({check});
"""


def grant(table: str, privileges: str) -> str:
    return f"GRANT {privileges} ON {table} TO {APP_ROLE};"


def stamp_actor(table: str, column: str = "created_by") -> str:
    """The actor is the database session user, whatever the client sent."""
    name = table.rsplit(".", maxsplit=1)[-1]
    return f"""
CREATE TRIGGER {name}_stamp_actor BEFORE INSERT ON {table}
  FOR EACH ROW EXECUTE FUNCTION {META_SCHEMA}.stamp_{column}();
"""
