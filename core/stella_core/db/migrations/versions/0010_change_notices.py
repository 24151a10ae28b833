"""Change notices: every write to what a view shows NOTIFYs the tenant's channel for its topic.

Revision ID: 0010
Revises: 0009

Views (the desk's pages) LISTEN instead of polling, and hear changes made by any process: the CLI,
another desk, `stella serve`. A notice is sent on commit only, once per channel and transaction
(PostgreSQL folds identical notices), so a bulk write costs one notice. PostgreSQL lets any
login LISTEN on any channel, so a notice carries nothing (empty payload, as the workflow
channel): the channel says which tenant and which kind of thing changed; what changed is read
again under row-level security.
"""

from alembic import op

revision = "0010"
down_revision = "0009"
branch_labels = None
depends_on = None

# table -> topic (the topic names are `stella_core.db.changes.Topic`'s values).
TABLES = {
    "release.releases": "releases",
    "release.release_components": "releases",
    "release.components": "releases",
    "release.registries": "releases",
    "env.environments": "environments",
    "env.policy_versions": "environments",
    "env.freezes": "environments",
    "env.freeze_changes": "environments",
    "promotion.promotions": "promotions",
    "promotion.approvals": "promotions",
    "promotion.exceptions": "promotions",
    "tenancy.users": "people",
    "workflow.runs": "runs",
    "workflow.approvals": "runs",
    "workflow.templates": "workflows",
    "workflow.template_versions": "workflows",
    "evidence.packets": "evidence",
}

FUNCTION = """
CREATE FUNCTION stella.announce_change() RETURNS trigger LANGUAGE plpgsql AS $$
DECLARE
  tenant uuid := CASE TG_OP WHEN 'DELETE' THEN OLD.tenant_id ELSE NEW.tenant_id END;
BEGIN
  PERFORM pg_notify('stella_' || TG_ARGV[0] || '_' || replace(tenant::text, '-', ''), '');
  RETURN NULL;
END $$;
"""


def _trigger(table: str) -> str:
    return table.rsplit(".", maxsplit=1)[-1] + "_announce"


def upgrade() -> None:
    statements = [FUNCTION]
    for table, topic in TABLES.items():
        statements.append(
            f"CREATE TRIGGER {_trigger(table)} AFTER INSERT OR UPDATE OR DELETE ON {table}"
            f" FOR EACH ROW EXECUTE FUNCTION stella.announce_change('{topic}');"
        )
    op.execute("\n".join(statements))


def downgrade() -> None:
    statements = [f"DROP TRIGGER {_trigger(table)} ON {table};" for table in TABLES]
    statements.append("DROP FUNCTION stella.announce_change();")
    op.execute("\n".join(statements))
