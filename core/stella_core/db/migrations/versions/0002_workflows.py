"""Workflows: templates with immutable versions, runs, step runs, the run log, approvals, settings.

Revision ID: 0002
Revises: 0001

Concurrency model (see `stella_core.workflows.engine`): workers claim steps with
`FOR UPDATE SKIP LOCKED` and a lease; every state change of a run happens while holding that
run's row lock (`SELECT ... FOR NO KEY UPDATE`), which also makes the run log's `seq` gap-free
and in commit order. A NOTIFY on the tenant's channel wakes workers when steps become ready.
"""

from alembic import op

from stella_core.db.schema_sql import APP_ROLE, append_only, grant, stamp_actor, tenant_rls

revision = "0002"
down_revision = "0001"
branch_labels = None
depends_on = None

WRITERS = "(SELECT tenancy.has_role('release-manager', 'admin'))"
# Workers act as the person who runs `stella serve`, approvals as the approver: any member but an
# auditor may move a run along. Starting runs is narrowed further by a restrictive policy.
MEMBERS = "(SELECT NOT tenancy.has_role('auditor'))"
ADMINS = "(SELECT tenancy.has_role('admin'))"

RUN_STATUSES = (
    "'pending', 'running', 'waiting', 'succeeded', 'failed', 'cancelled', 'timed_out', "
    "'rolling_back', 'rolled_back'"
)
STEP_STATUSES = (
    "'pending', 'ready', 'running', 'waiting', 'succeeded', 'failed', 'continued', 'skipped', "
    "'cancelled', 'timed_out'"
)

