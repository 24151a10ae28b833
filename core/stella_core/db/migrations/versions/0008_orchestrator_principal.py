"""The orchestrator is a principal of its own, and the database derives what it can.

Revision ID: 0008
Revises: 0007

An insider with their own login and raw SQL could approve and deploy without approvals: the
client's columns were trusted and any member could move a promotion or a run. Now:

- Each tenant has an orchestrator login role (`tenancy.orchestrators`), member of the NOLOGIN
  `stella_orchestrator` (created with the other roles by `stella db upgrade`). Only it moves a
  promotion to approved, deploying, deployed, failed or rolled_back, counts approvals (after
  verifying their signatures; `promotion.counted_approvals`), writes runs, steps, their log and
  workers, signs with the orchestrator key and seals the ledger.
- People request (release managers, admins), approve or reject (their own row, where the
  environment's policy makes them eligible) and cancel their own open requests: nothing else.
- A promotion's release name, digests, policy, required approvals and separation of duties are
  copied by the trigger from the release and the environment; history columns are written once.
- An environment's policy is changed by admins only, each change must name a `policy` evidence
  packet the admin signed for it, and a trigger records every version and audits it.
- Cross-table references carry the tenant (composite keys).
"""

from alembic import op

from stella_core.db.schema_sql import APP_ROLE, ORCHESTRATOR_ROLE, append_only, tenant_rls

revision = "0008"
down_revision = "0007"
branch_labels = None
depends_on = None

ADMINS = "(SELECT tenancy.has_role('admin'))"
WRITERS = "(SELECT tenancy.has_role('release-manager', 'admin'))"
ORCH = "(SELECT tenancy.is_orchestrator())"
# from -> to, as promotions.model.TRANSITIONS has them (unchanged since 0005).
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

TENANCY = f"""
GRANT SELECT ON stella.alembic_version TO {APP_ROLE};

CREATE TABLE tenancy.orchestrators (
  tenant_id uuid PRIMARY KEY REFERENCES tenancy.tenants(id),
  db_role text NOT NULL UNIQUE,
  created_at timestamptz NOT NULL DEFAULT now()
);

CREATE FUNCTION tenancy.is_orchestrator() RETURNS boolean
LANGUAGE plpgsql STABLE SECURITY DEFINER SET search_path = pg_catalog AS $$
BEGIN
  RETURN EXISTS (SELECT 1 FROM tenancy.orchestrators o
                  WHERE o.db_role = session_user
                    AND o.tenant_id = NULLIF(current_setting('app.tenant_id', true), '')::uuid);
END $$;

CREATE OR REPLACE FUNCTION tenancy.current_tenant() RETURNS uuid
LANGUAGE plpgsql STABLE SECURITY DEFINER SET search_path = pg_catalog AS $$
DECLARE
  found uuid;
BEGIN
  -- One statement (one cached plan) for people and the orchestrator: RLS calls this often.
  SELECT t.tenant_id INTO found FROM (
    SELECT u.tenant_id FROM tenancy.users u
     WHERE u.db_role = session_user AND NOT u.disabled
       AND u.tenant_id = NULLIF(current_setting('app.tenant_id', true), '')::uuid
    UNION ALL
    SELECT o.tenant_id FROM tenancy.orchestrators o
     WHERE o.db_role = session_user
       AND o.tenant_id = NULLIF(current_setting('app.tenant_id', true), '')::uuid) t
  LIMIT 1;
  RETURN found;
END $$;

-- Who wrote a row, as product data shows it: the person's name, or 'orchestrator' (a name no
-- person may take).
CREATE FUNCTION tenancy.actor_name() RETURNS text
LANGUAGE plpgsql STABLE SECURITY DEFINER SET search_path = pg_catalog AS $$
BEGIN
  IF tenancy.is_orchestrator() THEN
    RETURN 'orchestrator';
  END IF;
  RETURN COALESCE(tenancy.current_person(), session_user);
END $$;

CREATE FUNCTION tenancy.orchestrator_tenant() RETURNS uuid
LANGUAGE sql STABLE SECURITY DEFINER SET search_path = pg_catalog AS $$
  SELECT o.tenant_id FROM tenancy.orchestrators o WHERE o.db_role = session_user
$$;
DROP POLICY tenants_read ON tenancy.tenants;
CREATE POLICY tenants_read ON tenancy.tenants FOR SELECT
  USING (id IN (SELECT u.tenant_id FROM tenancy.users u WHERE u.db_role = session_user)
         OR id = (SELECT tenancy.orchestrator_tenant()));

-- Keys: a person registers only their own, the orchestrator only orchestrator keys.
DROP POLICY signing_keys_tenant_insert ON tenancy.signing_keys;
CREATE POLICY signing_keys_tenant_insert ON tenancy.signing_keys FOR INSERT WITH CHECK (
  tenant_id = (SELECT tenancy.current_tenant())
  AND ((owner_kind = 'person' AND owner = (SELECT tenancy.current_person()))
       OR (owner_kind = 'orchestrator' AND {ORCH})));
"""

