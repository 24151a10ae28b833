"""Freeze windows can be lifted and edited, by admins, leaving a trail.

Revision ID: 0009
Revises: 0008

`env.freezes` stays append-only: a freeze as first set is history. A change is a new row in
`env.freeze_changes` (append-only too) that carries the freeze's whole state after it and why;
`env.current_freezes` shows each freeze as its latest change leaves it. The database enforces:
- only admins change a freeze (adding one stays with release managers and admins: imposing a
  freeze tightens, lifting it or widening who may still promote loosens);
- the actor and the time are the database's (`tenancy.actor_name()`, `clock_timestamp()`);
- a lift keeps the freeze's dates and ends it now (a freeze not yet started never starts); a
  lifted or ended freeze is not changed again; an edit cannot end a freeze in the past (that
  is a lift) nor move the start of a freeze that is in force or into the past;
- every change is audited in the hash-chained audit log, whoever wrote it and however.
A freeze's `created_at` is the database's too (a client could set it before).
"""

from alembic import op

from stella_core.db.schema_sql import APP_ROLE, append_only, tenant_rls

revision = "0009"
down_revision = "0008"
branch_labels = None
depends_on = None

ADMINS = "(SELECT tenancy.has_role('admin'))"

UPGRADE = f"""
CREATE FUNCTION env.stamp_freeze_time() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
  NEW.created_at := clock_timestamp();
  RETURN NEW;
END $$;
CREATE TRIGGER freezes_stamp_time BEFORE INSERT ON env.freezes
  FOR EACH ROW EXECUTE FUNCTION env.stamp_freeze_time();

ALTER TABLE env.freezes ADD CONSTRAINT freezes_id_tenant UNIQUE (id, tenant_id);

CREATE TABLE env.freeze_changes (
  seq bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
  tenant_id uuid NOT NULL REFERENCES tenancy.tenants(id),
  freeze_id uuid NOT NULL,
  lift boolean NOT NULL,
  starts_at timestamptz NOT NULL,
  ends_at timestamptz NOT NULL,
  reason text NOT NULL CHECK (length(reason) > 0),
  allow text[] NOT NULL DEFAULT '{{}}',
  why text NOT NULL CHECK (length(btrim(why)) > 0),
  changed_at timestamptz NOT NULL DEFAULT clock_timestamp(),
  changed_by text NOT NULL DEFAULT session_user,
  CHECK (ends_at > starts_at),
  FOREIGN KEY (freeze_id, tenant_id) REFERENCES env.freezes (id, tenant_id)
);
CREATE INDEX freeze_changes_freeze ON env.freeze_changes (tenant_id, freeze_id, seq);
GRANT SELECT, INSERT ON env.freeze_changes TO {APP_ROLE};
{append_only("env.freeze_changes")}
{tenant_rls("env.freeze_changes", write_check=ADMINS)}

-- Each freeze as its latest change leaves it; read with the reader's own rights (RLS holds).
CREATE VIEW env.current_freezes WITH (security_invoker = true) AS
SELECT f.id, f.tenant_id, f.environment,
       COALESCE(c.starts_at, f.starts_at) AS starts_at,
       CASE WHEN c.lift
            THEN GREATEST(c.starts_at, LEAST(c.ends_at, c.changed_at))
            ELSE COALESCE(c.ends_at, f.ends_at) END AS ends_at,
       COALESCE(c.reason, f.reason) AS reason,
       COALESCE(c.allow, f.allow) AS allow,
       f.created_at, f.created_by,
       CASE WHEN c.lift THEN c.changed_at END AS lifted_at,
       c.changed_at, c.changed_by, c.why AS change_reason,
       (SELECT count(*) FROM env.freeze_changes n
         WHERE n.tenant_id = f.tenant_id AND n.freeze_id = f.id) AS changes
  FROM env.freezes f
  LEFT JOIN LATERAL (
    SELECT x.* FROM env.freeze_changes x
     WHERE x.tenant_id = f.tenant_id AND x.freeze_id = f.id
     ORDER BY x.seq DESC LIMIT 1) c ON true;
GRANT SELECT ON env.current_freezes TO {APP_ROLE};

CREATE FUNCTION env.check_freeze_change() RETURNS trigger
LANGUAGE plpgsql SECURITY DEFINER SET search_path = pg_catalog AS $$
DECLARE
  cur record;
  at timestamptz := clock_timestamp();
BEGIN
  -- One change of a freeze at a time: each is judged against the state the last one left.
  PERFORM pg_advisory_xact_lock(hashtextextended('env.freeze:' || NEW.freeze_id::text, 0));
  SELECT * INTO cur FROM env.current_freezes c
   WHERE c.id = NEW.freeze_id AND c.tenant_id = NEW.tenant_id;
  IF NOT FOUND THEN
    RAISE EXCEPTION 'no freeze %', NEW.freeze_id USING ERRCODE = 'foreign_key_violation';
  END IF;
  IF cur.lifted_at IS NOT NULL THEN
    RAISE EXCEPTION 'freeze % was lifted already', NEW.freeze_id USING ERRCODE = '22023';
  END IF;
  IF cur.ends_at <= at THEN
    RAISE EXCEPTION 'freeze % has ended; an ended freeze is history', NEW.freeze_id
      USING ERRCODE = '22023';
  END IF;
  NEW.changed_at := at;
  NEW.changed_by := tenancy.actor_name();
  IF NEW.lift THEN
    NEW.starts_at := cur.starts_at;
    NEW.ends_at := cur.ends_at;
    NEW.reason := cur.reason;
    NEW.allow := cur.allow;
    RETURN NEW;
  END IF;
  IF NEW.ends_at <= at THEN
    RAISE EXCEPTION 'freeze %: an end in the past is a lift', NEW.freeze_id
      USING ERRCODE = '22023';
  END IF;
  IF NEW.starts_at <> cur.starts_at AND (cur.starts_at <= at OR NEW.starts_at < at) THEN
    RAISE EXCEPTION 'freeze %: the start of a freeze in force, or a start in the past, '
      'cannot be moved', NEW.freeze_id USING ERRCODE = '22023';
  END IF;
  IF (NEW.starts_at, NEW.ends_at, NEW.reason, NEW.allow)
     IS NOT DISTINCT FROM (cur.starts_at, cur.ends_at, cur.reason, cur.allow) THEN
    RAISE EXCEPTION 'freeze %: the edit changes nothing', NEW.freeze_id USING ERRCODE = '22023';
  END IF;
  RETURN NEW;
END $$;
CREATE TRIGGER freeze_changes_check BEFORE INSERT ON env.freeze_changes
  FOR EACH ROW EXECUTE FUNCTION env.check_freeze_change();

CREATE FUNCTION env.audit_freeze_change() RETURNS trigger
LANGUAGE plpgsql SECURITY DEFINER SET search_path = pg_catalog AS $$
BEGIN
  INSERT INTO tenancy.audit_log (tenant_id, chain_index, at, actor, action, entity_type,
                                 entity_id, details, prev_hash, hash)
  SELECT NEW.tenant_id, 0, now(), '',
         CASE WHEN NEW.lift THEN 'environment.freeze.lift' ELSE 'environment.freeze.edit' END,
         'environment', f.environment,
         jsonb_build_object('freeze', NEW.freeze_id, 'start', NEW.starts_at,
                            'end', NEW.ends_at, 'reason', NEW.reason,
                            'allow', to_jsonb(NEW.allow), 'why', NEW.why), '', ''
    FROM env.freezes f WHERE f.id = NEW.freeze_id AND f.tenant_id = NEW.tenant_id;
  RETURN NULL;
END $$;
CREATE TRIGGER freeze_changes_audit AFTER INSERT ON env.freeze_changes
  FOR EACH ROW EXECUTE FUNCTION env.audit_freeze_change();
"""

DOWNGRADE = """
DROP TABLE env.freeze_changes CASCADE;
DROP FUNCTION env.check_freeze_change();
DROP FUNCTION env.audit_freeze_change();
ALTER TABLE env.freezes DROP CONSTRAINT freezes_id_tenant;
DROP TRIGGER freezes_stamp_time ON env.freezes;
DROP FUNCTION env.stamp_freeze_time();
"""


def upgrade() -> None:
    op.execute(UPGRADE)


def downgrade() -> None:
    op.execute(DOWNGRADE)
