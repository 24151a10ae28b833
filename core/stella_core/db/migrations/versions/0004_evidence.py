"""Evidence: registered signing keys, the packet ledger, its inputs and signed checkpoints.

Revision ID: 0004
Revises: 0003

- `tenancy.signing_keys`: public keys by id (sha256 of the SPKI DER, checked by the database
  itself). Append-only: rotation registers a new key, old ones stay so old evidence verifies.
  A person registers only their own key; orchestrator keys are an admin's.
- `evidence.packets`: append-only; a trigger numbers each tenant's packets (`seq` from 1, gap-free,
  one writer at a time) and chains them: `hash = sha256("stella-evidence-chain/v1\\n" || prev ||
  "\\n" || seq || "\\n" || bundle_digest)`, with the bundle digest computed by the database from
  the stored bytes. A packet may be signed by the orchestrator key or by the acting person's own.
- `evidence.inputs`: content-addressed documents the packets reference (the database checks the
  digest), append-only.
- `evidence.checkpoints`: signed C2SP checkpoint notes over the Merkle tree (RFC 9162) whose leaves
  are the chain hashes in `seq` order.
"""

from alembic import op

from stella_core.db.schema_sql import APP_ROLE, append_only, tenant_rls

revision = "0004"
down_revision = "0003"
branch_labels = None
depends_on = None

MEMBERS = "(SELECT NOT tenancy.has_role('auditor'))"
ADMINS = "(SELECT tenancy.has_role('admin'))"

