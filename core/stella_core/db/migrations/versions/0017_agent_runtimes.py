"""The container runtimes each agent says it can run.

Revision ID: 0017
Revises: 0016

`agent.agents.runtimes`: what the agent reported on its last link, of "podman-compose",
"podman", "docker compose", "docker" (NULL until it has said). The orchestrator writes it (from
the agent's hello); people read it, and the trigger keeps it among what only the orchestrator
changes, like the hostname and the version.
"""

from alembic import op

revision = "0017"
down_revision = "0016"
branch_labels = None
depends_on = None

RUNTIMES = "ARRAY['podman-compose','podman','docker compose','docker']::text[]"


def _check_agent(person_columns: str) -> str:
    """agent.check_agent() of 0016, with the columns a person may not change given."""
    return f"""
CREATE OR REPLACE FUNCTION agent.check_agent() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
  IF TG_OP = 'INSERT' THEN
    NEW.enrolled_at := now();
    NEW.revoked_at := NULL;
    NEW.revoked_by := NULL;
    NEW.revoke_reason := NULL;
    RETURN NEW;
  END IF;
  IF OLD.revoked_at IS NOT NULL AND NEW.revoked_at IS DISTINCT FROM OLD.revoked_at THEN
    RAISE EXCEPTION 'agent %: a revoked agent stays revoked (enroll it again with a new token)',
      OLD.name USING ERRCODE = 'insufficient_privilege';
  END IF;
  IF NEW.generation < OLD.generation OR NEW.generation_in_use < OLD.generation_in_use
     OR NEW.generation_in_use > NEW.generation THEN
    RAISE EXCEPTION 'agent %: a certificate generation never goes back', OLD.name
      USING ERRCODE = 'insufficient_privilege';
  END IF;
  IF (NEW.id, NEW.tenant_id, NEW.key_fingerprint, NEW.token_id, NEW.enrolled_at)
     IS DISTINCT FROM (OLD.id, OLD.tenant_id, OLD.key_fingerprint, OLD.token_id, OLD.enrolled_at)
  THEN
    RAISE EXCEPTION 'agent %: its identity and bound key cannot change', OLD.name
      USING ERRCODE = 'insufficient_privilege';
  END IF;
  IF NOT tenancy.is_orchestrator() THEN
    -- An admin revokes, and that is all a person may change.
    IF ({person_columns.replace("X.", "NEW.")})
       IS DISTINCT FROM
       ({person_columns.replace("X.", "OLD.")})
       OR NEW.revoked_at IS NULL THEN
      RAISE EXCEPTION 'agent %: only the orchestrator changes an agent; an admin may revoke it',
        OLD.name USING ERRCODE = 'insufficient_privilege';
    END IF;
  END IF;
  IF NEW.revoked_at IS NOT NULL AND OLD.revoked_at IS NULL THEN
    NEW.revoked_at := now();
    NEW.revoked_by := tenancy.actor_name();
  END IF;
  RETURN NEW;
END $$;
"""


COLUMNS_0016 = (
    "X.name, X.labels, X.hostname, X.version, X.generation, X.generation_in_use, "
    "X.cert_not_after, X.connected, X.last_heartbeat"
)


def upgrade() -> None:
    op.execute(
        "ALTER TABLE agent.agents ADD COLUMN runtimes text[]"
        f" CHECK (runtimes IS NULL OR (runtimes <@ {RUNTIMES} AND cardinality(runtimes) <= 4))"
    )
    op.execute(_check_agent(COLUMNS_0016 + ", X.runtimes"))


def downgrade() -> None:
    op.execute(_check_agent(COLUMNS_0016))
    op.execute("ALTER TABLE agent.agents DROP COLUMN runtimes")
