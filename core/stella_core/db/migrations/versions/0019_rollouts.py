"""Rollouts: canary rung approvals and the live blue-green group.

Revision ID: 0019
Revises: 0018

- `promotion.rung_approvals`: a person's approval to take a canary deployment of a promotion
  past rung N. Like a promotion approval it is the person's own (stamped, never the client's
  claim), signed (an approval packet of theirs about this promotion), eligible under the
  promotion's own policy, and never the requester's: a canary's approval is a second pair of
  eyes whatever the environment's separation-of-duties setting. Only while the promotion is
  deploying. Append-only. The orchestrator verifies each one's signature before it counts.
- `deploy.group_switches`: which blue-green group of an environment is live, one row per switch
  (the newest says), written by the orchestrator only, append-only.
"""

from alembic import op

from stella_core.db.schema_sql import APP_ROLE, append_only, tenant_rls

revision = "0019"
down_revision = "0018"
branch_labels = None
depends_on = None

ORCH = "(SELECT tenancy.is_orchestrator())"
MEMBERS = "(SELECT NOT tenancy.has_role('auditor'))"

SQL = f"""
CREATE TABLE promotion.rung_approvals (
  id uuid PRIMARY KEY DEFAULT gen_random_uuid(),
  tenant_id uuid NOT NULL,
  promotion_id uuid NOT NULL,
  rung integer NOT NULL CHECK (rung BETWEEN 1 AND 10),
  approver text NOT NULL DEFAULT tenancy.actor_name(),
  role text,
  comment text NOT NULL DEFAULT '' CHECK (length(comment) <= 4000),
  packet_id uuid NOT NULL,
  at timestamptz NOT NULL DEFAULT clock_timestamp(),
  UNIQUE (promotion_id, rung, approver),
  FOREIGN KEY (promotion_id, tenant_id) REFERENCES promotion.promotions (id, tenant_id)
);
CREATE FUNCTION promotion.check_rung_approval() RETURNS trigger
LANGUAGE plpgsql SECURITY DEFINER SET search_path = pg_catalog AS $$
DECLARE
  p record;
  me record;
BEGIN
  NEW.approver := tenancy.actor_name();
  NEW.at := clock_timestamp();
  IF tenancy.is_orchestrator() THEN
    RAISE EXCEPTION 'the orchestrator approves nothing' USING ERRCODE = 'insufficient_privilege';
  END IF;
  SELECT pr.requested_by, pr.status, pr.tenant_id, pr.policy INTO p
    FROM promotion.promotions pr WHERE pr.id = NEW.promotion_id;
  IF NOT FOUND OR p.tenant_id <> NEW.tenant_id THEN
    RAISE EXCEPTION 'no promotion %', NEW.promotion_id USING ERRCODE = 'foreign_key_violation';
  END IF;
  IF p.requested_by = tenancy.actor_name() THEN
    RAISE EXCEPTION 'separation of duties: % requested promotion % and cannot approve its canary',
      tenancy.actor_name(), NEW.promotion_id USING ERRCODE = 'insufficient_privilege';
  END IF;
  IF p.status <> 'deploying' THEN
    RAISE EXCEPTION 'promotion % is %, not deploying', NEW.promotion_id, p.status
      USING ERRCODE = 'check_violation';
  END IF;
  SELECT u.name, u.role INTO me FROM tenancy.users u
   WHERE u.db_role = session_user AND u.tenant_id = NEW.tenant_id AND NOT u.disabled;
  IF NOT FOUND OR NOT promotion.eligible(p.policy, me.name, me.role) THEN
    RAISE EXCEPTION '% is not eligible to approve promotion %', tenancy.actor_name(),
      NEW.promotion_id USING ERRCODE = 'insufficient_privilege';
  END IF;
  NEW.role := me.role;
  IF NOT EXISTS (
       SELECT 1 FROM evidence.packets e
         JOIN tenancy.signing_keys k ON k.tenant_id = e.tenant_id AND k.key_id = e.signer_key_id
        WHERE e.id = NEW.packet_id AND e.tenant_id = NEW.tenant_id AND e.type = 'approval'
          AND e.promotion_id = NEW.promotion_id AND k.owner_kind = 'person'
          AND k.owner = me.name) THEN
    RAISE EXCEPTION 'a canary approval of promotion % needs an approval packet signed with a key '
      'of %', NEW.promotion_id, me.name USING ERRCODE = 'insufficient_privilege';
  END IF;
  RETURN NEW;
END $$;
CREATE TRIGGER rung_approvals_check BEFORE INSERT ON promotion.rung_approvals
  FOR EACH ROW EXECUTE FUNCTION promotion.check_rung_approval();
GRANT SELECT, INSERT ON promotion.rung_approvals TO {APP_ROLE};
{append_only("promotion.rung_approvals")}
{tenant_rls("promotion.rung_approvals", write_check=MEMBERS)}

CREATE TABLE deploy.group_switches (
  id bigserial PRIMARY KEY,
  tenant_id uuid NOT NULL REFERENCES tenancy.tenants(id),
  environment text NOT NULL,
  live_group text NOT NULL,
  previous_group text,
  deployment_id uuid NOT NULL,
  run_id uuid,
  switched_at timestamptz NOT NULL DEFAULT clock_timestamp(),
  switched_by text NOT NULL DEFAULT tenancy.actor_name(),
  UNIQUE (tenant_id, deployment_id),
  FOREIGN KEY (deployment_id, tenant_id) REFERENCES deploy.deployments (id, tenant_id)
);
CREATE INDEX group_switches_env ON deploy.group_switches (tenant_id, environment, id DESC);
GRANT SELECT, INSERT ON deploy.group_switches TO {APP_ROLE};
GRANT USAGE ON SEQUENCE deploy.group_switches_id_seq TO {APP_ROLE};
{append_only("deploy.group_switches")}
{tenant_rls("deploy.group_switches", write_check=ORCH)}
CREATE FUNCTION deploy.stamp_group_switch() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
  NEW.switched_at := clock_timestamp();
  NEW.switched_by := tenancy.actor_name();
  RETURN NEW;
END $$;
CREATE TRIGGER group_switches_stamp BEFORE INSERT ON deploy.group_switches
  FOR EACH ROW EXECUTE FUNCTION deploy.stamp_group_switch();
"""


def upgrade() -> None:
    op.execute(SQL)


def downgrade() -> None:
    op.execute(
        "DROP TABLE deploy.group_switches; DROP FUNCTION deploy.stamp_group_switch();"
        " DROP TABLE promotion.rung_approvals; DROP FUNCTION promotion.check_rung_approval();"
    )