UPGRADE = f"""
CREATE FUNCTION tenancy.current_person() RETURNS text
LANGUAGE plpgsql STABLE SECURITY DEFINER SET search_path = pg_catalog AS $$
DECLARE
  found text;
BEGIN
  SELECT u.name INTO found FROM tenancy.users u
   WHERE u.db_role = session_user AND NOT u.disabled
     AND u.tenant_id = NULLIF(current_setting('app.tenant_id', true), '')::uuid;
  RETURN found;
END $$;

-- sha256 of the DER inside a PEM block: the key id, recomputed so no row can lie about it.
CREATE FUNCTION tenancy.pem_key_id(pem text) RETURNS text
LANGUAGE sql IMMUTABLE STRICT SET search_path = pg_catalog AS $$
  SELECT encode(sha256(decode(regexp_replace(pem, '-----[A-Z ]+-----|\\s', '', 'g'), 'base64')),
                'hex')
$$;

CREATE TABLE tenancy.signing_keys (
  tenant_id uuid NOT NULL REFERENCES tenancy.tenants(id),
  key_id text NOT NULL CHECK (key_id ~ '^[0-9a-f]{{64}}$'),
  owner_kind text NOT NULL CHECK (owner_kind IN ('orchestrator', 'person')),
  owner text NOT NULL,
  public_key text NOT NULL CHECK (public_key LIKE '-----BEGIN PUBLIC KEY-----%'),
  registered_at timestamptz NOT NULL DEFAULT now(),
  created_by text NOT NULL DEFAULT session_user,
  PRIMARY KEY (tenant_id, key_id),
  CHECK (key_id = tenancy.pem_key_id(public_key)),
  CHECK (owner_kind = 'person' OR owner = 'orchestrator')
);
CREATE TRIGGER signing_keys_stamp_actor BEFORE INSERT ON tenancy.signing_keys
  FOR EACH ROW EXECUTE FUNCTION stella.stamp_created_by();
GRANT SELECT, INSERT ON tenancy.signing_keys TO {APP_ROLE};
{append_only("tenancy.signing_keys")}
{
    tenant_rls(
        "tenancy.signing_keys",
        write_check="(owner_kind = 'person' AND owner = (SELECT tenancy.current_person())) "
        f"OR {ADMINS}",
    )
}

CREATE SCHEMA evidence;
GRANT USAGE ON SCHEMA evidence TO {APP_ROLE};

CREATE TABLE evidence.inputs (
  tenant_id uuid NOT NULL REFERENCES tenancy.tenants(id),
  digest text NOT NULL CHECK (digest ~ '^sha256:[0-9a-f]{{64}}$'),
  media_type text NOT NULL,
  body bytea NOT NULL,
  created_at timestamptz NOT NULL DEFAULT now(),
  PRIMARY KEY (tenant_id, digest),
  CHECK (digest = 'sha256:' || encode(sha256(body), 'hex'))
);
GRANT SELECT, INSERT ON evidence.inputs TO {APP_ROLE};
{append_only("evidence.inputs")}
{tenant_rls("evidence.inputs", write_check=MEMBERS)}

-- Who may sign a packet: the orchestrator key, or the acting person's own key.
-- Checkpoints are the orchestrator's alone.
CREATE FUNCTION evidence.signer_allowed(tenant uuid, signer text, orchestrator_only boolean = false)
RETURNS boolean
LANGUAGE plpgsql STABLE SECURITY DEFINER SET search_path = pg_catalog AS $$
BEGIN
  RETURN EXISTS (SELECT 1 FROM tenancy.signing_keys k
                  WHERE k.tenant_id = tenant AND k.key_id = signer
                    AND (k.owner_kind = 'orchestrator'
                         OR (NOT orchestrator_only AND k.owner = tenancy.current_person())));
END $$;

CREATE TABLE evidence.packets (
  tenant_id uuid NOT NULL REFERENCES tenancy.tenants(id),
  seq bigint NOT NULL,
  id uuid NOT NULL DEFAULT gen_random_uuid() UNIQUE,
  type text NOT NULL,
  predicate_type text NOT NULL,
  subject_digests text[] NOT NULL,
  release_name text,
  environment text,
  promotion_id uuid,
  run_id uuid,
  actor text NOT NULL,
  signer_key_id text NOT NULL,
  created_at timestamptz NOT NULL,
  bundle bytea NOT NULL,
  bundle_digest text NOT NULL,
  prev_hash text NOT NULL,
  hash text NOT NULL,
  PRIMARY KEY (tenant_id, seq),
  FOREIGN KEY (tenant_id, signer_key_id) REFERENCES tenancy.signing_keys (tenant_id, key_id)
);
CREATE INDEX packets_release ON evidence.packets (tenant_id, release_name);
CREATE INDEX packets_promotion ON evidence.packets (tenant_id, promotion_id);
CREATE INDEX packets_run ON evidence.packets (tenant_id, run_id);
CREATE INDEX packets_created ON evidence.packets (tenant_id, created_at);

CREATE FUNCTION evidence.chain_hash(prev text, seq bigint, bundle_digest text) RETURNS text
LANGUAGE sql IMMUTABLE STRICT SET search_path = pg_catalog AS $$
  SELECT encode(sha256(convert_to(concat_ws(E'\\n', 'stella-evidence-chain/v1', prev, seq::text,
                                            bundle_digest), 'UTF8')), 'hex')
$$;
CREATE FUNCTION evidence.packets_chain() RETURNS trigger LANGUAGE plpgsql AS $$
DECLARE
  last record;
BEGIN
  -- One writer per tenant ledger at a time; the lock lasts until commit, so seq is gap-free
  -- and in commit order.
  PERFORM pg_advisory_xact_lock(hashtextextended('stella.evidence:' || NEW.tenant_id::text, 0));
  SELECT p.seq, p.hash INTO last FROM evidence.packets p
   WHERE p.tenant_id = NEW.tenant_id ORDER BY p.seq DESC LIMIT 1;
  NEW.seq := COALESCE(last.seq, 0) + 1;
  NEW.prev_hash := COALESCE(last.hash, repeat('0', 64));
  NEW.actor := session_user;
  NEW.created_at := date_trunc('microseconds', clock_timestamp());
  NEW.bundle_digest := 'sha256:' || encode(sha256(NEW.bundle), 'hex');
  NEW.hash := evidence.chain_hash(NEW.prev_hash, NEW.seq, NEW.bundle_digest);
  RETURN NEW;
END $$;
CREATE TRIGGER packets_chain BEFORE INSERT ON evidence.packets
  FOR EACH ROW EXECUTE FUNCTION evidence.packets_chain();
GRANT SELECT, INSERT ON evidence.packets TO {APP_ROLE};
{append_only("evidence.packets")}
{
    tenant_rls(
        "evidence.packets",
        write_check=f"{MEMBERS} AND evidence.signer_allowed(tenant_id, signer_key_id)",
    )
}

-- Any member may seal (an auditor exporting needs a checkpoint); only the orchestrator's key
-- signs one.
CREATE TABLE evidence.checkpoints (
  tenant_id uuid NOT NULL REFERENCES tenancy.tenants(id),
  tree_size bigint NOT NULL CHECK (tree_size > 0),
  root_hash text NOT NULL CHECK (root_hash ~ '^[0-9a-f]{{64}}$'),
  note text NOT NULL,
  signer_key_id text NOT NULL,
  created_at timestamptz NOT NULL DEFAULT now(),
  created_by text NOT NULL DEFAULT session_user,
  PRIMARY KEY (tenant_id, tree_size),
  FOREIGN KEY (tenant_id, signer_key_id) REFERENCES tenancy.signing_keys (tenant_id, key_id)
);
CREATE TRIGGER checkpoints_stamp_actor BEFORE INSERT ON evidence.checkpoints
  FOR EACH ROW EXECUTE FUNCTION stella.stamp_created_by();
GRANT SELECT, INSERT ON evidence.checkpoints TO {APP_ROLE};
{append_only("evidence.checkpoints")}
{
    tenant_rls(
        "evidence.checkpoints",
        write_check="evidence.signer_allowed(tenant_id, signer_key_id, true)",
    )
}
"""


def upgrade() -> None:
    op.execute(UPGRADE)


def downgrade() -> None:
    op.execute(
        "DROP SCHEMA evidence CASCADE; DROP TABLE tenancy.signing_keys;"
        " DROP FUNCTION tenancy.pem_key_id(text); DROP FUNCTION tenancy.current_person();"
    )
