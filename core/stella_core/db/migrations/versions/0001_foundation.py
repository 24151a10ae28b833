"""Foundation: shared plumbing, tenancy (tenants, people, audit log), releases, environments.

Revision ID: 0001
Revises:
"""

from alembic import op

from stella_core.db.schema_sql import APP_ROLE, append_only, grant, stamp_actor, tenant_rls

revision = "0001"
down_revision = None
branch_labels = None
depends_on = None

WRITERS = "(SELECT tenancy.has_role('release-manager', 'admin'))"

SHARED = f"""
CREATE FUNCTION stella.refuse_mutation() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
  RAISE EXCEPTION 'append-only table %.%: % refused', TG_TABLE_SCHEMA, TG_TABLE_NAME, TG_OP
    USING ERRCODE = 'insufficient_privilege';
END $$;
CREATE FUNCTION stella.stamp_created_by() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
  NEW.created_by := session_user;
  RETURN NEW;
END $$;
GRANT USAGE ON SCHEMA stella TO {APP_ROLE};
"""

TENANCY = f"""
CREATE SCHEMA tenancy;
GRANT USAGE ON SCHEMA tenancy TO {APP_ROLE};

CREATE TABLE tenancy.tenants (
  id uuid PRIMARY KEY DEFAULT gen_random_uuid(),
  name text NOT NULL UNIQUE,
  created_at timestamptz NOT NULL DEFAULT now()
);

CREATE TABLE tenancy.users (
  id uuid PRIMARY KEY DEFAULT gen_random_uuid(),
  tenant_id uuid NOT NULL REFERENCES tenancy.tenants(id),
  name text NOT NULL,
  db_role text NOT NULL UNIQUE,
  role text NOT NULL CHECK (role IN ('release-manager', 'approver', 'auditor', 'admin')),
  disabled boolean NOT NULL DEFAULT false,
  created_at timestamptz NOT NULL DEFAULT now(),
  created_by text NOT NULL DEFAULT session_user,
  UNIQUE (tenant_id, name)
);

-- Membership decides the tenant: setting app.tenant_id to a tenant you do not belong to gives
-- NULL, so RLS shows nothing. SECURITY DEFINER (owner) reads users without recursing into RLS.
CREATE FUNCTION tenancy.current_tenant() RETURNS uuid
LANGUAGE sql STABLE SECURITY DEFINER SET search_path = pg_catalog AS $$
  SELECT u.tenant_id FROM tenancy.users u
   WHERE u.db_role = session_user AND NOT u.disabled
     AND u.tenant_id = NULLIF(current_setting('app.tenant_id', true), '')::uuid
$$;
CREATE FUNCTION tenancy.current_product_role() RETURNS text
LANGUAGE sql STABLE SECURITY DEFINER SET search_path = pg_catalog AS $$
  SELECT u.role FROM tenancy.users u
   WHERE u.db_role = session_user AND NOT u.disabled
     AND u.tenant_id = NULLIF(current_setting('app.tenant_id', true), '')::uuid
$$;
CREATE FUNCTION tenancy.has_role(VARIADIC roles text[]) RETURNS boolean
LANGUAGE sql STABLE AS $$
  SELECT COALESCE(tenancy.current_product_role() = ANY(roles), false)
$$;

-- No FORCE on users: the owner-run functions above must see every row to decide membership.
ALTER TABLE tenancy.users ENABLE ROW LEVEL SECURITY;
CREATE POLICY users_read ON tenancy.users FOR SELECT
  USING (db_role = session_user OR tenant_id = (SELECT tenancy.current_tenant()));
CREATE POLICY users_insert ON tenancy.users FOR INSERT
  WITH CHECK (tenant_id = (SELECT tenancy.current_tenant()) AND (SELECT tenancy.has_role('admin')));
CREATE POLICY users_update ON tenancy.users FOR UPDATE
  USING (tenant_id = (SELECT tenancy.current_tenant()) AND (SELECT tenancy.has_role('admin')));
GRANT SELECT, INSERT ON tenancy.users TO {APP_ROLE};
GRANT UPDATE (disabled, role) ON tenancy.users TO {APP_ROLE};
{stamp_actor("tenancy.users")}

ALTER TABLE tenancy.tenants ENABLE ROW LEVEL SECURITY;
ALTER TABLE tenancy.tenants FORCE ROW LEVEL SECURITY;
CREATE POLICY tenants_read ON tenancy.tenants FOR SELECT
  USING (id IN (SELECT u.tenant_id FROM tenancy.users u WHERE u.db_role = session_user));
GRANT SELECT ON tenancy.tenants TO {APP_ROLE};

CREATE TABLE tenancy.audit_log (
  id uuid PRIMARY KEY DEFAULT gen_random_uuid(),
  tenant_id uuid NOT NULL REFERENCES tenancy.tenants(id),
  chain_index bigint NOT NULL,
  at timestamptz NOT NULL,
  actor text NOT NULL,
  action text NOT NULL,
  entity_type text NOT NULL,
  entity_id text NOT NULL,
  details jsonb NOT NULL DEFAULT '{{}}'::jsonb,
  prev_hash text NOT NULL,
  hash text NOT NULL,
  UNIQUE (tenant_id, chain_index)
);
-- The hash covers every field in a fixed text form, so a verifier can recompute it off-line.
CREATE FUNCTION tenancy.audit_hash(prev text, tenant uuid, idx bigint, at timestamptz,
    actor text, action text, etype text, eid text, details jsonb) RETURNS text
LANGUAGE sql IMMUTABLE AS $$
  SELECT encode(sha256(convert_to(concat_ws(E'\\n', prev, tenant::text, idx::text,
    to_char(at AT TIME ZONE 'UTC', 'YYYY-MM-DD"T"HH24:MI:SS.US"Z"'),
    actor, action, etype, eid, details::text), 'UTF8')), 'hex')
$$;
CREATE FUNCTION tenancy.audit_chain() RETURNS trigger LANGUAGE plpgsql AS $$
DECLARE
  last record;
BEGIN
  -- One writer per tenant chain at a time; the lock lasts until commit.
  PERFORM pg_advisory_xact_lock(hashtextextended('stella.audit:' || NEW.tenant_id::text, 0));
  SELECT a.chain_index, a.hash INTO last FROM tenancy.audit_log a
   WHERE a.tenant_id = NEW.tenant_id ORDER BY a.chain_index DESC LIMIT 1;
  NEW.chain_index := COALESCE(last.chain_index, 0) + 1;
  NEW.prev_hash := COALESCE(last.hash, repeat('0', 64));
  NEW.actor := session_user;
  NEW.at := date_trunc('microseconds', clock_timestamp());
  NEW.hash := tenancy.audit_hash(NEW.prev_hash, NEW.tenant_id, NEW.chain_index, NEW.at,
    NEW.actor, NEW.action, NEW.entity_type, NEW.entity_id, NEW.details);
  RETURN NEW;
END $$;
CREATE TRIGGER audit_log_chain BEFORE INSERT ON tenancy.audit_log
  FOR EACH ROW EXECUTE FUNCTION tenancy.audit_chain();
GRANT SELECT, INSERT ON tenancy.audit_log TO {APP_ROLE};
{append_only("tenancy.audit_log")}
{tenant_rls("tenancy.audit_log")}
"""

