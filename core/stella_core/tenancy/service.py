"""People and tenants: provisioning login roles, product roles, the audit log."""

from __future__ import annotations

import hashlib
import re
import secrets
from uuid import UUID, uuid4

import sqlalchemy.exc
from psycopg import sql
from sqlalchemy import Connection, Engine, text

from stella_core.crypto.keys import PublicKey
from stella_core.db.engine import Database, translate
from stella_core.db.schema_sql import APP_ROLE, ORCHESTRATOR_ROLE
from stella_core.errors import (
    AlreadyExistsError,
    AuthorizationError,
    InvalidNameError,
    NotFoundError,
)
from stella_core.limits import check_name
from stella_core.tenancy.keys import RegisteredKey
from stella_core.tenancy.model import (
    RESERVED_NAMES,
    RESERVED_PREFIXES,
    Identity,
    ProductRole,
    User,
)
from stella_core.tenancy.store import KeyStore, TenancyStore, verify_chain


def check_person_name(name: str) -> str:
    check_name("user", name)
    if name in RESERVED_NAMES or name.startswith(RESERVED_PREFIXES):
        raise InvalidNameError(f"user name {name!r} is reserved")
    return name


def person_name_from_os(login: str) -> str:
    """A usable person name from an OS login (the first admin is whoever initialises)."""
    name = re.sub(r"[^a-z0-9._-]+", "-", login.lower()).strip("-._")[:63] or "admin"
    if not name[0].isalnum():
        name = "u" + name
    if name in RESERVED_NAMES or name.startswith(RESERVED_PREFIXES):
        name = "admin"
    return name


# PostgreSQL truncates identifiers longer than this (in bytes).
_MAX_ROLE_BYTES = 63
PERSON_ROLE_PREFIX = "stella_p_"


def person_role_name(tenant_id: UUID, name: str) -> str:
    """A person's login role: role names are cluster-wide and person names are unique only in
    their tenant, so the role carries both (the name hashed where it would not fit)."""
    role = f"{PERSON_ROLE_PREFIX}{tenant_id.hex}_{name}"
    if len(role.encode()) <= _MAX_ROLE_BYTES:
        return role
    digest = hashlib.sha256(name.encode()).hexdigest()
    return role[: _MAX_ROLE_BYTES - 21] + "_" + digest[:20]


def orchestrator_role_name(tenant_id: UUID) -> str:
    """The tenant's orchestrator login role (role names are cluster-wide, tenants are not)."""
    return f"stella_orchestrator_{tenant_id.hex}"