EVIDENCE = f"""
ALTER TABLE evidence.packets ADD CONSTRAINT packets_id_tenant UNIQUE (id, tenant_id);

-- The orchestrator's key signs only in the orchestrator's session, a person's key only in
-- that person's.
CREATE OR REPLACE FUNCTION evidence.signer_allowed(tenant uuid, signer text,
                                                   orchestrator_only boolean = false)
RETURNS boolean
LANGUAGE plpgsql STABLE SECURITY DEFINER SET search_path = pg_catalog AS $$
BEGIN
  RETURN EXISTS (SELECT 1 FROM tenancy.signing_keys k
                  WHERE k.tenant_id = tenant AND k.key_id = signer
                    AND ((k.owner_kind = 'orchestrator' AND tenancy.is_orchestrator())
                         OR (NOT orchestrator_only AND k.owner_kind = 'person'
                             AND k.owner = tenancy.current_person())));
END $$;

CREATE OR REPLACE FUNCTION evidence.packets_chain() RETURNS trigger LANGUAGE plpgsql AS $$
DECLARE
  last record;
BEGIN
  PERFORM pg_advisory_xact_lock(hashtextextended('stella.evidence:' || NEW.tenant_id::text, 0));
  SELECT p.seq, p.hash INTO last FROM evidence.packets p
   WHERE p.tenant_id = NEW.tenant_id ORDER BY p.seq DESC LIMIT 1;
  NEW.seq := COALESCE(last.seq, 0) + 1;
  NEW.prev_hash := COALESCE(last.hash, repeat('0', 64));
  NEW.actor := tenancy.actor_name();
  NEW.created_at := date_trunc('microseconds', clock_timestamp());
  NEW.bundle_digest := 'sha256:' || encode(sha256(NEW.bundle), 'hex');
  NEW.hash := evidence.chain_hash(NEW.prev_hash, NEW.seq, NEW.bundle_digest);
  RETURN NEW;
END $$;
"""