RELEASES = f"""
CREATE SCHEMA release;
GRANT USAGE ON SCHEMA release TO {APP_ROLE};

CREATE TABLE release.registries (
  id uuid PRIMARY KEY DEFAULT gen_random_uuid(),
  tenant_id uuid NOT NULL REFERENCES tenancy.tenants(id),
  name text NOT NULL,
  kind text NOT NULL CHECK (kind IN ('distribution', 'oci-layout')),
  url text NOT NULL,
  username text,
  password_ciphertext bytea,
  insecure boolean NOT NULL DEFAULT false,
  created_at timestamptz NOT NULL DEFAULT now(),
  created_by text NOT NULL DEFAULT session_user,
  UNIQUE (tenant_id, name)
);
GRANT SELECT, INSERT, UPDATE, DELETE ON release.registries TO {APP_ROLE};
{tenant_rls("release.registries", write_check=WRITERS)}
{stamp_actor("release.registries")}

CREATE TABLE release.components (
  id uuid PRIMARY KEY DEFAULT gen_random_uuid(),
  tenant_id uuid NOT NULL REFERENCES tenancy.tenants(id),
  name text NOT NULL,
  registry_id uuid NOT NULL REFERENCES release.registries(id),
  repository text NOT NULL,
  created_at timestamptz NOT NULL DEFAULT now(),
  created_by text NOT NULL DEFAULT session_user,
  UNIQUE (tenant_id, name)
);
GRANT SELECT, INSERT, UPDATE, DELETE ON release.components TO {APP_ROLE};
{tenant_rls("release.components", write_check=WRITERS)}
{stamp_actor("release.components")}

CREATE TABLE release.releases (
  id uuid PRIMARY KEY DEFAULT gen_random_uuid(),
  tenant_id uuid NOT NULL REFERENCES tenancy.tenants(id),
  name text NOT NULL,
  created_at timestamptz NOT NULL DEFAULT now(),
  created_by text NOT NULL DEFAULT session_user,
  created_txid bigint NOT NULL DEFAULT txid_current(),
  UNIQUE (tenant_id, name)
);
CREATE FUNCTION release.stamp_release() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
  NEW.created_by := session_user;
  NEW.created_at := now();
  NEW.created_txid := txid_current();
  RETURN NEW;
END $$;
CREATE TRIGGER releases_stamp BEFORE INSERT ON release.releases
  FOR EACH ROW EXECUTE FUNCTION release.stamp_release();
GRANT SELECT, INSERT ON release.releases TO {APP_ROLE};
{append_only("release.releases")}
{tenant_rls("release.releases", write_check=WRITERS)}

CREATE TABLE release.release_components (
  release_id uuid NOT NULL REFERENCES release.releases(id),
  tenant_id uuid NOT NULL REFERENCES tenancy.tenants(id),
  position integer NOT NULL,
  component_id uuid NOT NULL REFERENCES release.components(id),
  component_name text NOT NULL,
  registry_name text NOT NULL,
  repository text NOT NULL,
  tag text,
  digest text NOT NULL CHECK (digest ~ '^sha256:[a-f0-9]{{64}}$'),
  media_type text,
  PRIMARY KEY (release_id, position),
  UNIQUE (release_id, component_name)
);
-- A release's component set is fixed by the transaction that created it.
CREATE FUNCTION release.components_only_at_creation() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
  IF NOT EXISTS (SELECT 1 FROM release.releases r
                  WHERE r.id = NEW.release_id AND r.tenant_id = NEW.tenant_id
                    AND r.created_txid = txid_current()) THEN
    RAISE EXCEPTION 'release % is immutable: its components were fixed when it was created',
      NEW.release_id USING ERRCODE = 'insufficient_privilege';
  END IF;
  RETURN NEW;
END $$;
CREATE TRIGGER release_components_at_creation BEFORE INSERT ON release.release_components
  FOR EACH ROW EXECUTE FUNCTION release.components_only_at_creation();
GRANT SELECT, INSERT ON release.release_components TO {APP_ROLE};
{append_only("release.release_components")}
{tenant_rls("release.release_components", write_check=WRITERS)}
"""

