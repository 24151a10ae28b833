"""A person's name is unique in their tenant only: login roles are named by tenant and name.

Revision ID: 0013
Revises: 0012

PostgreSQL role names are cluster-wide, so while a person's login role was named after them, a
tenant that added `alice` kept every other tenant from having an `alice`. New login roles are
named `stella_p_<tenant hex>_<name>` (a hash of the name where that is longer than 63 bytes;
see tenancy.service.person_role_name) and `tenancy.users.db_role` maps them to the person.
Existing roles keep their names (profiles on people's machines log in with them).

So nothing may take `session_user` for the person's name any more: what stamped it (created_by,
actor, person, approver, granted_by, the separation-of-duties check) now takes
`tenancy.actor_name()`, which is the person's name (or 'orchestrator'), and approvals are joined
to their people by name. Each function is rewritten from its current definition, replacing only
that expression; lookups of the session's own row (`db_role = session_user`) stay as they are.
"""

from alembic import op

revision = "0013"
down_revision = "0012"
branch_labels = None
depends_on = None

STAMPS = (
    "stella.stamp_created_by",
    "tenancy.audit_chain",
    "release.stamp_release",
    "stella.stamp_person",
    "workflow.stamp_updated",
    "workflow.stamp_approval",
    "promotion.stamp_granter",
    "promotion.check_approval",
    "promotion.counted_approvers",
)

REWRITE = """
DO $do$
DECLARE
  f record;
  body text;
BEGIN
  FOR f IN SELECT p.oid FROM pg_proc p JOIN pg_namespace n ON n.oid = p.pronamespace
            WHERE n.nspname || '.' || p.proname = ANY(%(names)s)
  LOOP
    body := pg_get_functiondef(f.oid);
    body := replace(body, 'db_role = session_user', 'db_role = @session@');
    body := regexp_replace(body, '\\msession_user\\M', 'tenancy.actor_name()', 'g');
    body := replace(body, 'db_role = @session@', 'db_role = session_user');
    body := replace(body, 'u.db_role = a.approver', 'u.name = a.approver');
    EXECUTE body;
  END LOOP;
  FOR f IN SELECT c.oid::regclass AS tbl, a.attname
             FROM pg_attrdef d
             JOIN pg_class c ON c.oid = d.adrelid
             JOIN pg_attribute a ON a.attrelid = d.adrelid AND a.attnum = d.adnum
            WHERE pg_get_expr(d.adbin, d.adrelid) ILIKE 'session_user'
  LOOP
    EXECUTE format('ALTER TABLE %%s ALTER COLUMN %%I SET DEFAULT tenancy.actor_name()',
                   f.tbl, f.attname);
  END LOOP;
END $do$;
"""


def upgrade() -> None:
    names = "ARRAY[" + ", ".join(f"'{n}'" for n in STAMPS) + "]"
    op.execute(REWRITE.replace("%(names)s", names).replace("%%", "%"))


def downgrade() -> None:
    raise NotImplementedError("0012 is not reversible: login roles are named by tenant now")