WORKFLOW = f"""
CREATE SCHEMA workflow;
GRANT USAGE ON SCHEMA workflow TO {APP_ROLE};

CREATE FUNCTION workflow.stamp_updated() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
  NEW.updated_by := session_user;
  NEW.updated_at := now();
  RETURN NEW;
END $$;

-- The log's clock and actor come from the database, whatever the client sent.
CREATE FUNCTION workflow.stamp_event() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
  NEW.at := clock_timestamp();
  NEW.actor := session_user;
  RETURN NEW;
END $$;

CREATE FUNCTION workflow.stamp_approval() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
  NEW.person := session_user;
  NEW.product_role := COALESCE(tenancy.current_product_role(), '');
  NEW.at := clock_timestamp();
  RETURN NEW;
END $$;

CREATE TABLE workflow.templates (
  id uuid PRIMARY KEY DEFAULT gen_random_uuid(),
  tenant_id uuid NOT NULL REFERENCES tenancy.tenants(id),
  name text NOT NULL,
  created_at timestamptz NOT NULL DEFAULT now(),
  created_by text NOT NULL DEFAULT session_user,
  UNIQUE (tenant_id, name),
  UNIQUE (id, tenant_id)
);
{grant("workflow.templates", "SELECT, INSERT")}
{tenant_rls("workflow.templates", write_check=WRITERS)}
{stamp_actor("workflow.templates")}

CREATE TABLE workflow.template_versions (
  id uuid PRIMARY KEY DEFAULT gen_random_uuid(),
  tenant_id uuid NOT NULL,
  template_id uuid NOT NULL,
  version integer NOT NULL CHECK (version >= 1),
  document jsonb NOT NULL,
  digest text NOT NULL CHECK (digest ~ '^sha256:[a-f0-9]{{64}}$'),
  created_at timestamptz NOT NULL DEFAULT now(),
  created_by text NOT NULL DEFAULT session_user,
  UNIQUE (template_id, version),
  UNIQUE (id, tenant_id),
  FOREIGN KEY (template_id, tenant_id) REFERENCES workflow.templates(id, tenant_id)
);
{grant("workflow.template_versions", "SELECT, INSERT")}
{append_only("workflow.template_versions")}
{tenant_rls("workflow.template_versions", write_check=WRITERS)}
{stamp_actor("workflow.template_versions")}

CREATE TABLE workflow.runs (
  id uuid PRIMARY KEY DEFAULT gen_random_uuid(),
  tenant_id uuid NOT NULL,
  template_version_id uuid NOT NULL,
  template_name text NOT NULL,
  template_version integer NOT NULL,
  release_id uuid REFERENCES release.releases(id),
  release jsonb,
  inputs jsonb NOT NULL DEFAULT '{{}}'::jsonb,
  status text NOT NULL DEFAULT 'pending' CHECK (status IN ({RUN_STATUSES})),
  phase text NOT NULL DEFAULT 'main' CHECK (phase IN ('main', 'rollback')),
  cancel_requested boolean NOT NULL DEFAULT false,
  rollback_from text,
  error text,
  created_at timestamptz NOT NULL DEFAULT now(),
  created_by text NOT NULL DEFAULT session_user,
  started_at timestamptz,
  finished_at timestamptz,
  UNIQUE (id, tenant_id),
  FOREIGN KEY (template_version_id, tenant_id)
    REFERENCES workflow.template_versions(id, tenant_id)
);
CREATE INDEX runs_created ON workflow.runs (tenant_id, created_at DESC);
{grant("workflow.runs", "SELECT, INSERT, UPDATE")}
{tenant_rls("workflow.runs", write_check=MEMBERS)}
{stamp_actor("workflow.runs")}
CREATE POLICY runs_start_writers ON workflow.runs AS RESTRICTIVE FOR INSERT
  WITH CHECK ({WRITERS});

CREATE TABLE workflow.step_runs (
  run_id uuid NOT NULL,
  tenant_id uuid NOT NULL,
  node_id text NOT NULL,
  step_type text NOT NULL,
  rollback boolean NOT NULL DEFAULT false,
  status text NOT NULL DEFAULT 'pending' CHECK (status IN ({STEP_STATUSES})),
  attempts integer NOT NULL DEFAULT 0,
  lost_leases integer NOT NULL DEFAULT 0,
  -- Dependencies (same phase) not yet finished, and those that finished succeeded/continued:
  -- a step is ready when none is open and one is live, skipped when none is live.
  deps_total integer NOT NULL,
  deps_open integer NOT NULL,
  deps_live integer NOT NULL DEFAULT 0,
  inputs jsonb,
  outputs jsonb,
  error text,
  lease_owner text,
  lease_until timestamptz,
  not_before timestamptz,
  wake_at timestamptz,
  resume boolean NOT NULL DEFAULT false,
  started_at timestamptz,
  finished_at timestamptz,
  idempotency_key text NOT NULL,
  PRIMARY KEY (run_id, node_id),
  FOREIGN KEY (run_id, tenant_id) REFERENCES workflow.runs(id, tenant_id)
);
-- Small indexes over the few rows that are alive: claiming, and "is anything left to do".
CREATE INDEX step_runs_claimable ON workflow.step_runs (tenant_id)
  WHERE status IN ('ready', 'running', 'waiting');
CREATE INDEX step_runs_open ON workflow.step_runs (run_id, rollback)
  WHERE status IN ('pending', 'ready', 'running', 'waiting');
{grant("workflow.step_runs", "SELECT, INSERT, UPDATE")}
{tenant_rls("workflow.step_runs", write_check=MEMBERS)}

CREATE TABLE workflow.run_events (
  run_id uuid NOT NULL,
  tenant_id uuid NOT NULL,
  seq bigint NOT NULL,
  at timestamptz NOT NULL DEFAULT clock_timestamp(),
  node_id text,
  kind text NOT NULL,
  details jsonb NOT NULL DEFAULT '{{}}'::jsonb,
  actor text NOT NULL DEFAULT session_user,
  PRIMARY KEY (run_id, seq),
  FOREIGN KEY (run_id, tenant_id) REFERENCES workflow.runs(id, tenant_id)
);
CREATE TRIGGER run_events_stamp BEFORE INSERT ON workflow.run_events
  FOR EACH ROW EXECUTE FUNCTION workflow.stamp_event();
{grant("workflow.run_events", "SELECT, INSERT")}
{append_only("workflow.run_events")}
{tenant_rls("workflow.run_events", write_check=MEMBERS)}

CREATE TABLE workflow.approvals (
  id uuid PRIMARY KEY DEFAULT gen_random_uuid(),
  tenant_id uuid NOT NULL,
  run_id uuid NOT NULL,
  node_id text NOT NULL,
  attempt integer NOT NULL,
  person text NOT NULL,
  product_role text NOT NULL,
  decision text NOT NULL CHECK (decision IN ('approve', 'reject')),
  comment text NOT NULL DEFAULT '',
  at timestamptz NOT NULL DEFAULT clock_timestamp(),
  -- The same person never counts twice for one attempt of a step.
  UNIQUE (run_id, node_id, attempt, person),
  FOREIGN KEY (run_id, tenant_id) REFERENCES workflow.runs(id, tenant_id),
  FOREIGN KEY (run_id, node_id) REFERENCES workflow.step_runs(run_id, node_id)
);
CREATE TRIGGER approvals_stamp BEFORE INSERT ON workflow.approvals
  FOR EACH ROW EXECUTE FUNCTION workflow.stamp_approval();
{grant("workflow.approvals", "SELECT, INSERT")}
{append_only("workflow.approvals")}
{tenant_rls("workflow.approvals", write_check=MEMBERS)}

CREATE TABLE workflow.settings (
  tenant_id uuid PRIMARY KEY REFERENCES tenancy.tenants(id),
  local_executor_enabled boolean NOT NULL DEFAULT false,
  updated_at timestamptz NOT NULL DEFAULT now(),
  updated_by text NOT NULL DEFAULT session_user
);
CREATE TRIGGER settings_stamp BEFORE INSERT OR UPDATE ON workflow.settings
  FOR EACH ROW EXECUTE FUNCTION workflow.stamp_updated();
{grant("workflow.settings", "SELECT, INSERT, UPDATE")}
{tenant_rls("workflow.settings", write_check=ADMINS)}

-- Live workers announce themselves so `stella run wait` knows whether to drive a run itself.
CREATE TABLE workflow.workers (
  id text PRIMARY KEY,
  tenant_id uuid NOT NULL REFERENCES tenancy.tenants(id),
  person text NOT NULL DEFAULT session_user,
  host text NOT NULL,
  pid integer NOT NULL,
  run_id uuid,
  started_at timestamptz NOT NULL DEFAULT now(),
  heartbeat_at timestamptz NOT NULL DEFAULT now()
);
{grant("workflow.workers", "SELECT, INSERT, UPDATE, DELETE")}
{tenant_rls("workflow.workers", write_check=MEMBERS)}
{stamp_actor("workflow.workers", "person")}
"""

STAMP_PERSON = """
CREATE FUNCTION stella.stamp_person() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
  NEW.person := session_user;
  RETURN NEW;
END $$;
"""


def upgrade() -> None:
    op.execute(STAMP_PERSON)
    op.execute(WORKFLOW)


def downgrade() -> None:
    op.execute("DROP SCHEMA workflow CASCADE; DROP FUNCTION stella.stamp_person();")
