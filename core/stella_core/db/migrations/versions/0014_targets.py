"""Targets: where an environment's releases run (an agent, an SSH host, a WinRM host).

Revision ID: 0014
Revises: 0013

- A target belongs to one environment of its tenant; its name is unique in the tenant.
- Admins add and remove targets, as they alone set an environment's policy: where a release
  lands is part of what an environment means. Everyone in the tenant reads them (the desk shows
  them); a target is never edited in place (remove it and add it again), so no UPDATE is granted.
- The connection secret (an SSH private key, a WinRM password) is sealed by the client with its
  machine's secret box and bound to the tenant and target name; people cannot even read the
  sealed bytes (a column privilege), only the orchestrator can, which opens them to connect.
  `has_secret` says whether one is held.
- Each type carries exactly its own connection fields (checked here, so raw SQL cannot store an
  SSH target without a pinned host key, nor an agent target with a password).
"""

from alembic import op

from stella_core.db.schema_sql import APP_ROLE, ORCHESTRATOR_ROLE, stamp_actor, tenant_rls

revision = "0014"
down_revision = "0013"
branch_labels = None
depends_on = None

ADMINS = "(SELECT tenancy.has_role('admin'))"

UPGRADE = f"""
CREATE TABLE env.targets (
  id uuid PRIMARY KEY DEFAULT gen_random_uuid(),
  tenant_id uuid NOT NULL REFERENCES tenancy.tenants(id),
  name text NOT NULL CHECK (name ~ '^[a-z0-9][a-z0-9._-]{{0,62}}$'),
  environment text NOT NULL,
  type text NOT NULL CHECK (type IN ('agent', 'ssh', 'winrm')),
  labels jsonb NOT NULL DEFAULT '{{}}' CHECK (jsonb_typeof(labels) = 'object'
    AND NOT jsonb_path_exists(labels, '$.* ? (@.type() != "string")')),
  target_group text CHECK (target_group ~ '^[a-z0-9][a-z0-9._-]{{0,62}}$'),
  runtime text NOT NULL DEFAULT 'podman-compose' CHECK (length(btrim(runtime)) > 0),
  directory text NOT NULL CHECK (length(btrim(directory)) > 0),
  agent text,
  host text,
  port integer CHECK (port BETWEEN 1 AND 65535),
  username text,
  url text,
  known_hosts text,
  auth text CHECK (auth IN ('ntlm', 'kerberos', 'basic')),
  ca_cert text,
  secret_ciphertext bytea,
  has_secret boolean GENERATED ALWAYS AS (secret_ciphertext IS NOT NULL) STORED,
  created_at timestamptz NOT NULL DEFAULT clock_timestamp(),
  created_by text NOT NULL DEFAULT session_user,
  UNIQUE (tenant_id, name),
  FOREIGN KEY (tenant_id, environment) REFERENCES env.environments (tenant_id, name),
  CHECK (CASE type
    WHEN 'agent' THEN agent IS NOT NULL AND host IS NULL AND port IS NULL AND username IS NULL
                      AND url IS NULL AND known_hosts IS NULL AND auth IS NULL
                      AND ca_cert IS NULL AND secret_ciphertext IS NULL
    WHEN 'ssh' THEN agent IS NULL AND host IS NOT NULL AND port IS NOT NULL
                    AND username IS NOT NULL AND known_hosts IS NOT NULL AND url IS NULL
                    AND auth IS NULL AND ca_cert IS NULL AND secret_ciphertext IS NOT NULL
    WHEN 'winrm' THEN agent IS NULL AND host IS NULL AND port IS NULL AND known_hosts IS NULL
                      AND url IS NOT NULL AND username IS NOT NULL AND auth IS NOT NULL
                      AND secret_ciphertext IS NOT NULL
    ELSE false END)
);
CREATE INDEX targets_environment ON env.targets (tenant_id, environment);
{stamp_actor("env.targets")}
CREATE FUNCTION env.stamp_target_time() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
  NEW.created_at := clock_timestamp();
  RETURN NEW;
END $$;
CREATE TRIGGER targets_stamp_time BEFORE INSERT ON env.targets
  FOR EACH ROW EXECUTE FUNCTION env.stamp_target_time();

-- People read every column but the sealed secret; the orchestrator reads that too.
GRANT SELECT (id, tenant_id, name, environment, type, labels, target_group, runtime, directory,
              agent, host, port, username, url, known_hosts, auth, ca_cert, has_secret,
              created_at, created_by)
  ON env.targets TO {APP_ROLE};
GRANT SELECT (secret_ciphertext) ON env.targets TO {ORCHESTRATOR_ROLE};
GRANT INSERT (tenant_id, name, environment, type, labels, target_group, runtime, directory,
              agent, host, port, username, url, known_hosts, auth, ca_cert, secret_ciphertext)
  ON env.targets TO {APP_ROLE};
GRANT DELETE ON env.targets TO {APP_ROLE};
{tenant_rls("env.targets", write_check=ADMINS)}

CREATE FUNCTION env.audit_target() RETURNS trigger
LANGUAGE plpgsql SECURITY DEFINER SET search_path = pg_catalog AS $$
DECLARE
  t env.targets;
BEGIN
  IF TG_OP = 'DELETE' THEN t := OLD; ELSE t := NEW; END IF;
  -- Never the secret: only whether one is held.
  INSERT INTO tenancy.audit_log (tenant_id, chain_index, at, actor, action, entity_type,
                                 entity_id, details, prev_hash, hash)
  VALUES (t.tenant_id, 0, now(), '',
          CASE TG_OP WHEN 'DELETE' THEN 'target.remove' ELSE 'target.add' END,
          'target', t.name,
          jsonb_build_object('environment', t.environment, 'type', t.type,
                             'agent', t.agent, 'host', t.host, 'port', t.port,
                             'user', t.username, 'url', t.url,
                             'has_secret', t.secret_ciphertext IS NOT NULL), '', '');
  RETURN NULL;
END $$;
CREATE TRIGGER targets_audit AFTER INSERT OR DELETE ON env.targets
  FOR EACH ROW EXECUTE FUNCTION env.audit_target();
CREATE TRIGGER targets_announce AFTER INSERT OR UPDATE OR DELETE ON env.targets
  FOR EACH ROW EXECUTE FUNCTION stella.announce_change('environments');
"""

DOWNGRADE = """
DROP TABLE env.targets;
DROP FUNCTION env.audit_target();
DROP FUNCTION env.stamp_target_time();
"""


def upgrade() -> None:
    op.execute(UPGRADE)


def downgrade() -> None:
    op.execute(DOWNGRADE)
