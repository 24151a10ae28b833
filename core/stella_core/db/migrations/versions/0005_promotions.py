"""Promotions: environment policy, freeze windows, promotions, signed approvals.

Revision ID: 0005
Revises: 0004

The database is the last line of separation of duties (DESIGN.md decision 9):
- an approval's approver is `session_user`, whatever the client sent, and a trigger refuses it
  when the promotion asks for separation of duties and the approver requested the promotion,
  or when that person has already decided it;
- a promotion's status moves only along the state machine, and into `approved` only when enough
  distinct eligible approvals exist (signatures are checked by the service and the evidence);
- a workflow run may skip its approval steps (`approved_by`) only as the run of an approved
  promotion, and approvers may start that run.
"""

from alembic import op

from stella_core.db.schema_sql import APP_ROLE, append_only, tenant_rls

revision = "0005"
down_revision = "0004"
branch_labels = None
depends_on = None

WRITERS = "(SELECT tenancy.has_role('release-manager', 'admin'))"
MEMBERS = "(SELECT NOT tenancy.has_role('auditor'))"

STATUSES = (
    "'requested', 'blocked', 'awaiting_approval', 'approved', 'deploying', 'deployed', "
    "'rejected', 'cancelled', 'failed', 'rolled_back'"
)
# from -> to, as the service's state machine (promotions.model.TRANSITIONS) has them.
TRANSITIONS = (
    "('requested','blocked'),('requested','awaiting_approval'),('requested','approved'),"
    "('requested','rejected'),('requested','cancelled'),"
    "('blocked','blocked'),('blocked','awaiting_approval'),('blocked','approved'),"
    "('blocked','rejected'),('blocked','cancelled'),"
    "('awaiting_approval','awaiting_approval'),('awaiting_approval','blocked'),"
    "('awaiting_approval','approved'),('awaiting_approval','rejected'),"
    "('awaiting_approval','cancelled'),"
    "('approved','deploying'),('approved','deployed'),('approved','cancelled'),"
    "('approved','failed'),"
    "('deploying','deployed'),('deploying','failed'),('deploying','rolled_back'),"
    "('deploying','cancelled')"
)