class Provisioner:
    """Administrative connection: creates tenants and login roles. Never used for product data."""

    def __init__(self, admin_engine: Engine) -> None:
        self.engine = admin_engine

    def create_login_role(self, name: str) -> str:
        """Create the person's login role (member of the app role); returns its password."""
        password = secrets.token_urlsafe(32)
        stmt = sql.SQL(
            "CREATE ROLE {} LOGIN PASSWORD {} NOSUPERUSER NOCREATEDB NOCREATEROLE "
            "NOBYPASSRLS IN ROLE {}"
        ).format(sql.Identifier(name), sql.Literal(password), sql.Identifier(APP_ROLE))
        raw = self.engine.raw_connection()
        try:
            cur = raw.cursor()
            cur.execute("SELECT 1 FROM pg_roles WHERE rolname = %s", (name,))
            if cur.fetchone():
                raise AlreadyExistsError(f"a database role named {name!r} exists already")
            driver = raw.driver_connection
            assert driver is not None
            driver.execute(stmt)
            raw.commit()
        finally:
            raw.close()
        return password

    def orchestrator_exists(self, tenant_id: UUID) -> bool:
        with self.engine.connect() as conn:
            found = conn.execute(
                text("SELECT 1 FROM tenancy.orchestrators WHERE tenant_id = :t"), {"t": tenant_id}
            ).first()
        return found is not None

    def provision_orchestrator(self, tenant_id: UUID) -> tuple[str, str]:
        """The tenant's orchestrator: a login role of its own (never a person's, never a
        superuser) with a new password. Returns (role, password); an existing role gets the new
        password, so whoever held the old one no longer can act as the orchestrator."""
        role = orchestrator_role_name(tenant_id)
        password = secrets.token_urlsafe(32)
        raw = self.engine.raw_connection()
        try:
            cur = raw.cursor()
            cur.execute("SELECT 1 FROM pg_roles WHERE rolname = %s", (role,))
            driver = raw.driver_connection
            assert driver is not None
            if cur.fetchone():
                driver.execute(
                    sql.SQL("ALTER ROLE {} WITH LOGIN PASSWORD {}").format(
                        sql.Identifier(role), sql.Literal(password)
                    )
                )
            else:
                driver.execute(
                    sql.SQL(
                        "CREATE ROLE {} LOGIN PASSWORD {} NOSUPERUSER NOCREATEDB NOCREATEROLE "
                        "NOBYPASSRLS IN ROLE {}, {}"
                    ).format(
                        sql.Identifier(role),
                        sql.Literal(password),
                        sql.Identifier(APP_ROLE),
                        sql.Identifier(ORCHESTRATOR_ROLE),
                    )
                )
            driver.execute(
                "INSERT INTO tenancy.orchestrators (tenant_id, db_role) VALUES (%s, %s)"
                " ON CONFLICT (tenant_id) DO NOTHING",
                (tenant_id, role),
            )
            raw.commit()
        finally:
            raw.close()
        return role, password

    def drop_login_role(self, name: str) -> None:
        raw = self.engine.raw_connection()
        try:
            driver = raw.driver_connection
            assert driver is not None
            driver.execute(sql.SQL("DROP ROLE IF EXISTS {}").format(sql.Identifier(name)))
            raw.commit()
        finally:
            raw.close()

    def initialise(self, tenant_name: str, admin_name: str) -> tuple[UUID, str]:
        """First use: a tenant and its first admin. Returns (tenant id, admin password)."""
        check_person_name(admin_name)
        tenant_id = uuid4()  # chosen here: the admin's login role is named after it
        role = person_role_name(tenant_id, admin_name)
        password = self.create_login_role(role)
        try:
            with self.engine.begin() as conn:
                conn.execute(
                    text("INSERT INTO tenancy.tenants (id, name) VALUES (:t, :n)"),
                    {"t": tenant_id, "n": tenant_name},
                )
                conn.execute(
                    text(
                        "INSERT INTO tenancy.users (tenant_id, name, db_role, role) "
                        "VALUES (:t, :n, :r, 'admin')"
                    ),
                    {"t": tenant_id, "n": admin_name, "r": role},
                )
                conn.execute(
                    text(
                        "INSERT INTO tenancy.audit_log (tenant_id, chain_index, at, actor, action,"
                        " entity_type, entity_id, details, prev_hash, hash) VALUES (:t, 0, now(),"
                        " '', 'tenant.initialise', 'user', :n, CAST(:d AS jsonb), '', '')"
                    ),
                    {"t": tenant_id, "n": admin_name, "d": '{"role": "admin"}'},
                )
        except sqlalchemy.exc.DBAPIError as exc:
            self.drop_login_role(role)
            raise translate(exc) from exc
        return tenant_id, password

    def tenant_id(self, name: str) -> UUID | None:
        with self.engine.connect() as conn:
            value = conn.execute(
                text("SELECT id FROM tenancy.tenants WHERE name = :n"), {"n": name}
            ).scalar()
        return UUID(str(value)) if value else None

    def mark_demo(self, tenant_id: UUID, requested_by: str) -> bool:
        """Declare a tenant a demo (the application role cannot: it may not update tenants),
        with an audit entry in the same transaction. False when it was one already."""
        with self.engine.begin() as conn:
            changed = conn.execute(
                text("UPDATE tenancy.tenants SET demo = true WHERE id = :t AND NOT demo"),
                {"t": tenant_id},
            ).rowcount
            if changed:
                TenancyStore(conn).append_audit(
                    tenant_id, "tenant.demo", "tenant", str(tenant_id), {"by": requested_by}
                )
        return bool(changed)

    def create_tenant(self, name: str) -> UUID:
        with self.engine.begin() as conn:
            value = conn.execute(
                text("INSERT INTO tenancy.tenants (name) VALUES (:n) RETURNING id"), {"n": name}
            ).scalar_one()
        return UUID(str(value))