ENVIRONMENTS = f"""
ALTER TABLE env.environments
  ADD COLUMN policy_version integer NOT NULL DEFAULT 1,
  ADD COLUMN policy_packet_id uuid,
  ADD FOREIGN KEY (policy_packet_id, tenant_id) REFERENCES evidence.packets (id, tenant_id);

-- The gate configuration an environment is decided by; the same document as
-- stella_core.promotions.model.environment_policy (a test compares them).
CREATE FUNCTION env.policy_document(tenant uuid, environment text) RETURNS jsonb
LANGUAGE plpgsql STABLE SET search_path = pg_catalog AS $$
DECLARE
  e record;
  previous text;
  approval jsonb;
  gates jsonb;
BEGIN
  SELECT * INTO e FROM env.environments x WHERE x.tenant_id = tenant AND x.name = environment;
  IF NOT FOUND THEN
    RETURN NULL;
  END IF;
  SELECT x.name INTO previous FROM env.environments x
   WHERE x.tenant_id = tenant AND x.promotion_order < e.promotion_order
   ORDER BY x.promotion_order DESC LIMIT 1;
  approval := jsonb_build_object(
    'required', e.required_approvals,
    'separationOfDuties', e.separation_of_duties,
    'eligibleRoles', to_jsonb(ARRAY(SELECT DISTINCT r COLLATE "C" FROM unnest(e.approver_roles) r
                                    ORDER BY 1)),
    'eligiblePersons', to_jsonb(ARRAY(SELECT DISTINCT p COLLATE "C"
                                        FROM unnest(e.approver_persons) p ORDER BY 1)));
  IF e.quorum IS NOT NULL AND e.quorum <> '{{}}'::jsonb THEN
    approval := approval || jsonb_build_object('quorum', e.quorum);
  END IF;
  gates := jsonb_build_array(
    jsonb_build_object('id', 'freeze-window', 'type', 'freeze-window', 'config', '{{}}'::jsonb),
    jsonb_build_object('id', 'predecessor', 'type', 'predecessor',
                       'config', jsonb_build_object('previous', previous)),
    jsonb_build_object('id', 'approval', 'type', 'approval', 'config', approval));
  IF e.schedule IS NOT NULL AND e.schedule <> 'null'::jsonb THEN
    gates := gates || jsonb_build_array(jsonb_build_object(
      'id', 'schedule', 'type', 'schedule',
      'config', jsonb_build_object('windows', e.schedule)));
  END IF;
  RETURN jsonb_build_object('environment', e.name, 'gates', gates);
END $$;

CREATE TABLE env.policy_versions (
  tenant_id uuid NOT NULL REFERENCES tenancy.tenants(id),
  environment text NOT NULL,
  version integer NOT NULL CHECK (version >= 1),
  policy jsonb NOT NULL,
  packet_id uuid,
  changed_by text NOT NULL,
  changed_at timestamptz NOT NULL,
  PRIMARY KEY (tenant_id, environment, version),
  FOREIGN KEY (tenant_id, environment) REFERENCES env.environments (tenant_id, name),
  FOREIGN KEY (packet_id, tenant_id) REFERENCES evidence.packets (id, tenant_id)
);
GRANT SELECT ON env.policy_versions TO {APP_ROLE};
{append_only("env.policy_versions")}
{tenant_rls("env.policy_versions")}

-- Versions from before this migration: version 1, as the environment is now, unsigned. The
-- migration has no tenant, and forced RLS binds the owner too: lifted for these statements.
ALTER TABLE env.environments NO FORCE ROW LEVEL SECURITY;
ALTER TABLE env.policy_versions NO FORCE ROW LEVEL SECURITY;
INSERT INTO env.policy_versions (tenant_id, environment, version, policy, changed_by, changed_at)
SELECT e.tenant_id, e.name, 1, env.policy_document(e.tenant_id, e.name), e.created_by,
       e.created_at
  FROM env.environments e;
ALTER TABLE env.environments FORCE ROW LEVEL SECURITY;
ALTER TABLE env.policy_versions FORCE ROW LEVEL SECURITY;

-- A policy is set by an admin, with a `policy` packet the admin signed for this change; the
-- columns that decide who may approve what are history once a promotion names them.
CREATE FUNCTION env.check_policy_change() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
  IF NOT tenancy.has_role('admin') THEN
    RAISE EXCEPTION 'environment %: only an admin sets a policy', NEW.name
      USING ERRCODE = 'insufficient_privilege';
  END IF;
  IF TG_OP = 'UPDATE' THEN
    IF NEW.id <> OLD.id OR NEW.tenant_id <> OLD.tenant_id OR NEW.name <> OLD.name
       OR NEW.created_at <> OLD.created_at OR NEW.created_by <> OLD.created_by THEN
      RAISE EXCEPTION 'environment %: its identity cannot change', OLD.name
        USING ERRCODE = 'insufficient_privilege';
    END IF;
    IF (NEW.required_approvals, NEW.separation_of_duties, NEW.approver_roles,
        NEW.approver_persons, NEW.quorum, NEW.schedule, NEW.workflow, NEW.auto_promote_from,
        NEW.promotion_order)
       IS NOT DISTINCT FROM
       (OLD.required_approvals, OLD.separation_of_duties, OLD.approver_roles,
        OLD.approver_persons, OLD.quorum, OLD.schedule, OLD.workflow, OLD.auto_promote_from,
        OLD.promotion_order) THEN
      IF NEW.policy_packet_id IS DISTINCT FROM OLD.policy_packet_id
         OR NEW.policy_version <> OLD.policy_version THEN
        RAISE EXCEPTION 'environment %: a policy packet names a change', OLD.name
          USING ERRCODE = 'check_violation';
      END IF;
      RETURN NEW;
    END IF;
    IF NEW.policy_packet_id IS NOT DISTINCT FROM OLD.policy_packet_id THEN
      RAISE EXCEPTION 'environment %: a policy change needs its own signed policy packet '
        '(stella env set)', OLD.name USING ERRCODE = 'insufficient_privilege';
    END IF;
    NEW.policy_version := OLD.policy_version + 1;
  ELSE
    NEW.policy_version := 1;
  END IF;
  IF NEW.policy_packet_id IS NULL OR NOT EXISTS (
       SELECT 1 FROM evidence.packets p
        JOIN tenancy.signing_keys k ON k.tenant_id = p.tenant_id AND k.key_id = p.signer_key_id
        WHERE p.id = NEW.policy_packet_id AND p.tenant_id = NEW.tenant_id
          AND p.type = 'policy' AND p.environment = NEW.name
          AND k.owner_kind = 'person' AND k.owner = tenancy.current_person()) THEN
    RAISE EXCEPTION 'environment %: a policy needs a policy packet signed by the admin who '
      'sets it (stella env add / stella env set)', NEW.name
      USING ERRCODE = 'insufficient_privilege';
  END IF;
  IF EXISTS (SELECT 1 FROM env.policy_versions v WHERE v.tenant_id = NEW.tenant_id
                AND v.packet_id = NEW.policy_packet_id) THEN
    RAISE EXCEPTION 'environment %: that policy packet names an earlier version', NEW.name
      USING ERRCODE = 'insufficient_privilege';
  END IF;
  RETURN NEW;
END $$;
CREATE TRIGGER environments_policy BEFORE INSERT OR UPDATE ON env.environments
  FOR EACH ROW EXECUTE FUNCTION env.check_policy_change();

-- Every version is kept and audited, whoever wrote it and however.
CREATE FUNCTION env.record_policy_version() RETURNS trigger
LANGUAGE plpgsql SECURITY DEFINER SET search_path = pg_catalog AS $$
DECLARE
  doc jsonb;
BEGIN
  IF TG_OP = 'UPDATE' AND NEW.policy_version = OLD.policy_version THEN
    RETURN NULL;
  END IF;
  doc := env.policy_document(NEW.tenant_id, NEW.name);
  INSERT INTO env.policy_versions (tenant_id, environment, version, policy, packet_id,
                                   changed_by, changed_at)
  VALUES (NEW.tenant_id, NEW.name, NEW.policy_version, doc, NEW.policy_packet_id,
          tenancy.actor_name(), clock_timestamp());
  INSERT INTO tenancy.audit_log (tenant_id, chain_index, at, actor, action, entity_type,
                                 entity_id, details, prev_hash, hash)
  VALUES (NEW.tenant_id, 0, now(), '', 'environment.policy', 'environment', NEW.name,
          jsonb_build_object('version', NEW.policy_version, 'policy', doc,
                             'packet', NEW.policy_packet_id), '', '');
  RETURN NULL;
END $$;
CREATE TRIGGER environments_policy_version AFTER INSERT OR UPDATE ON env.environments
  FOR EACH ROW EXECUTE FUNCTION env.record_policy_version();

-- Admins alone set policy (release managers still add freezes).
DROP POLICY environments_tenant_insert ON env.environments;
DROP POLICY environments_tenant_update ON env.environments;
DROP POLICY environments_tenant_delete ON env.environments;
CREATE POLICY environments_tenant_insert ON env.environments FOR INSERT
  WITH CHECK (tenant_id = (SELECT tenancy.current_tenant()) AND {ADMINS});
CREATE POLICY environments_tenant_update ON env.environments FOR UPDATE
  USING (tenant_id = (SELECT tenancy.current_tenant()))
  WITH CHECK (tenant_id = (SELECT tenancy.current_tenant()) AND {ADMINS});
REVOKE UPDATE ON env.environments FROM {APP_ROLE};
GRANT UPDATE (required_approvals, separation_of_duties, approver_roles, approver_persons,
              quorum, schedule, workflow, auto_promote_from, promotion_order, policy_packet_id)
  ON env.environments TO {APP_ROLE};
"""

