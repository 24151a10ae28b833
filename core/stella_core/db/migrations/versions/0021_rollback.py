"""Rollbacks: a promotion that goes back to a release its environment ran before.

Revision ID: 0021
Revises: 0020

- `promotion.promotions.kind`: `promotion` (the default) or `rollback`. A rollback is decided
  under the environment's policy like any promotion (approvals, separation of duties, freezes);
  the marker relaxes nothing, and still nobody can forge it: the database accepts `rollback`
  only for a release that every target of the environment ran (a succeeded placement of it on
  each), that is not already what each of them runs, requested by a person; nobody may change
  it afterwards (no column privilege, and a trigger).
- `promotion.rollbacks`: the state before a rollback, as the orchestrator read it from each
  target's signed sticker when the rollback was requested (the rollback packet records it when
  the rollback's run ends). Only the orchestrator writes it, once, for a rollback promotion.
"""

from alembic import op

from stella_core.db.schema_sql import APP_ROLE, ORCHESTRATOR_ROLE, append_only, tenant_rls

revision = "0021"
down_revision = "0020"
branch_labels = None
depends_on = None

ORCH = "(SELECT tenancy.is_orchestrator())"

SQL = f"""
ALTER TABLE promotion.promotions
  ADD COLUMN kind text NOT NULL DEFAULT 'promotion' CHECK (kind IN ('promotion', 'rollback'));

-- What makes a request a rollback is checked here, from what the database itself recorded.
CREATE FUNCTION promotion.check_kind() RETURNS trigger
LANGUAGE plpgsql SECURITY DEFINER SET search_path = pg_catalog AS $$
BEGIN
  IF TG_OP = 'UPDATE' THEN
    IF NEW.kind IS DISTINCT FROM OLD.kind THEN
      RAISE EXCEPTION 'promotion %: whether it is a rollback is fixed when it is requested',
        OLD.id USING ERRCODE = 'insufficient_privilege';
    END IF;
    RETURN NEW;
  END IF;
  IF NEW.kind IS DISTINCT FROM 'rollback' THEN
    NEW.kind := 'promotion';
    RETURN NEW;
  END IF;
  IF tenancy.is_orchestrator() THEN
    RAISE EXCEPTION 'rollbacks are requested by people' USING ERRCODE = 'insufficient_privilege';
  END IF;
  IF NOT EXISTS (SELECT 1 FROM env.targets t
                  WHERE t.tenant_id = NEW.tenant_id AND t.environment = NEW.environment) THEN
    RAISE EXCEPTION 'environment % has no targets to roll back', NEW.environment
      USING ERRCODE = 'check_violation';
  END IF;
  IF EXISTS (SELECT 1 FROM env.targets t
              WHERE t.tenant_id = NEW.tenant_id AND t.environment = NEW.environment
                AND NOT EXISTS (
                  SELECT 1 FROM deploy.placements p
                   WHERE p.tenant_id = t.tenant_id AND p.target_id = t.id
                     AND p.release_id = NEW.release_id AND p.status = 'succeeded')) THEN
    RAISE EXCEPTION 'a rollback goes back to a release every target of % ran, and release % '
      'was not deployed to all of them', NEW.environment, NEW.release_id
      USING ERRCODE = 'insufficient_privilege';
  END IF;
  IF NOT EXISTS (
       SELECT 1 FROM env.targets t
        WHERE t.tenant_id = NEW.tenant_id AND t.environment = NEW.environment
          AND (SELECT p.release_id FROM deploy.placements p
                WHERE p.tenant_id = t.tenant_id AND p.target_id = t.id
                  AND p.status = 'succeeded'
                ORDER BY p.id DESC LIMIT 1) IS DISTINCT FROM NEW.release_id) THEN
    RAISE EXCEPTION 'every target of % runs release % already: there is nothing to roll back',
      NEW.environment, NEW.release_id USING ERRCODE = 'check_violation';
  END IF;
  RETURN NEW;
END $$;
CREATE TRIGGER promotions_kind BEFORE INSERT OR UPDATE ON promotion.promotions
  FOR EACH ROW EXECUTE FUNCTION promotion.check_kind();

CREATE TABLE promotion.rollbacks (
  promotion_id uuid PRIMARY KEY,
  tenant_id uuid NOT NULL REFERENCES tenancy.tenants(id),
  environment text NOT NULL,
  trigger_kind text NOT NULL CHECK (trigger_kind IN ('manual', 'automatic')),
  before jsonb NOT NULL CHECK (jsonb_typeof(before) = 'object'),
  recorded_at timestamptz NOT NULL DEFAULT clock_timestamp(),
  FOREIGN KEY (promotion_id, tenant_id) REFERENCES promotion.promotions (id, tenant_id)
);
CREATE FUNCTION promotion.check_rollback_state() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
  IF NOT EXISTS (SELECT 1 FROM promotion.promotions p
                  WHERE p.id = NEW.promotion_id AND p.tenant_id = NEW.tenant_id
                    AND p.kind = 'rollback' AND p.environment = NEW.environment) THEN
    RAISE EXCEPTION 'promotion % is not a rollback to %', NEW.promotion_id, NEW.environment
      USING ERRCODE = 'check_violation';
  END IF;
  NEW.recorded_at := clock_timestamp();
  RETURN NEW;
END $$;
CREATE TRIGGER rollbacks_check BEFORE INSERT ON promotion.rollbacks
  FOR EACH ROW EXECUTE FUNCTION promotion.check_rollback_state();
GRANT SELECT ON promotion.rollbacks TO {APP_ROLE};
GRANT INSERT ON promotion.rollbacks TO {ORCHESTRATOR_ROLE};
{append_only("promotion.rollbacks")}
{tenant_rls("promotion.rollbacks", write_check=ORCH)}
"""


def upgrade() -> None:
    op.execute(SQL)


def downgrade() -> None:
    op.execute(
        "DROP TABLE promotion.rollbacks; DROP FUNCTION promotion.check_rollback_state();"
        " DROP TRIGGER promotions_kind ON promotion.promotions;"
        " DROP FUNCTION promotion.check_kind();"
        " ALTER TABLE promotion.promotions DROP COLUMN kind;"
    )
