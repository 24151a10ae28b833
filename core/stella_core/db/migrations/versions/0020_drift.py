"""Drift: what really runs on each target against what should (schema `drift`).

Revision ID: 0020
Revises: 0019

- `drift.reports`: inspection reports by digest (of the canonical JSON of {report, signature,
  certificate}, the packet's input of the same digest): who saw what (an agent's report signed with
  its own key and certificate, or the orchestrator's own look over SSH/WinRM). Append-only,
  written by the orchestrator only (after it verified an agent's signature and certificate).
- `drift.findings`: each check of each target: status (in_sync | drifted | unknown), the
  differences, the reason, the report it rests on, and the `drift` packet when the status
  changed. Append-only, written by the orchestrator only; people read their tenant's.
- `env.environments.remediate_drift`: an environment opts into remediation (detect-only by
  default); only an admin sets it, and each change is audited.
"""

from alembic import op

from stella_core.db.schema_sql import APP_ROLE, append_only, tenant_rls

revision = "0020"
down_revision = "0019"
branch_labels = None
depends_on = None

ORCH = "(SELECT tenancy.is_orchestrator())"

SQL = f"""
CREATE SCHEMA drift;
GRANT USAGE ON SCHEMA drift TO {APP_ROLE};

CREATE TABLE drift.reports (
  tenant_id uuid NOT NULL REFERENCES tenancy.tenants(id),
  digest text NOT NULL CHECK (digest ~ '^sha256:[0-9a-f]{{64}}$'),
  target_id uuid NOT NULL,
  target text NOT NULL,
  -- agent: signed by the agent (its certificate and signature kept); orchestrator: seen by
  -- the orchestrator itself over SSH or WinRM.
  observer_kind text NOT NULL CHECK (observer_kind IN ('agent', 'orchestrator')),
  observer text NOT NULL,
  agent_id uuid,
  task_id uuid NOT NULL,
  report jsonb NOT NULL CHECK (jsonb_typeof(report) = 'object'),
  signature text,
  certificate text,
  created_at timestamptz NOT NULL DEFAULT now(),
  PRIMARY KEY (tenant_id, digest),
  CHECK (observer_kind = 'orchestrator' OR (signature IS NOT NULL AND certificate IS NOT NULL
                                            AND agent_id IS NOT NULL))
);
GRANT SELECT, INSERT ON drift.reports TO {APP_ROLE};
{append_only("drift.reports")}
{tenant_rls("drift.reports", write_check=ORCH)}

CREATE TABLE drift.findings (
  id bigserial PRIMARY KEY,
  tenant_id uuid NOT NULL REFERENCES tenancy.tenants(id),
  check_id uuid NOT NULL,
  target_id uuid NOT NULL,
  target text NOT NULL,
  environment text NOT NULL,
  status text NOT NULL CHECK (status IN ('in_sync', 'drifted', 'unknown')),
  differences jsonb NOT NULL DEFAULT '[]'::jsonb CHECK (jsonb_typeof(differences) = 'array'),
  reason text,
  expected_release text,
  report_digest text,
  packet_id uuid,
  remediation_id uuid,
  checked_at timestamptz NOT NULL DEFAULT clock_timestamp(),
  created_by text NOT NULL DEFAULT tenancy.actor_name(),
  FOREIGN KEY (tenant_id, report_digest) REFERENCES drift.reports (tenant_id, digest)
);
CREATE INDEX findings_target ON drift.findings (tenant_id, target_id, id DESC);
GRANT SELECT, INSERT ON drift.findings TO {APP_ROLE};
GRANT USAGE ON SEQUENCE drift.findings_id_seq TO {APP_ROLE};
{append_only("drift.findings")}
{tenant_rls("drift.findings", write_check=ORCH)}
CREATE FUNCTION drift.stamp_finding() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
  NEW.checked_at := clock_timestamp();
  NEW.created_by := tenancy.actor_name();
  RETURN NEW;
END $$;
CREATE TRIGGER findings_stamp BEFORE INSERT ON drift.findings
  FOR EACH ROW EXECUTE FUNCTION drift.stamp_finding();
CREATE TRIGGER findings_announce AFTER INSERT ON drift.findings
  FOR EACH ROW EXECUTE FUNCTION stella.announce_change('environments');

ALTER TABLE env.environments ADD COLUMN remediate_drift boolean NOT NULL DEFAULT false;
GRANT UPDATE (remediate_drift) ON env.environments TO {APP_ROLE};

-- The opt-in is an admin's (the update policy already asks for one; said here again so a
-- new environment cannot be born remediating by anyone else either), and audited.
CREATE FUNCTION env.check_remediate_drift() RETURNS trigger
LANGUAGE plpgsql SECURITY DEFINER SET search_path = pg_catalog AS $$
BEGIN
  IF TG_OP = 'UPDATE' AND NEW.remediate_drift IS NOT DISTINCT FROM OLD.remediate_drift THEN
    RETURN NEW;
  END IF;
  IF TG_OP = 'INSERT' AND NOT NEW.remediate_drift THEN
    RETURN NEW;
  END IF;
  IF NOT tenancy.has_role('admin') THEN
    RAISE EXCEPTION 'environment %: only an admin turns drift remediation on or off', NEW.name
      USING ERRCODE = 'insufficient_privilege';
  END IF;
  INSERT INTO tenancy.audit_log (tenant_id, chain_index, at, actor, action, entity_type,
                                 entity_id, details, prev_hash, hash)
  VALUES (NEW.tenant_id, 0, now(), '', 'environment.remediate-drift', 'environment', NEW.name,
          jsonb_build_object('remediate_drift', NEW.remediate_drift), '', '');
  RETURN NEW;
END $$;
CREATE TRIGGER environments_remediate_drift BEFORE INSERT OR UPDATE ON env.environments
  FOR EACH ROW EXECUTE FUNCTION env.check_remediate_drift();
"""


def upgrade() -> None:
    op.execute(SQL)


def downgrade() -> None:
    op.execute(
        "DROP TRIGGER environments_remediate_drift ON env.environments;"
        " DROP FUNCTION env.check_remediate_drift();"
        " ALTER TABLE env.environments DROP COLUMN remediate_drift;"
        " DROP SCHEMA drift CASCADE;"
    )
