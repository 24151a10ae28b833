"""Agents (schema `agent`) and the task queue every transport shares (schema `deploy`).

Revision ID: 0016
Revises: 0015

- `agent.authorities`: each tenant's agent CA certificate (its private key stays sealed where the
  orchestrator runs). Written by the orchestrator only.
- `agent.tokens`: one-time enrollment tokens, stored as their SHA-256 only. Admins create them;
  only the orchestrator marks one used (once).
- `agent.agents`: enrolled agents, their bound key (the SPKI fingerprint every renewal must be
  signed by) and the certificate generation last seen in use. Only the orchestrator enrolls,
  renews and records heartbeats; an admin may revoke (and nothing else); nobody un-revokes, and a
  generation never goes back.
- `agent.certificates`: every certificate issued, with its generation (append-only).
- `agent.events`: enrolled, renewed, recovered, revoked, clone detected (append-only).
- `deploy.tasks` and `deploy.task_events`: the queue of signed tasks and what became of them.
  People read their tenant's; only the orchestrator writes.
"""

from alembic import op

from stella_core.db.schema_sql import APP_ROLE, append_only, tenant_rls

revision = "0016"
down_revision = "0015"
branch_labels = None
depends_on = None

ADMINS = "(SELECT tenancy.has_role('admin'))"
ORCH = "(SELECT tenancy.is_orchestrator())"
TASK_TYPES = (
    "'deploy','health-check','inspect','execute-command','upload-files','write-sticker',"
    "'read-sticker'"
)
TASK_STATUSES = "'queued','delivered','running','succeeded','failed','expired','cancelled'"

