"""Deployments and what each target should run (schema `deploy`).

Revision ID: 0018
Revises: 0017

- `deploy.deployments`: one row per deployment (a deploy step's, a rollback's, a remediation's):
  the release, the environment, the strategy, how it ended and its evidence packet. Only the
  orchestrator writes; a row is written once when the deployment starts and updated once when it
  ends (nothing else changes, and an ended row stays ended).
- `deploy.placements`: what each target runs after each deployment that reached it (release,
  digests, lockfile digest), append-only. The newest placement of a target that succeeded is what
  the database says should run there: drift compares against it, rollback reads its history.
- `deploy.tasks.run_id`/`node_id`: the workflow step a task serves, so a run's monitor shows each
  target's progress and log (NULL for tasks no step asked for, e.g. reading a sticker).
"""

from alembic import op

from stella_core.db.schema_sql import APP_ROLE, append_only, tenant_rls

revision = "0018"
down_revision = "0017"
branch_labels = None
depends_on = None

ORCH = "(SELECT tenancy.is_orchestrator())"
KINDS = "'deploy','rollback','remediation'"
STRATEGIES = "'all-at-once','rolling','canary','blue-green'"
DEPLOYMENT_STATUSES = "'running','succeeded','failed','rolled-back','cancelled'"

SQL = f"""
CREATE TABLE deploy.deployments (
  id uuid PRIMARY KEY,
  tenant_id uuid NOT NULL REFERENCES tenancy.tenants(id),
  kind text NOT NULL DEFAULT 'deploy' CHECK (kind IN ({KINDS})),
  environment text NOT NULL,
  environment_id uuid NOT NULL,
  release_id uuid NOT NULL,
  release_name text NOT NULL,
  strategy text NOT NULL DEFAULT 'all-at-once' CHECK (strategy IN ({STRATEGIES})),
  run_id uuid,
  promotion_id uuid,
  status text NOT NULL DEFAULT 'running' CHECK (status IN ({DEPLOYMENT_STATUSES})),
  lockfile_digest text NOT NULL CHECK (lockfile_digest ~ '^sha256:[0-9a-f]{{64}}$'),
  packet_id uuid,
  detail jsonb NOT NULL DEFAULT '{{}}'::jsonb CHECK (jsonb_typeof(detail) = 'object'),
  started_at timestamptz NOT NULL DEFAULT now(),
  finished_at timestamptz,
  created_by text NOT NULL DEFAULT tenancy.actor_name(),
  UNIQUE (id, tenant_id)
);
CREATE INDEX deployments_env ON deploy.deployments (tenant_id, environment, started_at DESC);
GRANT SELECT, INSERT, UPDATE ON deploy.deployments TO {APP_ROLE};
ALTER TABLE deploy.deployments ENABLE ROW LEVEL SECURITY;
ALTER TABLE deploy.deployments FORCE ROW LEVEL SECURITY;
CREATE POLICY deployments_read ON deploy.deployments FOR SELECT
  USING (tenant_id = (SELECT tenancy.current_tenant()));
CREATE POLICY deployments_insert ON deploy.deployments FOR INSERT
  WITH CHECK (tenant_id = (SELECT tenancy.current_tenant()) AND {ORCH});
CREATE POLICY deployments_update ON deploy.deployments FOR UPDATE
  USING (tenant_id = (SELECT tenancy.current_tenant()) AND {ORCH})
  WITH CHECK (tenant_id = (SELECT tenancy.current_tenant()) AND {ORCH});

-- A deployment ends once: its status, end, packet and detail change from running to an end,
-- and nothing that says what it was changes.
CREATE FUNCTION deploy.check_deployment() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
  IF TG_OP = 'INSERT' THEN
    NEW.started_at := now();
    NEW.created_by := tenancy.actor_name();
    NEW.status := 'running';
    NEW.finished_at := NULL;
    RETURN NEW;
  END IF;
  IF (NEW.id, NEW.tenant_id, NEW.kind, NEW.environment, NEW.environment_id, NEW.release_id,
      NEW.release_name, NEW.strategy, NEW.run_id, NEW.promotion_id, NEW.lockfile_digest,
      NEW.started_at, NEW.created_by)
     IS DISTINCT FROM
     (OLD.id, OLD.tenant_id, OLD.kind, OLD.environment, OLD.environment_id, OLD.release_id,
      OLD.release_name, OLD.strategy, OLD.run_id, OLD.promotion_id, OLD.lockfile_digest,
      OLD.started_at, OLD.created_by) THEN
    RAISE EXCEPTION 'deployment %: what it deploys cannot change', OLD.id
      USING ERRCODE = 'insufficient_privilege';
  END IF;
  IF OLD.status <> 'running' THEN
    RAISE EXCEPTION 'deployment %: it is % already', OLD.id, OLD.status
      USING ERRCODE = 'insufficient_privilege';
  END IF;
  IF NEW.status <> 'running' THEN
    NEW.finished_at := now();
  END IF;
  RETURN NEW;
END $$;
CREATE TRIGGER deployments_check BEFORE INSERT OR UPDATE ON deploy.deployments
  FOR EACH ROW EXECUTE FUNCTION deploy.check_deployment();
CREATE TRIGGER deployments_no_delete BEFORE DELETE OR TRUNCATE ON deploy.deployments
  FOR EACH STATEMENT EXECUTE FUNCTION stella.refuse_mutation();

CREATE TABLE deploy.placements (
  id bigserial PRIMARY KEY,
  tenant_id uuid NOT NULL REFERENCES tenancy.tenants(id),
  deployment_id uuid NOT NULL,
  target_id uuid NOT NULL,
  target text NOT NULL,
  environment text NOT NULL,
  release_id uuid NOT NULL,
  release_name text NOT NULL,
  -- component name -> digest, as the target answered and the orchestrator checked
  digests jsonb NOT NULL CHECK (jsonb_typeof(digests) = 'object'),
  lockfile_digest text NOT NULL CHECK (lockfile_digest ~ '^sha256:[0-9a-f]{{64}}$'),
  status text NOT NULL CHECK (status IN ('succeeded', 'failed', 'rolled-back')),
  error text,
  placed_at timestamptz NOT NULL DEFAULT clock_timestamp(),
  FOREIGN KEY (deployment_id, tenant_id) REFERENCES deploy.deployments (id, tenant_id)
);
CREATE INDEX placements_target ON deploy.placements (tenant_id, target_id, id DESC);
GRANT SELECT, INSERT ON deploy.placements TO {APP_ROLE};
GRANT USAGE ON SEQUENCE deploy.placements_id_seq TO {APP_ROLE};
{append_only("deploy.placements")}
{tenant_rls("deploy.placements", write_check=ORCH)}
CREATE FUNCTION deploy.stamp_placement() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
  NEW.placed_at := clock_timestamp();
  RETURN NEW;
END $$;
CREATE TRIGGER placements_stamp BEFORE INSERT ON deploy.placements
  FOR EACH ROW EXECUTE FUNCTION deploy.stamp_placement();

ALTER TABLE deploy.tasks ADD COLUMN run_id uuid, ADD COLUMN node_id text;
CREATE INDEX tasks_run ON deploy.tasks (tenant_id, run_id, created_at) WHERE run_id IS NOT NULL;

-- The run a task serves is part of what was written once.
CREATE OR REPLACE FUNCTION deploy.check_task() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
  IF (NEW.id, NEW.tenant_id, NEW.type, NEW.target, NEW.target_id, NEW.agent_id,
      NEW.idempotency_key, NEW.payload, NEW.envelope, NEW.issued_at, NEW.expires_at,
      NEW.created_at, NEW.run_id, NEW.node_id)
     IS DISTINCT FROM
     (OLD.id, OLD.tenant_id, OLD.type, OLD.target, OLD.target_id, OLD.agent_id,
      OLD.idempotency_key, OLD.payload, OLD.envelope, OLD.issued_at, OLD.expires_at,
      OLD.created_at, OLD.run_id, OLD.node_id) THEN
    RAISE EXCEPTION 'task %: what was signed cannot change', OLD.id
      USING ERRCODE = 'insufficient_privilege';
  END IF;
  IF OLD.status IN ('succeeded', 'failed', 'expired', 'cancelled') THEN
    RAISE EXCEPTION 'task %: it is % already', OLD.id, OLD.status
      USING ERRCODE = 'insufficient_privilege';
  END IF;
  RETURN NEW;
END $$;
"""


def upgrade() -> None:
    op.execute(SQL)


def downgrade() -> None:
    op.execute(
        "DROP TABLE deploy.placements; DROP TABLE deploy.deployments;"
        " DROP FUNCTION deploy.check_deployment(); DROP FUNCTION deploy.stamp_placement();"
        " DROP INDEX deploy.tasks_run; ALTER TABLE deploy.tasks DROP COLUMN run_id,"
        " DROP COLUMN node_id;"
    )