UPGRADE = f"""
ALTER TABLE env.environments
  ADD COLUMN workflow text,
  ADD COLUMN approver_roles text[] NOT NULL DEFAULT '{{approver,admin}}',
  ADD COLUMN approver_persons text[] NOT NULL DEFAULT '{{}}',
  ADD COLUMN quorum jsonb NOT NULL DEFAULT '{{}}'::jsonb,
  ADD COLUMN schedule jsonb,
  ADD COLUMN auto_promote_from text;

CREATE TABLE env.freezes (
  id uuid PRIMARY KEY DEFAULT gen_random_uuid(),
  tenant_id uuid NOT NULL REFERENCES tenancy.tenants(id),
  environment text NOT NULL,
  starts_at timestamptz NOT NULL,
  ends_at timestamptz NOT NULL,
  reason text NOT NULL CHECK (length(reason) > 0),
  allow text[] NOT NULL DEFAULT '{{}}',
  created_at timestamptz NOT NULL DEFAULT now(),
  created_by text NOT NULL DEFAULT session_user,
  CHECK (ends_at > starts_at),
  FOREIGN KEY (tenant_id, environment) REFERENCES env.environments (tenant_id, name)
);
CREATE INDEX freezes_env ON env.freezes (tenant_id, environment, ends_at);
CREATE TRIGGER freezes_stamp_actor BEFORE INSERT ON env.freezes
  FOR EACH ROW EXECUTE FUNCTION stella.stamp_created_by();
GRANT SELECT, INSERT ON env.freezes TO {APP_ROLE};
{append_only("env.freezes")}
{tenant_rls("env.freezes", write_check=WRITERS)}

CREATE SCHEMA promotion;
GRANT USAGE ON SCHEMA promotion TO {APP_ROLE};

CREATE TABLE promotion.promotions (
  id uuid PRIMARY KEY DEFAULT gen_random_uuid(),
  tenant_id uuid NOT NULL REFERENCES tenancy.tenants(id),
  release_id uuid NOT NULL REFERENCES release.releases(id),
  release_name text NOT NULL,
  components jsonb NOT NULL,
  environment text NOT NULL,
  status text NOT NULL DEFAULT 'requested' CHECK (status IN ({STATUSES})),
  reason text NOT NULL DEFAULT '',
  required_approvals integer NOT NULL CHECK (required_approvals >= 0),
  separation_of_duties boolean NOT NULL,
  policy jsonb NOT NULL,
  last_decision jsonb,
  status_reason text,
  run_id uuid,
  requested_by text NOT NULL DEFAULT session_user,
  requested_at timestamptz NOT NULL DEFAULT now(),
  updated_at timestamptz NOT NULL DEFAULT now(),
  UNIQUE (id, tenant_id),
  FOREIGN KEY (tenant_id, environment) REFERENCES env.environments (tenant_id, name)
);
CREATE INDEX promotions_env ON promotion.promotions (tenant_id, environment, status);
CREATE INDEX promotions_release ON promotion.promotions (tenant_id, release_name);
CREATE FUNCTION promotion.stamp_requester() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
  NEW.requested_by := session_user;
  NEW.status := 'requested';
  RETURN NEW;
END $$;
CREATE TRIGGER promotions_stamp BEFORE INSERT ON promotion.promotions
  FOR EACH ROW EXECUTE FUNCTION promotion.stamp_requester();

CREATE TABLE promotion.approvals (
  id uuid PRIMARY KEY DEFAULT gen_random_uuid(),
  tenant_id uuid NOT NULL,
  promotion_id uuid NOT NULL,
  approver text NOT NULL DEFAULT session_user,
  role text,
  decision text NOT NULL CHECK (decision IN ('approve', 'reject')),
  comment text NOT NULL DEFAULT '',
  packet_id uuid REFERENCES evidence.packets (id),
  at timestamptz NOT NULL DEFAULT now(),
  UNIQUE (promotion_id, approver),
  FOREIGN KEY (promotion_id, tenant_id) REFERENCES promotion.promotions (id, tenant_id)
);

-- Separation of duties where no client can reach: the approver is the session user, the
-- requester cannot decide a promotion that asks for it, nobody decides twice (the UNIQUE),
-- and only open promotions take decisions.
CREATE FUNCTION promotion.check_approval() RETURNS trigger
LANGUAGE plpgsql SECURITY DEFINER SET search_path = pg_catalog AS $$
DECLARE
  p record;
BEGIN
  NEW.approver := session_user;
  NEW.at := clock_timestamp();
  SELECT pr.requested_by, pr.separation_of_duties, pr.status, pr.tenant_id INTO p
    FROM promotion.promotions pr WHERE pr.id = NEW.promotion_id;
  IF NOT FOUND OR p.tenant_id <> NEW.tenant_id THEN
    RAISE EXCEPTION 'no promotion %', NEW.promotion_id USING ERRCODE = 'foreign_key_violation';
  END IF;
  IF p.separation_of_duties AND p.requested_by = session_user THEN
    RAISE EXCEPTION 'separation of duties: % requested promotion % and cannot decide it',
      session_user, NEW.promotion_id USING ERRCODE = 'insufficient_privilege';
  END IF;
  IF p.status NOT IN ('requested', 'blocked', 'awaiting_approval') THEN
    RAISE EXCEPTION 'promotion % is % and takes no more decisions', NEW.promotion_id, p.status
      USING ERRCODE = 'check_violation';
  END IF;
  SELECT u.role INTO NEW.role FROM tenancy.users u
   WHERE u.db_role = session_user AND u.tenant_id = NEW.tenant_id;
  RETURN NEW;
END $$;
CREATE TRIGGER approvals_check BEFORE INSERT ON promotion.approvals
  FOR EACH ROW EXECUTE FUNCTION promotion.check_approval();
GRANT SELECT, INSERT ON promotion.approvals TO {APP_ROLE};
{append_only("promotion.approvals")}
{tenant_rls("promotion.approvals", write_check=MEMBERS)}

-- An admin's signed, expiring exception: one release past one gate of one environment.
CREATE TABLE promotion.exceptions (
  id uuid PRIMARY KEY DEFAULT gen_random_uuid(),
  tenant_id uuid NOT NULL REFERENCES tenancy.tenants(id),
  environment text NOT NULL,
  release_name text NOT NULL,
  gate text NOT NULL CHECK (gate IN ('predecessor')),
  reason text NOT NULL CHECK (length(reason) > 0),
  expires_at timestamptz NOT NULL,
  packet_id uuid NOT NULL REFERENCES evidence.packets (id),
  granted_by text NOT NULL DEFAULT session_user,
  granted_at timestamptz NOT NULL DEFAULT now(),
  CHECK (expires_at > granted_at),
  FOREIGN KEY (tenant_id, environment) REFERENCES env.environments (tenant_id, name)
);
CREATE FUNCTION promotion.stamp_granter() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
  NEW.granted_by := session_user;
  NEW.granted_at := clock_timestamp();
  RETURN NEW;
END $$;
CREATE TRIGGER exceptions_stamp BEFORE INSERT ON promotion.exceptions
  FOR EACH ROW EXECUTE FUNCTION promotion.stamp_granter();
GRANT SELECT, INSERT ON promotion.exceptions TO {APP_ROLE};
{append_only("promotion.exceptions")}
{tenant_rls("promotion.exceptions", write_check="(SELECT tenancy.has_role('admin'))")}

-- Counted approvals as the database can see them: distinct approvers who approved, without the
-- requester where separation of duties applies, and no rejection.
CREATE FUNCTION promotion.enough_approvals(promotion uuid) RETURNS boolean
LANGUAGE plpgsql STABLE SECURITY DEFINER SET search_path = pg_catalog AS $$
DECLARE
  p record;
  counted integer;
BEGIN
  SELECT pr.requested_by, pr.separation_of_duties, pr.required_approvals INTO p
    FROM promotion.promotions pr WHERE pr.id = promotion;
  IF EXISTS (SELECT 1 FROM promotion.approvals a
              WHERE a.promotion_id = promotion AND a.decision = 'reject') THEN
    RETURN false;
  END IF;
  -- An approval counts only with its evidence: an approval packet about this promotion,
  -- signed (by key id) with a key registered to the approver. Only the approver's own session
  -- can append such a packet, so nobody can count for someone else even with raw SQL; the
  -- signature itself is checked by the service and by every verifier.
  SELECT count(DISTINCT a.approver) INTO counted FROM promotion.approvals a
   WHERE a.promotion_id = promotion AND a.decision = 'approve'
     AND NOT (p.separation_of_duties AND a.approver = p.requested_by)
     AND EXISTS (SELECT 1 FROM evidence.packets e
                   JOIN tenancy.signing_keys k
                     ON k.tenant_id = e.tenant_id AND k.key_id = e.signer_key_id
                  WHERE e.id = a.packet_id AND e.type = 'approval'
                    AND e.promotion_id = a.promotion_id AND k.owner = a.approver);
  RETURN counted >= p.required_approvals;
END $$;

CREATE FUNCTION promotion.check_transition() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
  IF NEW.id <> OLD.id OR NEW.tenant_id <> OLD.tenant_id OR NEW.release_id <> OLD.release_id
     OR NEW.components <> OLD.components OR NEW.environment <> OLD.environment
     OR NEW.requested_by <> OLD.requested_by OR NEW.requested_at <> OLD.requested_at
     OR NEW.policy <> OLD.policy OR NEW.required_approvals <> OLD.required_approvals
     OR NEW.separation_of_duties <> OLD.separation_of_duties THEN
    RAISE EXCEPTION 'promotion %: only its status and outcome may change', OLD.id
      USING ERRCODE = 'insufficient_privilege';
  END IF;
  IF NEW.status <> OLD.status OR NEW.status IN ('blocked', 'awaiting_approval') THEN
    IF (OLD.status, NEW.status) NOT IN (VALUES {TRANSITIONS}) THEN
      RAISE EXCEPTION 'promotion % cannot go from % to %', OLD.id, OLD.status, NEW.status
        USING ERRCODE = 'check_violation';
    END IF;
  END IF;
  IF NEW.status = 'approved' AND OLD.status <> 'approved'
     AND NOT promotion.enough_approvals(OLD.id) THEN
    RAISE EXCEPTION 'promotion % does not have the approvals it needs', OLD.id
      USING ERRCODE = 'insufficient_privilege';
  END IF;
  NEW.updated_at := clock_timestamp();
  RETURN NEW;
END $$;
CREATE TRIGGER promotions_transition BEFORE UPDATE ON promotion.promotions
  FOR EACH ROW EXECUTE FUNCTION promotion.check_transition();
GRANT SELECT, INSERT ON promotion.promotions TO {APP_ROLE};
GRANT UPDATE (status, last_decision, status_reason, run_id, updated_at)
  ON promotion.promotions TO {APP_ROLE};
CREATE TRIGGER promotions_no_delete BEFORE DELETE ON promotion.promotions
  FOR EACH ROW EXECUTE FUNCTION stella.refuse_mutation();
CREATE TRIGGER promotions_no_truncate BEFORE TRUNCATE ON promotion.promotions
  FOR EACH STATEMENT EXECUTE FUNCTION stella.refuse_mutation();
{tenant_rls("promotion.promotions", write_check=MEMBERS)}
CREATE POLICY promotions_request_writers ON promotion.promotions AS RESTRICTIVE FOR INSERT
  WITH CHECK ({WRITERS});

-- A promotion's run: approval steps are satisfied by the promotion's approvals.
ALTER TABLE workflow.runs
  ADD COLUMN promotion_id uuid,
  ADD COLUMN approved_by text[],
  ADD FOREIGN KEY (promotion_id, tenant_id) REFERENCES promotion.promotions (id, tenant_id);
CREATE FUNCTION promotion.run_may_start(promotion uuid) RETURNS boolean
LANGUAGE plpgsql STABLE SECURITY DEFINER SET search_path = pg_catalog AS $$
BEGIN
  RETURN EXISTS (SELECT 1 FROM promotion.promotions p
                  WHERE p.id = promotion AND p.status = 'approved');
END $$;
CREATE FUNCTION workflow.check_promotion_run() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
  IF TG_OP = 'INSERT' AND NEW.approved_by IS NOT NULL
     AND (NEW.promotion_id IS NULL OR NOT promotion.run_may_start(NEW.promotion_id)) THEN
    RAISE EXCEPTION 'only the run of an approved promotion may carry its approvals'
      USING ERRCODE = 'insufficient_privilege';
  END IF;
  IF TG_OP = 'UPDATE' AND (NEW.approved_by IS DISTINCT FROM OLD.approved_by
                           OR NEW.promotion_id IS DISTINCT FROM OLD.promotion_id) THEN
    RAISE EXCEPTION 'a run''s promotion and approvals are fixed when it starts'
      USING ERRCODE = 'insufficient_privilege';
  END IF;
  RETURN NEW;
END $$;
CREATE TRIGGER runs_promotion BEFORE INSERT OR UPDATE ON workflow.runs
  FOR EACH ROW EXECUTE FUNCTION workflow.check_promotion_run();
DROP POLICY runs_start_writers ON workflow.runs;
CREATE POLICY runs_start_writers ON workflow.runs AS RESTRICTIVE FOR INSERT
  WITH CHECK ({WRITERS} OR (promotion_id IS NOT NULL AND promotion.run_may_start(promotion_id)));
"""


def upgrade() -> None:
    op.execute(UPGRADE)


def downgrade() -> None:
    op.execute(
        f"""
DROP POLICY runs_start_writers ON workflow.runs;
CREATE POLICY runs_start_writers ON workflow.runs AS RESTRICTIVE FOR INSERT WITH CHECK ({WRITERS});
DROP TRIGGER runs_promotion ON workflow.runs;
DROP FUNCTION workflow.check_promotion_run();
ALTER TABLE workflow.runs DROP COLUMN promotion_id, DROP COLUMN approved_by;
DROP SCHEMA promotion CASCADE;
DROP TABLE env.freezes;
ALTER TABLE env.environments DROP COLUMN workflow, DROP COLUMN approver_roles,
  DROP COLUMN approver_persons, DROP COLUMN quorum, DROP COLUMN schedule,
  DROP COLUMN auto_promote_from;
"""
    )