AGENT = f"""
CREATE SCHEMA agent;
GRANT USAGE ON SCHEMA agent TO {APP_ROLE};

CREATE TABLE agent.authorities (
  tenant_id uuid NOT NULL REFERENCES tenancy.tenants(id),
  fingerprint text NOT NULL CHECK (fingerprint ~ '^[0-9a-f]{{64}}$'),
  certificate text NOT NULL CHECK (certificate LIKE '-----BEGIN CERTIFICATE-----%'),
  created_at timestamptz NOT NULL DEFAULT now(),
  created_by text NOT NULL DEFAULT tenancy.actor_name(),
  PRIMARY KEY (tenant_id, fingerprint),
  CHECK (fingerprint = tenancy.pem_key_id(certificate))
);
GRANT SELECT, INSERT ON agent.authorities TO {APP_ROLE};
{append_only("agent.authorities")}
{tenant_rls("agent.authorities", write_check=ORCH)}

CREATE TABLE agent.tokens (
  id uuid PRIMARY KEY DEFAULT gen_random_uuid(),
  tenant_id uuid NOT NULL REFERENCES tenancy.tenants(id),
  token_hash text NOT NULL UNIQUE CHECK (token_hash ~ '^[0-9a-f]{{64}}$'),
  name text NOT NULL CHECK (name ~ '^[A-Za-z0-9][A-Za-z0-9._-]{{0,62}}$'),
  labels jsonb NOT NULL DEFAULT '{{}}'::jsonb CHECK (jsonb_typeof(labels) = 'object'),
  expires_at timestamptz NOT NULL,
  created_at timestamptz NOT NULL DEFAULT now(),
  created_by text NOT NULL DEFAULT tenancy.actor_name(),
  used_at timestamptz,
  used_by uuid,
  CHECK (expires_at > created_at)
);
GRANT SELECT, INSERT, UPDATE ON agent.tokens TO {APP_ROLE};
ALTER TABLE agent.tokens ENABLE ROW LEVEL SECURITY;
ALTER TABLE agent.tokens FORCE ROW LEVEL SECURITY;
CREATE POLICY tokens_read ON agent.tokens FOR SELECT
  USING (tenant_id = (SELECT tenancy.current_tenant()) AND ({ADMINS} OR {ORCH}));
CREATE POLICY tokens_insert ON agent.tokens FOR INSERT
  WITH CHECK (tenant_id = (SELECT tenancy.current_tenant()) AND {ADMINS});
CREATE POLICY tokens_use ON agent.tokens FOR UPDATE
  USING (tenant_id = (SELECT tenancy.current_tenant()) AND {ORCH})
  WITH CHECK (tenant_id = (SELECT tenancy.current_tenant()) AND {ORCH});

-- A token is used once: only used_at/used_by change, from nothing to something. The creator
-- and the times are the database's.
CREATE FUNCTION agent.check_token() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
  IF TG_OP = 'INSERT' THEN
    NEW.created_at := now();
    NEW.created_by := tenancy.actor_name();
    NEW.used_at := NULL;
    NEW.used_by := NULL;
    RETURN NEW;
  END IF;
  IF OLD.used_at IS NOT NULL THEN
    RAISE EXCEPTION 'enrollment token already used' USING ERRCODE = 'insufficient_privilege';
  END IF;
  IF (NEW.id, NEW.tenant_id, NEW.token_hash, NEW.name, NEW.labels, NEW.expires_at,
      NEW.created_at, NEW.created_by)
     IS DISTINCT FROM
     (OLD.id, OLD.tenant_id, OLD.token_hash, OLD.name, OLD.labels, OLD.expires_at,
      OLD.created_at, OLD.created_by) OR NEW.used_at IS NULL THEN
    RAISE EXCEPTION 'an enrollment token can only be marked used'
      USING ERRCODE = 'insufficient_privilege';
  END IF;
  RETURN NEW;
END $$;
CREATE TRIGGER tokens_check BEFORE INSERT OR UPDATE ON agent.tokens
  FOR EACH ROW EXECUTE FUNCTION agent.check_token();
CREATE TRIGGER tokens_no_delete BEFORE DELETE OR TRUNCATE ON agent.tokens
  FOR EACH STATEMENT EXECUTE FUNCTION stella.refuse_mutation();

CREATE TABLE agent.agents (
  id uuid PRIMARY KEY DEFAULT gen_random_uuid(),
  tenant_id uuid NOT NULL REFERENCES tenancy.tenants(id),
  name text NOT NULL CHECK (name ~ '^[A-Za-z0-9][A-Za-z0-9._-]{{0,62}}$'),
  labels jsonb NOT NULL DEFAULT '{{}}'::jsonb CHECK (jsonb_typeof(labels) = 'object'),
  hostname text NOT NULL DEFAULT '',
  version text NOT NULL DEFAULT '',
  -- The bound key: lowercase hex SHA-256 of the agent's SPKI DER. Renewals and recoveries
  -- must be signed by it.
  key_fingerprint text NOT NULL CHECK (key_fingerprint ~ '^[0-9a-f]{{64}}$'),
  -- The newest generation issued, and the newest one seen in use on a link: presenting an
  -- older certificate than the one in use means a copy of the agent (a clone).
  generation integer NOT NULL DEFAULT 1 CHECK (generation >= 1),
  generation_in_use integer NOT NULL DEFAULT 1 CHECK (generation_in_use >= 1),
  cert_not_after timestamptz NOT NULL,
  token_id uuid REFERENCES agent.tokens(id),
  enrolled_at timestamptz NOT NULL DEFAULT now(),
  connected boolean NOT NULL DEFAULT false,
  last_heartbeat timestamptz,
  revoked_at timestamptz,
  revoked_by text,
  revoke_reason text,
  UNIQUE (id, tenant_id)
);
CREATE UNIQUE INDEX agents_name ON agent.agents (tenant_id, name) WHERE revoked_at IS NULL;
GRANT SELECT, INSERT, UPDATE ON agent.agents TO {APP_ROLE};
ALTER TABLE agent.agents ENABLE ROW LEVEL SECURITY;
ALTER TABLE agent.agents FORCE ROW LEVEL SECURITY;
CREATE POLICY agents_read ON agent.agents FOR SELECT
  USING (tenant_id = (SELECT tenancy.current_tenant()));
CREATE POLICY agents_insert ON agent.agents FOR INSERT
  WITH CHECK (tenant_id = (SELECT tenancy.current_tenant()) AND {ORCH});
CREATE POLICY agents_update ON agent.agents FOR UPDATE
  USING (tenant_id = (SELECT tenancy.current_tenant()) AND ({ORCH} OR {ADMINS}))
  WITH CHECK (tenant_id = (SELECT tenancy.current_tenant()) AND ({ORCH} OR {ADMINS}));

CREATE FUNCTION agent.check_agent() RETURNS trigger LANGUAGE plpgsql AS $$
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
    IF (NEW.name, NEW.labels, NEW.hostname, NEW.version, NEW.generation,
        NEW.generation_in_use, NEW.cert_not_after, NEW.connected, NEW.last_heartbeat)
       IS DISTINCT FROM
       (OLD.name, OLD.labels, OLD.hostname, OLD.version, OLD.generation,
        OLD.generation_in_use, OLD.cert_not_after, OLD.connected, OLD.last_heartbeat)
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
CREATE TRIGGER agents_check BEFORE INSERT OR UPDATE ON agent.agents
  FOR EACH ROW EXECUTE FUNCTION agent.check_agent();
CREATE TRIGGER agents_no_delete BEFORE DELETE OR TRUNCATE ON agent.agents
  FOR EACH STATEMENT EXECUTE FUNCTION stella.refuse_mutation();

CREATE TABLE agent.certificates (
  tenant_id uuid NOT NULL REFERENCES tenancy.tenants(id),
  serial text NOT NULL CHECK (serial ~ '^[0-9a-f]{{1,40}}$'),
  agent_id uuid NOT NULL,
  generation integer NOT NULL CHECK (generation >= 1),
  not_before timestamptz NOT NULL,
  not_after timestamptz NOT NULL,
  issued_at timestamptz NOT NULL DEFAULT now(),
  reason text NOT NULL CHECK (reason IN ('enroll', 'renew', 'recover')),
  PRIMARY KEY (tenant_id, serial),
  FOREIGN KEY (agent_id, tenant_id) REFERENCES agent.agents (id, tenant_id)
);
GRANT SELECT, INSERT ON agent.certificates TO {APP_ROLE};
{append_only("agent.certificates")}
{tenant_rls("agent.certificates", write_check=ORCH)}

CREATE TABLE agent.events (
  id bigserial PRIMARY KEY,
  tenant_id uuid NOT NULL REFERENCES tenancy.tenants(id),
  agent_id uuid NOT NULL,
  kind text NOT NULL CHECK (kind IN ('enrolled', 'renewed', 'recovered', 'revoked',
                                     'clone-detected', 'refused')),
  detail jsonb NOT NULL DEFAULT '{{}}'::jsonb,
  at timestamptz NOT NULL DEFAULT now(),
  actor text NOT NULL DEFAULT tenancy.actor_name(),
  FOREIGN KEY (agent_id, tenant_id) REFERENCES agent.agents (id, tenant_id)
);
GRANT SELECT, INSERT ON agent.events TO {APP_ROLE};
GRANT USAGE ON SEQUENCE agent.events_id_seq TO {APP_ROLE};
{append_only("agent.events")}
{tenant_rls("agent.events", write_check=f"{ORCH} OR (kind = 'revoked' AND {ADMINS})")}
CREATE FUNCTION agent.stamp_event() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
  NEW.at := now();
  NEW.actor := tenancy.actor_name();
  RETURN NEW;
END $$;
CREATE TRIGGER events_stamp BEFORE INSERT ON agent.events
  FOR EACH ROW EXECUTE FUNCTION agent.stamp_event();
"""