PROMOTIONS = f"""
ALTER TABLE release.releases ADD CONSTRAINT releases_id_tenant UNIQUE (id, tenant_id);
ALTER TABLE release.registries ADD CONSTRAINT registries_id_tenant UNIQUE (id, tenant_id);
ALTER TABLE release.components ADD CONSTRAINT components_id_tenant UNIQUE (id, tenant_id),
  DROP CONSTRAINT components_registry_id_fkey,
  ADD FOREIGN KEY (registry_id, tenant_id) REFERENCES release.registries (id, tenant_id);
ALTER TABLE release.release_components
  DROP CONSTRAINT release_components_release_id_fkey,
  DROP CONSTRAINT release_components_component_id_fkey,
  ADD FOREIGN KEY (release_id, tenant_id) REFERENCES release.releases (id, tenant_id),
  ADD FOREIGN KEY (component_id, tenant_id) REFERENCES release.components (id, tenant_id);
ALTER TABLE promotion.promotions
  DROP CONSTRAINT promotions_release_id_fkey,
  ADD FOREIGN KEY (release_id, tenant_id) REFERENCES release.releases (id, tenant_id),
  ADD FOREIGN KEY (run_id, tenant_id) REFERENCES workflow.runs (id, tenant_id),
  ADD COLUMN policy_version integer;
ALTER TABLE promotion.approvals
  DROP CONSTRAINT approvals_packet_id_fkey,
  ADD FOREIGN KEY (packet_id, tenant_id) REFERENCES evidence.packets (id, tenant_id),
  ADD CONSTRAINT approvals_id_tenant UNIQUE (id, tenant_id);
ALTER TABLE promotion.exceptions
  DROP CONSTRAINT exceptions_packet_id_fkey,
  ADD FOREIGN KEY (packet_id, tenant_id) REFERENCES evidence.packets (id, tenant_id);
ALTER TABLE workflow.runs
  DROP CONSTRAINT runs_release_id_fkey,
  ADD FOREIGN KEY (release_id, tenant_id) REFERENCES release.releases (id, tenant_id),
  ADD COLUMN requested_by text;

-- Whether a person may decide under a policy: the approval gate's rule.
CREATE FUNCTION promotion.eligible(policy jsonb, person text, role text) RETURNS boolean
LANGUAGE sql IMMUTABLE SET search_path = pg_catalog AS $$
  WITH cfg AS (
    SELECT g->'config' AS c FROM jsonb_array_elements(policy->'gates') g
     WHERE g->>'type' = 'approval' LIMIT 1)
  SELECT COALESCE((SELECT
    (jsonb_array_length(COALESCE(c->'eligibleRoles', '[]')) = 0
     AND jsonb_array_length(COALESCE(c->'eligiblePersons', '[]')) = 0)
    OR COALESCE(c->'eligibleRoles', '[]') ? role
    OR COALESCE(c->'eligiblePersons', '[]') ? person FROM cfg), false)
$$;

-- What a promotion is made of comes from the release and the environment, never the client.
CREATE OR REPLACE FUNCTION promotion.stamp_requester() RETURNS trigger LANGUAGE plpgsql AS $$
DECLARE
  e record;
  r record;
BEGIN
  SELECT x.required_approvals, x.separation_of_duties, x.policy_version, x.auto_promote_from
    INTO e FROM env.environments x WHERE x.tenant_id = NEW.tenant_id AND x.name = NEW.environment;
  IF NOT FOUND THEN
    RAISE EXCEPTION 'no environment %', NEW.environment USING ERRCODE = 'foreign_key_violation';
  END IF;
  SELECT x.id, x.name INTO r FROM release.releases x
   WHERE x.id = NEW.release_id AND x.tenant_id = NEW.tenant_id;
  IF NOT FOUND THEN
    RAISE EXCEPTION 'no release %', NEW.release_id USING ERRCODE = 'foreign_key_violation';
  END IF;
  IF tenancy.is_orchestrator() AND (e.auto_promote_from IS NULL OR NOT EXISTS (
       SELECT 1 FROM promotion.promotions p
        WHERE p.tenant_id = NEW.tenant_id AND p.release_id = NEW.release_id
          AND p.environment = e.auto_promote_from AND p.status = 'deployed')) THEN
    RAISE EXCEPTION 'the orchestrator requests only auto-promotions from where a release was '
      'deployed' USING ERRCODE = 'insufficient_privilege';
  END IF;
  NEW.release_name := r.name;
  NEW.components := COALESCE((SELECT jsonb_object_agg(c.component_name, c.digest)
                                FROM release.release_components c
                               WHERE c.release_id = r.id AND c.tenant_id = NEW.tenant_id),
                             '{{}}'::jsonb);
  NEW.required_approvals := e.required_approvals;
  NEW.separation_of_duties := e.separation_of_duties;
  NEW.policy := env.policy_document(NEW.tenant_id, NEW.environment);
  NEW.policy_version := e.policy_version;
  NEW.requested_by := tenancy.actor_name();
  NEW.requested_at := clock_timestamp();
  NEW.updated_at := NEW.requested_at;
  NEW.status := 'requested';
  NEW.last_decision := NULL;
  NEW.status_reason := NULL;
  NEW.run_id := NULL;
  RETURN NEW;
END $$;
DROP POLICY promotions_request_writers ON promotion.promotions;
CREATE POLICY promotions_request_writers ON promotion.promotions AS RESTRICTIVE FOR INSERT
  WITH CHECK ({WRITERS} OR {ORCH});

-- Approvals the orchestrator counted: it verified the signature over this promotion's
-- environment and digests, and the approver's eligibility, before writing the row.
CREATE TABLE promotion.counted_approvals (
  tenant_id uuid NOT NULL REFERENCES tenancy.tenants(id),
  promotion_id uuid NOT NULL,
  approval_id uuid NOT NULL,
  approver text NOT NULL,
  packet_digest text NOT NULL CHECK (packet_digest ~ '^sha256:[0-9a-f]{{64}}$'),
  counted_at timestamptz NOT NULL DEFAULT clock_timestamp(),
  PRIMARY KEY (promotion_id, approver),
  UNIQUE (approval_id),
  FOREIGN KEY (promotion_id, tenant_id) REFERENCES promotion.promotions (id, tenant_id),
  FOREIGN KEY (approval_id, tenant_id) REFERENCES promotion.approvals (id, tenant_id)
);
CREATE FUNCTION promotion.check_counted() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
  IF NOT EXISTS (
       SELECT 1 FROM promotion.approvals a JOIN evidence.packets e
           ON e.id = a.packet_id AND e.tenant_id = a.tenant_id
        WHERE a.id = NEW.approval_id AND a.tenant_id = NEW.tenant_id
          AND a.promotion_id = NEW.promotion_id AND a.approver = NEW.approver
          AND a.decision = 'approve' AND e.bundle_digest = NEW.packet_digest) THEN
    RAISE EXCEPTION 'approval % is not an approval of promotion % by % with packet %',
      NEW.approval_id, NEW.promotion_id, NEW.approver, NEW.packet_digest
      USING ERRCODE = 'check_violation';
  END IF;
  NEW.counted_at := clock_timestamp();
  RETURN NEW;
END $$;
CREATE TRIGGER counted_approvals_check BEFORE INSERT ON promotion.counted_approvals
  FOR EACH ROW EXECUTE FUNCTION promotion.check_counted();
GRANT SELECT ON promotion.counted_approvals TO {APP_ROLE};
GRANT INSERT ON promotion.counted_approvals TO {ORCHESTRATOR_ROLE};
{append_only("promotion.counted_approvals")}
{tenant_rls("promotion.counted_approvals", write_check=ORCH)}

-- A person's approval: stamped, eligible under the promotion's own policy, never the
-- requester's under separation of duties, with an approval packet of theirs about it.
CREATE OR REPLACE FUNCTION promotion.check_approval() RETURNS trigger
LANGUAGE plpgsql SECURITY DEFINER SET search_path = pg_catalog AS $$
DECLARE
  p record;
  me record;
BEGIN
  NEW.approver := session_user;
  NEW.at := clock_timestamp();
  IF tenancy.is_orchestrator() THEN
    RAISE EXCEPTION 'the orchestrator approves nothing' USING ERRCODE = 'insufficient_privilege';
  END IF;
  SELECT pr.requested_by, pr.separation_of_duties, pr.status, pr.tenant_id, pr.policy INTO p
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
  SELECT u.name, u.role INTO me FROM tenancy.users u
   WHERE u.db_role = session_user AND u.tenant_id = NEW.tenant_id AND NOT u.disabled;
  IF NOT FOUND OR NOT promotion.eligible(p.policy, me.name, me.role) THEN
    RAISE EXCEPTION '% is not eligible to decide promotion %', session_user, NEW.promotion_id
      USING ERRCODE = 'insufficient_privilege';
  END IF;
  NEW.role := me.role;
  IF NEW.packet_id IS NULL OR NOT EXISTS (
       SELECT 1 FROM evidence.packets e
         JOIN tenancy.signing_keys k ON k.tenant_id = e.tenant_id AND k.key_id = e.signer_key_id
        WHERE e.id = NEW.packet_id AND e.tenant_id = NEW.tenant_id AND e.type = 'approval'
          AND e.promotion_id = NEW.promotion_id AND k.owner_kind = 'person'
          AND k.owner = me.name) THEN
    RAISE EXCEPTION 'a decision on promotion % needs an approval packet signed with a key of %',
      NEW.promotion_id, me.name USING ERRCODE = 'insufficient_privilege';
  END IF;
  RETURN NEW;
END $$;

-- Counted approvals as the database sees them: counted by the orchestrator, by a person who
-- is still an active, eligible member, never the requester under separation of duties, each
-- person once, every role's quorum met, and no rejection.
CREATE FUNCTION promotion.counted_approvers(promotion uuid)
RETURNS TABLE (approver text, role text)
LANGUAGE sql STABLE SECURITY DEFINER SET search_path = pg_catalog AS $$
  SELECT DISTINCT a.approver, a.role
    FROM promotion.promotions p
    JOIN promotion.approvals a ON a.promotion_id = p.id AND a.tenant_id = p.tenant_id
    JOIN promotion.counted_approvals c ON c.approval_id = a.id AND c.tenant_id = a.tenant_id
    JOIN tenancy.users u ON u.tenant_id = a.tenant_id AND u.db_role = a.approver
   WHERE p.id = promotion AND a.decision = 'approve' AND NOT u.disabled
     AND NOT (p.separation_of_duties AND a.approver = p.requested_by)
     AND promotion.eligible(p.policy, u.name, a.role)
$$;
CREATE OR REPLACE FUNCTION promotion.enough_approvals(promotion uuid) RETURNS boolean
LANGUAGE plpgsql STABLE SECURITY DEFINER SET search_path = pg_catalog AS $$
DECLARE
  p record;
BEGIN
  SELECT pr.required_approvals, pr.policy INTO p
    FROM promotion.promotions pr WHERE pr.id = promotion;
  IF NOT FOUND THEN
    RETURN false;
  END IF;
  IF EXISTS (SELECT 1 FROM promotion.approvals a
              WHERE a.promotion_id = promotion AND a.decision = 'reject') THEN
    RETURN false;
  END IF;
  IF (SELECT count(*) FROM promotion.counted_approvers(promotion)) < p.required_approvals THEN
    RETURN false;
  END IF;
  RETURN NOT EXISTS (
    SELECT 1 FROM jsonb_each_text(COALESCE(
      (SELECT g->'config'->'quorum' FROM jsonb_array_elements(p.policy->'gates') g
        WHERE g->>'type' = 'approval' LIMIT 1), '{{}}'::jsonb)) q
     WHERE (SELECT count(*) FROM promotion.counted_approvers(promotion) c
             WHERE c.role = q.key) < q.value::int);
END $$;

-- The state machine, by principal. The orchestrator decides; a person only cancels an open
-- request of their own (an admin any open one). History is written once.
CREATE OR REPLACE FUNCTION promotion.check_transition() RETURNS trigger LANGUAGE plpgsql AS $$
DECLARE
  run_status text;
  env_workflow text;
BEGIN
  IF NEW.id <> OLD.id OR NEW.tenant_id <> OLD.tenant_id OR NEW.release_id <> OLD.release_id
     OR NEW.release_name <> OLD.release_name OR NEW.components <> OLD.components
     OR NEW.environment <> OLD.environment OR NEW.reason <> OLD.reason
     OR NEW.requested_by <> OLD.requested_by OR NEW.requested_at <> OLD.requested_at
     OR NEW.policy <> OLD.policy OR NEW.required_approvals <> OLD.required_approvals
     OR NEW.separation_of_duties <> OLD.separation_of_duties
     OR NEW.policy_version IS DISTINCT FROM OLD.policy_version THEN
    RAISE EXCEPTION 'promotion %: only its status and outcome may change', OLD.id
      USING ERRCODE = 'insufficient_privilege';
  END IF;
  IF NOT tenancy.is_orchestrator() THEN
    IF NEW.status <> 'cancelled' OR OLD.status NOT IN ('requested', 'blocked', 'awaiting_approval')
       OR NEW.last_decision IS DISTINCT FROM OLD.last_decision
       OR NEW.run_id IS DISTINCT FROM OLD.run_id THEN
      RAISE EXCEPTION 'promotion %: only the orchestrator moves a promotion from % to %; a '
        'person may only cancel an open request', OLD.id, OLD.status, NEW.status
        USING ERRCODE = 'insufficient_privilege';
    END IF;
    IF OLD.requested_by <> tenancy.actor_name() AND NOT tenancy.has_role('admin') THEN
      RAISE EXCEPTION 'promotion %: only its requester or an admin may cancel it', OLD.id
        USING ERRCODE = 'insufficient_privilege';
    END IF;
    NEW.status_reason := 'cancelled by ' || tenancy.actor_name()
      || CASE WHEN COALESCE(NEW.status_reason, '') IN ('', COALESCE(OLD.status_reason, ''))
              THEN '' ELSE ': ' || NEW.status_reason END;
    NEW.updated_at := clock_timestamp();
    RETURN NEW;
  END IF;
  IF NEW.status <> OLD.status OR NEW.status IN ('blocked', 'awaiting_approval') THEN
    IF (OLD.status, NEW.status) NOT IN (VALUES {TRANSITIONS}) THEN
      RAISE EXCEPTION 'promotion % cannot go from % to %', OLD.id, OLD.status, NEW.status
        USING ERRCODE = 'check_violation';
    END IF;
  END IF;
  IF OLD.run_id IS NOT NULL AND NEW.run_id IS DISTINCT FROM OLD.run_id THEN
    RAISE EXCEPTION 'promotion %: its run is written once', OLD.id
      USING ERRCODE = 'insufficient_privilege';
  END IF;
  IF NEW.status = 'approved' AND OLD.status <> 'approved'
     AND NOT promotion.enough_approvals(OLD.id) THEN
    RAISE EXCEPTION 'promotion % does not have the approvals it needs', OLD.id
      USING ERRCODE = 'insufficient_privilege';
  END IF;
  IF NEW.status = 'deploying' AND OLD.status <> 'deploying' AND NEW.run_id IS NULL THEN
    RAISE EXCEPTION 'promotion %: deploying needs its run', OLD.id
      USING ERRCODE = 'check_violation';
  END IF;
  IF NEW.status <> OLD.status AND OLD.status = 'deploying' THEN
    SELECT r.status INTO run_status FROM workflow.runs r WHERE r.id = NEW.run_id;
    IF (NEW.status = 'deployed' AND run_status IS DISTINCT FROM 'succeeded')
       OR (NEW.status <> 'deployed' AND run_status NOT IN
           ('failed', 'cancelled', 'timed_out', 'rolled_back')) THEN
      RAISE EXCEPTION 'promotion %: cannot be % while its run is %', OLD.id, NEW.status,
        COALESCE(run_status, 'missing') USING ERRCODE = 'check_violation';
    END IF;
  END IF;
  IF NEW.status = 'deployed' AND OLD.status = 'approved' THEN
    SELECT x.workflow INTO env_workflow FROM env.environments x
     WHERE x.tenant_id = OLD.tenant_id AND x.name = OLD.environment;
    IF env_workflow IS NOT NULL THEN
      RAISE EXCEPTION 'promotion %: deployed only by its environment''s workflow %', OLD.id,
        env_workflow USING ERRCODE = 'check_violation';
    END IF;
  END IF;
  NEW.updated_at := clock_timestamp();
  RETURN NEW;
END $$;
REVOKE UPDATE ON promotion.promotions FROM {APP_ROLE};
GRANT UPDATE (status, status_reason) ON promotion.promotions TO {APP_ROLE};
GRANT UPDATE (status, last_decision, status_reason, run_id) ON promotion.promotions
  TO {ORCHESTRATOR_ROLE};
"""