ENVIRONMENTS = f"""
CREATE SCHEMA env;
GRANT USAGE ON SCHEMA env TO {APP_ROLE};
CREATE TABLE env.environments (
  id uuid PRIMARY KEY DEFAULT gen_random_uuid(),
  tenant_id uuid NOT NULL REFERENCES tenancy.tenants(id),
  name text NOT NULL,
  promotion_order integer NOT NULL,
  required_approvals integer NOT NULL DEFAULT 0 CHECK (required_approvals >= 0),
  separation_of_duties boolean NOT NULL DEFAULT false,
  created_at timestamptz NOT NULL DEFAULT now(),
  created_by text NOT NULL DEFAULT session_user,
  UNIQUE (tenant_id, name),
  UNIQUE (tenant_id, promotion_order)
);
GRANT SELECT, INSERT, UPDATE ON env.environments TO {APP_ROLE};
{tenant_rls("env.environments", write_check=WRITERS)}
{stamp_actor("env.environments")}
"""


def upgrade() -> None:
    for block in (SHARED, TENANCY, RELEASES, ENVIRONMENTS):
        op.execute(block)


def downgrade() -> None:
    op.execute("DROP SCHEMA env CASCADE; DROP SCHEMA release CASCADE; DROP SCHEMA tenancy CASCADE;")
    op.execute("DROP FUNCTION stella.refuse_mutation(); DROP FUNCTION stella.stamp_created_by();")