DEPLOY = f"""
CREATE SCHEMA deploy;
GRANT USAGE ON SCHEMA deploy TO {APP_ROLE};

CREATE TABLE deploy.tasks (
  id uuid PRIMARY KEY,
  tenant_id uuid NOT NULL REFERENCES tenancy.tenants(id),
  type text NOT NULL CHECK (type IN ({TASK_TYPES})),
  target text NOT NULL,
  target_id uuid NOT NULL,
  agent_id uuid,
  idempotency_key text NOT NULL CHECK (length(idempotency_key) BETWEEN 1 AND 200),
  payload jsonb NOT NULL,
  envelope bytea NOT NULL,
  issued_at timestamptz NOT NULL,
  expires_at timestamptz NOT NULL,
  status text NOT NULL DEFAULT 'queued' CHECK (status IN ({TASK_STATUSES})),
  deliveries integer NOT NULL DEFAULT 0,
  delivered_at timestamptz,
  started_at timestamptz,
  finished_at timestamptz,
  outcome jsonb,
  created_at timestamptz NOT NULL DEFAULT now(),
  UNIQUE (tenant_id, idempotency_key),
  UNIQUE (id, tenant_id)
);
CREATE INDEX tasks_open ON deploy.tasks (tenant_id, agent_id, created_at)
  WHERE status IN ('queued', 'delivered', 'running');
GRANT SELECT, INSERT, UPDATE ON deploy.tasks TO {APP_ROLE};
ALTER TABLE deploy.tasks ENABLE ROW LEVEL SECURITY;
ALTER TABLE deploy.tasks FORCE ROW LEVEL SECURITY;
CREATE POLICY tasks_read ON deploy.tasks FOR SELECT
  USING (tenant_id = (SELECT tenancy.current_tenant()));
CREATE POLICY tasks_insert ON deploy.tasks FOR INSERT
  WITH CHECK (tenant_id = (SELECT tenancy.current_tenant()) AND {ORCH});
CREATE POLICY tasks_update ON deploy.tasks FOR UPDATE
  USING (tenant_id = (SELECT tenancy.current_tenant()) AND {ORCH})
  WITH CHECK (tenant_id = (SELECT tenancy.current_tenant()) AND {ORCH});

-- What was signed never changes, and a finished task stays finished.
CREATE FUNCTION deploy.check_task() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
  IF (NEW.id, NEW.tenant_id, NEW.type, NEW.target, NEW.target_id, NEW.agent_id,
      NEW.idempotency_key, NEW.payload, NEW.envelope, NEW.issued_at, NEW.expires_at,
      NEW.created_at)
     IS DISTINCT FROM
     (OLD.id, OLD.tenant_id, OLD.type, OLD.target, OLD.target_id, OLD.agent_id,
      OLD.idempotency_key, OLD.payload, OLD.envelope, OLD.issued_at, OLD.expires_at,
      OLD.created_at) THEN
    RAISE EXCEPTION 'task %: what was signed cannot change', OLD.id
      USING ERRCODE = 'insufficient_privilege';
  END IF;
  IF OLD.status IN ('succeeded', 'failed', 'expired', 'cancelled') THEN
    RAISE EXCEPTION 'task %: it is % already', OLD.id, OLD.status
      USING ERRCODE = 'insufficient_privilege';
  END IF;
  RETURN NEW;
END $$;
CREATE TRIGGER tasks_check BEFORE UPDATE ON deploy.tasks
  FOR EACH ROW EXECUTE FUNCTION deploy.check_task();
CREATE TRIGGER tasks_no_delete BEFORE DELETE OR TRUNCATE ON deploy.tasks
  FOR EACH STATEMENT EXECUTE FUNCTION stella.refuse_mutation();

CREATE TABLE deploy.task_events (
  id bigserial PRIMARY KEY,
  tenant_id uuid NOT NULL REFERENCES tenancy.tenants(id),
  task_id uuid NOT NULL,
  kind text NOT NULL CHECK (kind IN ('queued', 'delivered', 'started', 'progress', 'log',
                                     'result', 'expired', 'cancelled', 'refused')),
  data jsonb NOT NULL DEFAULT '{{}}'::jsonb,
  at timestamptz NOT NULL DEFAULT clock_timestamp(),
  FOREIGN KEY (task_id, tenant_id) REFERENCES deploy.tasks (id, tenant_id)
);
CREATE INDEX task_events_task ON deploy.task_events (task_id, id);
GRANT SELECT, INSERT ON deploy.task_events TO {APP_ROLE};
GRANT USAGE ON SEQUENCE deploy.task_events_id_seq TO {APP_ROLE};
{append_only("deploy.task_events")}
{tenant_rls("deploy.task_events", write_check=ORCH)}
"""


def upgrade() -> None:
    op.execute(AGENT)
    op.execute(DEPLOY)


def downgrade() -> None:
    op.execute("DROP SCHEMA deploy CASCADE; DROP SCHEMA agent CASCADE;")