class TenancyService:
    def __init__(self, db: Database, provisioner: Provisioner | None) -> None:
        self.db = db
        self.provisioner = provisioner

    # Other modules' use, inside their own transaction (so it commits or rolls back with it).
    @staticmethod
    def audit(
        conn: Connection,
        tenant_id: UUID,
        action: str,
        entity_type: str,
        entity_id: str,
        details: dict[str, object] | None = None,
    ) -> None:
        """Append an entry to the tenant's audit log (the database chains and stamps it)."""
        TenancyStore(conn).append_audit(tenant_id, action, entity_type, entity_id, details)

    @staticmethod
    def identity_in(conn: Connection) -> Identity | None:
        """Who this transaction's session is (None: not an active member of the tenant)."""
        return TenancyStore(conn).identity()

    @staticmethod
    def users_in(conn: Connection) -> list[User]:
        return TenancyStore(conn).list_users()

    @staticmethod
    def keys_in(conn: Connection, owner: str | None = None) -> list[RegisteredKey]:
        """Registered public keys (one owner's, or all), oldest first."""
        return KeyStore(conn).registered(owner)

    @staticmethod
    def active_key_in(conn: Connection, owner: str) -> RegisteredKey | None:
        """An owner's newest registered key: the one that signs now."""
        return KeyStore(conn).active(owner)

    @staticmethod
    def public_keys_in(conn: Connection) -> dict[str, PublicKey]:
        """Every registered public key by key id (old ones verify old evidence)."""
        return KeyStore(conn).public_keys()

    @staticmethod
    def register_key_in(
        conn: Connection, tenant_id: UUID, owner_kind: str, owner: str, key: PublicKey
    ) -> None:
        KeyStore(conn).register(tenant_id, owner_kind, owner, key)

    def whoami(self) -> Identity:
        with self.db.transaction() as conn:
            identity = TenancyStore(conn).identity()
        if identity is None:
            raise AuthorizationError("this profile's person is not an active member of its tenant")
        return identity

    def require(self, *roles: ProductRole) -> Identity:
        identity = self.whoami()
        if identity.role not in roles:
            allowed = " or ".join(r.value for r in roles)
            raise AuthorizationError(
                f"{identity.user} is {identity.role.value}; this needs {allowed}"
            )
        return identity

    def list_users(self) -> list[User]:
        with self.db.transaction() as conn:
            return TenancyStore(conn).list_users()

    def add_user(self, name: str, role: ProductRole) -> tuple[User, str]:
        """Create a person: login role, user row, audit entry. Returns the user and password
        (their login role is `person_role_name(tenant, name)`)."""
        check_person_name(name)
        identity = self.require(ProductRole.ADMIN)
        if self.provisioner is None:
            raise AuthorizationError(
                "adding people needs an administrative database connection "
                "(the embedded default, or STELLA_DATABASE_URL)"
            )
        with self.db.transaction() as conn:
            if TenancyStore(conn).get_user(name) is not None:
                raise AlreadyExistsError(f"user {name!r} exists already")
        login = person_role_name(identity.tenant_id, name)
        password = self.provisioner.create_login_role(login)
        try:
            with self.db.transaction() as conn:
                store = TenancyStore(conn)
                user = store.insert_user(identity.tenant_id, name, login, role)
                store.append_audit(
                    identity.tenant_id, "user.add", "user", name, {"role": role.value}
                )
        except Exception:
            self.provisioner.drop_login_role(login)
            raise
        return user, password

    def is_demo(self) -> bool:
        """Whether the database says this tenant is a demo (`stella demo seed` made it one):
        only then may the desk let anyone at it act as anyone without a passphrase."""
        with self.db.transaction() as conn:
            return TenancyStore(conn).is_demo()

    def mark_demo(self) -> bool:
        """Admins: declare this tenant a demo, through the administrative connection."""
        identity = self.require(ProductRole.ADMIN)
        if self.provisioner is None:
            raise AuthorizationError(
                "declaring a demo needs an administrative database connection "
                "(the embedded default, or STELLA_DATABASE_URL)"
            )
        return self.provisioner.mark_demo(identity.tenant_id, identity.user)

    def get_user(self, name: str) -> User:
        with self.db.transaction() as conn:
            user = TenancyStore(conn).get_user(name)
        if user is None:
            raise NotFoundError(f"no user named {name!r}")
        return user

    def verify_audit(self) -> tuple[int, list[str]]:
        with self.db.transaction() as conn:
            entries = TenancyStore(conn).audit_entries()
        return len(entries), verify_chain(entries)

    def audit_entries(self, limit: int | None = None) -> list[object]:
        with self.db.transaction() as conn:
            return [e for e, _ in TenancyStore(conn).audit_entries(limit)]