WORKFLOWS = f"""
-- Runs, steps, their log and the workers are the orchestrator's to write.
REVOKE INSERT, UPDATE ON workflow.runs, workflow.step_runs FROM {APP_ROLE};
REVOKE INSERT ON workflow.run_events FROM {APP_ROLE};
REVOKE INSERT, UPDATE, DELETE ON workflow.workers FROM {APP_ROLE};
GRANT INSERT, UPDATE ON workflow.runs, workflow.step_runs TO {ORCHESTRATOR_ROLE};
GRANT INSERT ON workflow.run_events TO {ORCHESTRATOR_ROLE};
GRANT INSERT, UPDATE, DELETE ON workflow.workers TO {ORCHESTRATOR_ROLE};
DROP POLICY runs_start_writers ON workflow.runs;
CREATE POLICY runs_orchestrator_insert ON workflow.runs AS RESTRICTIVE FOR INSERT
  WITH CHECK ({ORCH});
CREATE POLICY runs_orchestrator_update ON workflow.runs AS RESTRICTIVE FOR UPDATE
  USING ({ORCH});
CREATE POLICY step_runs_orchestrator_insert ON workflow.step_runs AS RESTRICTIVE FOR INSERT
  WITH CHECK ({ORCH});
CREATE POLICY step_runs_orchestrator_update ON workflow.step_runs AS RESTRICTIVE FOR UPDATE
  USING ({ORCH});
CREATE POLICY run_events_orchestrator_insert ON workflow.run_events AS RESTRICTIVE FOR INSERT
  WITH CHECK ({ORCH});
CREATE POLICY workers_orchestrator_write ON workflow.workers AS RESTRICTIVE FOR ALL
  USING (true) WITH CHECK ({ORCH});

-- A promotion's run carries the approvals the orchestrator counted, never a client's list;
-- what a run is and who asked for it are written once.
CREATE OR REPLACE FUNCTION workflow.check_promotion_run() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
  IF TG_OP = 'INSERT' THEN
    NEW.created_by := tenancy.actor_name();
    NEW.created_at := clock_timestamp();
    IF NEW.promotion_id IS NULL THEN
      NEW.approved_by := NULL;
    ELSE
      IF NOT promotion.run_may_start(NEW.promotion_id) THEN
        RAISE EXCEPTION 'only an approved promotion starts its run'
          USING ERRCODE = 'insufficient_privilege';
      END IF;
      NEW.approved_by := ARRAY(
        SELECT c.approver FROM promotion.counted_approvals c
         WHERE c.promotion_id = NEW.promotion_id AND c.tenant_id = NEW.tenant_id
         ORDER BY c.counted_at, c.approver);
      NEW.requested_by := (SELECT p.requested_by FROM promotion.promotions p
                            WHERE p.id = NEW.promotion_id);
    END IF;
    RETURN NEW;
  END IF;
  IF NEW.approved_by IS DISTINCT FROM OLD.approved_by
     OR NEW.promotion_id IS DISTINCT FROM OLD.promotion_id
     OR NEW.created_by <> OLD.created_by OR NEW.created_at <> OLD.created_at
     OR NEW.requested_by IS DISTINCT FROM OLD.requested_by
     OR NEW.template_version_id <> OLD.template_version_id
     OR NEW.release_id IS DISTINCT FROM OLD.release_id
     OR NEW.release IS DISTINCT FROM OLD.release OR NEW.inputs <> OLD.inputs THEN
    RAISE EXCEPTION 'a run''s promotion, approvals, release and inputs are fixed when it starts'
      USING ERRCODE = 'insufficient_privilege';
  END IF;
  RETURN NEW;
END $$;
DROP TRIGGER runs_stamp_actor ON workflow.runs;

-- The log is the orchestrator's; a step decision it records names the person who decided,
-- and only when that person's own decision row says so.
CREATE OR REPLACE FUNCTION workflow.stamp_event() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
  NEW.at := clock_timestamp();
  NEW.actor := tenancy.actor_name();
  IF NEW.kind IN ('step.approved', 'step.rejected') AND EXISTS (
       SELECT 1 FROM workflow.approvals a
        WHERE a.run_id = NEW.run_id AND a.tenant_id = NEW.tenant_id AND a.node_id = NEW.node_id
          AND a.person = NEW.details->>'person'
          AND a.decision = CASE NEW.kind WHEN 'step.approved' THEN 'approve' ELSE 'reject' END)
  THEN
    NEW.actor := NEW.details->>'person';
  END IF;
  RETURN NEW;
END $$;
"""


def upgrade() -> None:
    for block in (TENANCY, EVIDENCE, ENVIRONMENTS, PROMOTIONS, WORKFLOWS):
        op.execute(block)


def downgrade() -> None:
    raise NotImplementedError("0008 is not reversible: it removes privileges people had")
