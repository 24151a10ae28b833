"""Environment use cases."""

from __future__ import annotations

import builtins
import hashlib
from collections.abc import Callable, Mapping, Sequence
from datetime import UTC, datetime
from typing import Any
from uuid import UUID

from sqlalchemy import Connection
from sqlalchemy.exc import IntegrityError as SqlIntegrityError

from stella_core.crypto.secretbox import SecretBox
from stella_core.db.engine import Database
from stella_core.environments import connection
from stella_core.environments.model import (
    DEFAULT_APPROVER_ROLES,
    DEFAULT_RUNTIME,
    DEFAULT_SSH_PORT,
    MAX_ORDER,
    MAX_REQUIRED_APPROVALS,
    Environment,
    Freeze,
    Target,
    TargetType,
    WinrmAuth,
    default_directory,
    environment_policy,
)
from stella_core.environments.store import EnvironmentStore
from stella_core.errors import (
    AlreadyExistsError,
    AuthorizationError,
    DefinitionError,
    IntegrityError,
    NotFoundError,
)
from stella_core.evidence.model import Refs
from stella_core.evidence.packets import canonical_json
from stella_core.evidence.predicates import POLICY_V1, rfc3339
from stella_core.evidence.service import EvidenceService
from stella_core.limits import check_name, check_text, in_range
from stella_core.tenancy.model import ProductRole
from stella_core.tenancy.service import TenancyService
from stella_core.workflows.service import WorkflowService

_UNSET: Any = object()
# The decision engine's validation of a policy document, normalised (given by bootstrap: the
# promotions module decides by the policy, and sits above this one).
PolicyCheck = Callable[[Mapping[str, Any]], dict[str, Any]]


class EnvironmentService:
    """Environments and their policy. A policy is set by an admin only (`add`, `set`), and every
    version is a `policy` evidence packet the admin signs; the database refuses a change that
    names none, and records and audits every version itself."""

    def __init__(
        self,
        db: Database,
        tenancy: TenancyService,
        evidence: EvidenceService,
        *,
        check_policy: PolicyCheck,
        secrets: SecretBox | None = None,
        orchestrator: bool = False,
    ) -> None:
        self.db = db
        self.tenancy = tenancy
        self.evidence = evidence
        self.check_policy = check_policy
        # Seals targets' connection secrets (this machine's key, as registry passwords).
        self.secrets = secrets
        # Acting as the orchestrator's login: the only one that may open a target's secret.
        self.orchestrator = orchestrator

    # Other modules' reads, inside their own transaction.
    @staticmethod
    def get_in(conn: Connection, name: str) -> Environment | None:
        return EnvironmentStore(conn).get(name)

    @staticmethod
    def list_in(conn: Connection) -> list[Environment]:
        """Every environment, in promotion order."""
        return EnvironmentStore(conn).list()

    @staticmethod
    def freezes_in(
        conn: Connection, environment: str | None = None, *, ending_after: datetime | None = None
    ) -> list[Freeze]:
        return EnvironmentStore(conn).freezes(environment, ending_after=ending_after)

    @staticmethod
    def policy_document_in(conn: Connection, name: str) -> dict[str, Any] | None:
        """The policy the database derives for this environment now (None: no such one)."""
        return EnvironmentStore(conn).policy_document(name)

    @staticmethod
    def policy_packet_in(conn: Connection, name: str, version: int) -> str | None:
        """The bundle digest of the packet that signs one policy version (None: unsigned)."""
        return EnvironmentStore(conn).policy_packet(name, version)

    def add(
        self,
        name: str,
        *,
        order: int,
        required_approvals: int = 0,
        separation_of_duties: bool = False,
        workflow: str | None = None,
        approver_roles: Sequence[str] | None = None,
        approver_persons: Sequence[str] = (),
        quorum: Mapping[str, int] | None = None,
        schedule: list[dict[str, Any]] | None = None,
        auto_promote_from: str | None = None,
        reason: str = "",
    ) -> Environment:
        check_name("environment", name)
        settings = _check_settings(
            {
                "order": order,
                "required_approvals": required_approvals,
                "separation_of_duties": separation_of_duties,
                "workflow": workflow,
                "approver_roles": tuple(approver_roles)
                if approver_roles
                else DEFAULT_APPROVER_ROLES,
                "approver_persons": tuple(approver_persons),
                "quorum": dict(quorum or {}),
                "schedule": schedule,
                "auto_promote_from": auto_promote_from,
            },
            name,
            self.check_policy,
        )
        check_text(reason, "reason", field="reason")
        identity = self.tenancy.require(ProductRole.ADMIN)
        # Refused before the admin's key is made or registered: a bad value stores nothing.
        with self.db.transaction() as conn:
            self._check_new(conn, name, settings)
        self.evidence.ensure_personal_key()
        with self.db.transaction() as conn:
            store = EnvironmentStore(conn)
            self._check_new(conn, name, settings)
            packet_id, signed = self._sign_policy(
                conn, identity.user, name, 1, settings, reason or "added"
            )
            env = store.insert(
                identity.tenant_id,
                name,
                settings["order"],
                settings["required_approvals"],
                settings["separation_of_duties"],
                workflow=settings["workflow"],
                approver_roles=list(settings["approver_roles"]),
                approver_persons=list(settings["approver_persons"]),
                quorum=settings["quorum"],
                schedule=settings["schedule"],
                auto_promote_from=settings["auto_promote_from"],
                policy_packet_id=packet_id,
            )
            self._check_derived(conn, name, signed)
            TenancyService.audit(
                conn, identity.tenant_id, "environment.add", "environment", name, env.to_json()
            )
            return env

    def set(
        self,
        name: str,
        *,
        reason: str,
        order: int = _UNSET,
        required_approvals: int = _UNSET,
        separation_of_duties: bool = _UNSET,
        workflow: str | None = _UNSET,
        approver_roles: Sequence[str] = _UNSET,
        approver_persons: Sequence[str] = _UNSET,
        quorum: Mapping[str, int] = _UNSET,
        schedule: list[dict[str, Any]] | None = _UNSET,
        auto_promote_from: str | None = _UNSET,
    ) -> Environment:
        """Change an environment's policy (admins only, with a reason): a new policy version,
        signed by the admin as a `policy` packet that later decisions name."""
        if not reason.strip():
            raise DefinitionError("a policy change needs a reason", field="reason")
        check_text(reason, "reason", field="reason")
        given = {
            "order": order,
            "required_approvals": required_approvals,
            "separation_of_duties": separation_of_duties,
            "workflow": workflow,
            "approver_roles": approver_roles,
            "approver_persons": approver_persons,
            "quorum": quorum,
            "schedule": schedule,
            "auto_promote_from": auto_promote_from,
        }
        changes = {k: v for k, v in given.items() if v is not _UNSET}
        if not changes:
            raise DefinitionError("nothing to change: name at least one setting")
        identity = self.tenancy.require(ProductRole.ADMIN)
        # Refused before the admin's key is made or registered: a bad value stores nothing.
        with self.db.transaction() as conn:
            self._check_change(conn, name, changes, lock=False)
        self.evidence.ensure_personal_key()
        with self.db.transaction() as conn:
            store = EnvironmentStore(conn)
            before, settings = self._check_change(conn, name, changes, lock=True)
            version = store.policy_version(name) + 1
            packet_id, signed = self._sign_policy(
                conn, identity.user, name, version, settings, reason
            )
            env = store.update_policy(name, settings, packet_id)
            self._check_derived(conn, name, signed)
            TenancyService.audit(
                conn,
                identity.tenant_id,
                "environment.set",
                "environment",
                name,
                {
                    "version": version,
                    "reason": reason,
                    "changes": {
                        k: _jsonable(settings[k]) for k in settings if settings[k] != before[k]
                    },
                },
            )
            return env

    def _check_change(
        self, conn: Connection, name: str, changes: Mapping[str, Any], *, lock: bool
    ) -> tuple[dict[str, Any], dict[str, Any]]:
        """The environment's settings now, and after `changes` (checked)."""
        current = EnvironmentStore(conn).get(name, lock=lock)
        if current is None:
            raise NotFoundError(f"no environment named {name!r}")
        before = _settings_of(current)
        settings = _check_settings({**before, **_normalised(changes)}, name, self.check_policy)
        if settings == before:
            raise DefinitionError(f"environment {name} already has these settings")
        self._check_references(conn, name, settings, moving=settings["order"] != current.order)
        return before, settings

    def _check_new(self, conn: Connection, name: str, settings: dict[str, Any]) -> None:
        if EnvironmentStore(conn).get(name) is not None:
            raise AlreadyExistsError(f"environment {name!r} exists already")
        self._check_references(conn, name, settings)

    def _check_references(
        self, conn: Connection, name: str, settings: dict[str, Any], *, moving: bool = True
    ) -> None:
        store = EnvironmentStore(conn)
        if moving:
            taken = store.order_taken(settings["order"])
            if taken and taken != name:
                raise AlreadyExistsError(
                    f"promotion order {settings['order']} is taken by {taken!r}"
                )
        source = settings["auto_promote_from"]
        if source is not None and (source == name or store.get(source) is None):
            raise NotFoundError(
                f"auto promote from: no other environment {source!r}", field="auto promote from"
            )
        if settings["workflow"] is not None and not self.workflow_exists(
            conn, settings["workflow"]
        ):
            raise NotFoundError(
                f"workflow: no workflow template {settings['workflow']!r} (import it first)",
                field="workflow",
            )
        known = {u.name for u in TenancyService.users_in(conn)}
        unknown = sorted(set(settings["approver_persons"]) - known)
        if unknown:
            raise NotFoundError(f"approver: no such person: {', '.join(unknown)}", field="approver")

    @staticmethod
    def workflow_exists(conn: Connection, name: str) -> bool:
        return WorkflowService.template_exists_in(conn, name)

    def _sign_policy(
        self,
        conn: Connection,
        admin: str,
        name: str,
        version: int,
        settings: dict[str, Any],
        reason: str,
    ) -> tuple[UUID, dict[str, Any]]:
        """The admin's signed `policy` packet for this version; its subject is the policy's
        digest, so the decisions that name the policy by digest find who set it."""
        store = EnvironmentStore(conn)
        others = [e for e in store.list() if e.name != name and e.order < settings["order"]]
        previous = max(others, key=lambda e: e.order).name if others else None
        policy = _policy(name, previous, settings, self.check_policy)
        signer = self.evidence.personal_signer(conn)
        packet = self.evidence.emit(
            conn,
            predicate_type=POLICY_V1,
            subjects=[(f"policy:{name}", policy_digest(policy))],
            predicate={
                "environment": name,
                "version": version,
                "policy": policy,
                "settings": {k: _jsonable(v) for k, v in settings.items()},
                "changedBy": {"name": admin, "keyId": signer.key_id},
                "changedAt": rfc3339(datetime.now(UTC)),
                "reason": reason,
            },
            signer=signer,
            refs=Refs(environment=name),
        )
        return packet.id, policy

    @staticmethod
    def _check_derived(conn: Connection, name: str, signed: dict[str, Any]) -> None:
        """The database derives the policy promotions are decided by; it must be exactly the
        one the admin just signed."""
        derived = EnvironmentStore(conn).policy_document(name)
        if derived != signed:
            raise IntegrityError(
                f"environment {name}: the database derives another policy than the one signed"
            )

    def policy_document(self, name: str) -> dict[str, Any]:
        """The policy a promotion into this environment is decided by now (as the database
        derives it and copies it into each request)."""
        with self.db.transaction() as conn:
            found = EnvironmentStore(conn).policy_document(name)
        if found is None:
            raise NotFoundError(f"no environment named {name!r}")
        return found

    def policy_versions(self, name: str) -> list[dict[str, Any]]:
        """Every version of an environment's policy, oldest first, with who set it and the
        packet that signs it (older databases' first versions have none)."""
        with self.db.transaction() as conn:
            if EnvironmentStore(conn).get(name) is None:
                raise NotFoundError(f"no environment named {name!r}")
            return EnvironmentStore(conn).policy_versions(name)

    def freeze(
        self,
        name: str,
        *,
        start: datetime,
        end: datetime,
        reason: str,
        allow: Sequence[str] = (),
    ) -> Freeze:
        """A freeze window on an environment (release managers and admins)."""
        for when, field in ((start, "start"), (end, "end")):
            if when.tzinfo is None:
                raise DefinitionError(
                    f"{field} needs a timezone (for example 2026-12-24T00:00:00Z)", field=field
                )
            try:
                when.astimezone(UTC)
            except OverflowError:
                raise DefinitionError(
                    f"{field} is outside years 1 to 9999 in UTC", field=field
                ) from None
        if end <= start:
            raise DefinitionError("end must be after start", field="end")
        if not reason.strip():
            raise DefinitionError("reason must say why the environment is frozen", field="reason")
        check_text(reason, "reason", field="reason")
        identity = self.tenancy.require(ProductRole.RELEASE_MANAGER, ProductRole.ADMIN)
        with self.db.transaction() as conn:
            store = EnvironmentStore(conn)
            if store.get(name) is None:
                raise NotFoundError(f"no environment named {name!r}")
            known = {u.name for u in TenancyService.users_in(conn)}
            unknown = sorted(set(allow) - known)
            if unknown:
                raise NotFoundError(f"allow: no such person: {', '.join(unknown)}", field="allow")
            found = store.add_freeze(identity.tenant_id, name, start, end, reason, list(allow))
            TenancyService.audit(
                conn, identity.tenant_id, "environment.freeze", "environment", name, found.to_json()
            )
            return found

    def find_freeze(self, ref: str | UUID) -> Freeze:
        """A freeze by its id, or by the start of its id as the desk shows it (8 characters)."""
        with self.db.transaction() as conn:
            store = EnvironmentStore(conn)
            freeze_id = _freeze_id(store, ref)
            found = store.get_freeze(freeze_id)
        if found is None:
            raise NotFoundError(f"no freeze {ref}")
        return found

    def lift_freeze(self, ref: str | UUID, *, reason: str) -> Freeze:
        """End a freeze now (admins only, with a reason; a freeze not yet started never starts).
        The database keeps the change, its author and time, and audits it."""
        _check_why(reason)
        identity = self.tenancy.require(ProductRole.ADMIN)
        with self.db.transaction() as conn:
            store = EnvironmentStore(conn)
            current = self._changeable(store, _freeze_id(store, ref))
            return store.change_freeze(identity.tenant_id, current, lift=True, why=reason)

    def edit_freeze(
        self,
        ref: str | UUID,
        *,
        reason: str,
        start: datetime = _UNSET,
        end: datetime = _UNSET,
        freeze_reason: str = _UNSET,
        allow: Sequence[str] = _UNSET,
    ) -> Freeze:
        """Change a freeze's dates, its reason or who may still promote (admins only, with a
        reason for the change). An end in the past is a lift; the start of a freeze in force
        stays."""
        _check_why(reason)
        for when, field in ((start, "start"), (end, "end")):
            if when is not _UNSET:
                _check_time(when, field)
        if freeze_reason is not _UNSET:
            if not freeze_reason.strip():
                raise DefinitionError(
                    "freeze reason must say why the environment is frozen", field="freeze reason"
                )
            check_text(freeze_reason, "freeze reason", field="freeze reason")
        identity = self.tenancy.require(ProductRole.ADMIN)
        with self.db.transaction() as conn:
            store = EnvironmentStore(conn)
            current = self._changeable(store, _freeze_id(store, ref))
            now = datetime.now(UTC)
            after = current.model_copy(
                update={
                    k: v
                    for k, v in {
                        "starts_at": start,
                        "ends_at": end,
                        "reason": freeze_reason,
                        "allow": tuple(allow) if allow is not _UNSET else _UNSET,
                    }.items()
                    if v is not _UNSET
                }
            )
            if after.ends_at <= after.starts_at:
                raise DefinitionError("end must be after start", field="end")
            if after.ends_at <= now:
                raise DefinitionError(
                    "end is in the past: to end a freeze now, lift it", field="end"
                )
            if after.starts_at != current.starts_at and (
                current.starts_at <= now or after.starts_at < now
            ):
                raise DefinitionError(
                    "the start of a freeze in force stays, and a start cannot move into the past"
                )
            unknown = sorted(set(after.allow) - {u.name for u in TenancyService.users_in(conn)})
            if unknown:
                raise NotFoundError(f"allow: no such person: {', '.join(unknown)}", field="allow")
            if (after.starts_at, after.ends_at, after.reason, after.allow) == (
                current.starts_at,
                current.ends_at,
                current.reason,
                current.allow,
            ):
                raise DefinitionError("the edit changes nothing")
            return store.change_freeze(identity.tenant_id, after, lift=False, why=reason)

    @staticmethod
    def _changeable(store: EnvironmentStore, freeze_id: UUID) -> Freeze:
        current = store.get_freeze(freeze_id)
        if current is None:
            raise NotFoundError(f"no freeze {freeze_id}")
        if current.lifted:
            raise DefinitionError(f"freeze {freeze_id} was lifted already")
        if current.ends_at <= datetime.now(UTC):
            raise DefinitionError(f"freeze {freeze_id} has ended; an ended freeze is history")
        return current

    def freezes(
        self, name: str | None = None, *, ending_after: datetime | None = None
    ) -> list[Freeze]:
        with self.db.transaction() as conn:
            return EnvironmentStore(conn).freezes(name, ending_after=ending_after)

    def list(self) -> list[Environment]:
        with self.db.transaction() as conn:
            return EnvironmentStore(conn).list()

    def get(self, name: str) -> Environment:
        with self.db.transaction() as conn:
            env = EnvironmentStore(conn).get(name)
        if env is None:
            raise NotFoundError(f"no environment named {name!r}")
        return env

    # drift remediation (issue 12) ----------------------------------------------------------
    @staticmethod
    def remediate_drift_in(conn: Connection) -> dict[str, bool]:
        """environment -> whether it opted into drift remediation (detect-only: False)."""
        return EnvironmentStore(conn).remediate_drift()

    def remediate_drift(self, name: str) -> bool:
        with self.db.transaction() as conn:
            found = EnvironmentStore(conn).remediate_drift()
        if name not in found:
            raise NotFoundError(f"no environment named {name!r}")
        return found[name]

    def set_remediate_drift(self, name: str, on: bool) -> bool:
        """Admins: whether drift on `name`'s targets is put back (the expected release
        redeployed through the deploy path) or only reported. Audited by the database."""
        self.tenancy.require(ProductRole.ADMIN)
        with self.db.transaction() as conn:
            store = EnvironmentStore(conn)
            if store.get(name, lock=True) is None:
                raise NotFoundError(f"no environment named {name!r}")
            store.set_remediate_drift(name, on)
        return on

    # targets ------------------------------------------------------------------------------
    def add_target(
        self,
        name: str,
        *,
        environment: str,
        type: TargetType | str,
        agent: str | None = None,
        host: str | None = None,
        port: int | None = None,
        user: str | None = None,
        private_key: str | None = None,
        known_hosts: str | None = None,
        url: str | None = None,
        password: str | None = None,
        insecure_http: bool = False,
        auth: WinrmAuth | str | None = None,
        ca_cert: str | None = None,
        runtime: str = DEFAULT_RUNTIME,
        directory: str | None = None,
        labels: Mapping[str, str] | None = None,
        group: str | None = None,
    ) -> Target:
        """Add a target to an environment (admins, as for the environment's policy). Its
        connection material is checked now (a private key that loads, a known_hosts file that
        pins the host, an https WinRM URL) and its secret sealed with this machine's key; a
        refused target stores nothing."""
        check_name("target", name)
        try:
            kind = TargetType(type)
        except ValueError:
            raise DefinitionError(
                f"target type {type!r} is not agent, ssh or winrm", field="type"
            ) from None
        given = {
            "agent": agent,
            "host": host,
            "port": port,
            "user": user,
            "key file": private_key,
            "known hosts": known_hosts,
            "url": url,
            "password": password,
            "ca file": ca_cert,
            "auth": auth,
        }
        allowed = {
            TargetType.AGENT: {"agent"},
            TargetType.SSH: {"host", "port", "user", "key file", "known hosts"},
            TargetType.WINRM: {"url", "user", "password", "ca file", "auth"},
        }[kind]
        extra = sorted(k for k, v in given.items() if v is not None and k not in allowed)
        if extra or (insecure_http and kind is not TargetType.WINRM):
            wrong = ", ".join(extra + (["insecure http"] if insecure_http else []))
            raise DefinitionError(f"a {kind.value} target takes no {wrong}")
        values: dict[str, Any] = {
            "name": name,
            "environment": environment,
            "type": kind.value,
            "labels": connection.check_labels(dict(labels or {})),
            "target_group": check_name("group", group) if group is not None else None,
            "runtime": connection.check_runtime(runtime),
            "directory": connection.check_directory(
                directory if directory is not None else default_directory(name)
            ),
        }
        secret: str | None = None
        if kind is TargetType.AGENT:
            if not agent:
                raise DefinitionError("an agent target needs the agent's name", field="agent")
            values["agent"] = check_name("agent", agent)
        elif kind is TargetType.SSH:
            values["host"] = connection.check_host(_required(host, "host"))
            values["port"] = connection.check_port(port if port is not None else DEFAULT_SSH_PORT)
            values["username"] = connection.check_user(_required(user, "user"))
            secret = _required(private_key, "key file")
            connection.load_private_key(secret)
            values["known_hosts"] = connection.check_known_hosts(
                _required(known_hosts, "known hosts"), values["host"], values["port"]
            )
        else:
            values["url"] = connection.check_winrm_url(
                _required(url, "url"), insecure_http=insecure_http
            )
            values["username"] = connection.check_user(_required(user, "user"))
            secret = _required(password, "password")
            check_text(secret, "the password", field="password")
            try:
                method = WinrmAuth(auth or WinrmAuth.NTLM)
            except ValueError:
                raise DefinitionError(
                    f"auth {auth!r} is not ntlm, kerberos or basic", field="auth"
                ) from None
            if method is WinrmAuth.BASIC and not values["url"].startswith("https://"):
                raise DefinitionError(
                    "Basic authentication sends the password as it is: it is allowed over "
                    "https only",
                    field="auth",
                )
            values["auth"] = method.value
            if ca_cert is not None:
                values["ca_cert"] = connection.check_ca_cert(ca_cert)
        identity = self.tenancy.require(ProductRole.ADMIN)
        if secret is not None:
            if self.secrets is None:
                raise DefinitionError("this session cannot seal secrets (no secret box given)")
            values["secret_ciphertext"] = self.secrets.seal(
                secret, context=_target_context(identity.tenant_id, name)
            )
        with self.db.transaction() as conn:
            store = EnvironmentStore(conn)
            if store.get(environment) is None:
                raise NotFoundError(f"no environment named {environment!r}", field="env")
            if store.target(name) is not None:
                raise AlreadyExistsError(f"target {name!r} exists already")
            try:
                with conn.begin_nested():
                    return store.insert_target(identity.tenant_id, values)
            except SqlIntegrityError as exc:
                # Another session added the same name between the check and the insert.
                raise AlreadyExistsError(f"target {name!r} exists already") from exc

    def list_targets(self, environment: str | None = None) -> builtins.list[Target]:
        with self.db.transaction() as conn:
            store = EnvironmentStore(conn)
            if environment is not None and store.get(environment) is None:
                raise NotFoundError(f"no environment named {environment!r}", field="env")
            return store.targets(environment)

    @staticmethod
    def targets_in(conn: Connection, environment: str | None = None) -> builtins.list[Target]:
        """An environment's targets (or all), read in another module's transaction."""
        return EnvironmentStore(conn).targets(environment)

    def target(self, name: str) -> Target:
        with self.db.transaction() as conn:
            found = EnvironmentStore(conn).target(name)
        if found is None:
            raise NotFoundError(f"no target named {name!r}")
        return found

    def remove_target(self, name: str) -> Target:
        """Remove a target (admins); its sealed secret goes with it."""
        self.tenancy.require(ProductRole.ADMIN)
        with self.db.transaction() as conn:
            store = EnvironmentStore(conn)
            found = store.target(name)
            if found is None:
                raise NotFoundError(f"no target named {name!r}")
            store.delete_target(name)
            return found

    def target_connection(self, name: str) -> tuple[Target, str | None]:
        """The target and its connection secret, opened (the orchestrator's alone: it connects
        to the target; nobody else may read even the sealed bytes)."""
        if not self.orchestrator:
            raise AuthorizationError("only the orchestrator opens a target's connection secret")
        with self.db.transaction() as conn:
            store = EnvironmentStore(conn)
            found = store.target(name)
            if found is None:
                raise NotFoundError(f"no target named {name!r}")
            sealed = store.target_secret(name)
        if sealed is None:
            return found, None
        if self.secrets is None or self.db.tenant_id is None:
            raise DefinitionError("this session cannot open secrets (no secret box given)")
        return found, self.secrets.open(sealed, context=_target_context(self.db.tenant_id, name))


def _target_context(tenant_id: UUID, name: str) -> str:
    """What a sealed secret is bound to: moved to another target or tenant it does not open."""
    return f"target:{tenant_id}:{name}"


def _required(value: str | None, field: str) -> str:
    if value is None or not str(value).strip():
        raise DefinitionError(f"{field} is required for this type of target", field=field)
    return value


def _check_why(reason: str) -> None:
    if not reason.strip():
        raise DefinitionError("changing a freeze needs a reason", field="reason")
    check_text(reason, "reason", field="reason")


def _check_time(when: datetime, field: str) -> None:
    if when.tzinfo is None:
        raise DefinitionError(
            f"{field} needs a timezone (for example 2026-12-24T00:00:00Z)", field=field
        )
    try:
        when.astimezone(UTC)
    except OverflowError:
        raise DefinitionError(f"{field} is outside years 1 to 9999 in UTC", field=field) from None


def _freeze_id(store: EnvironmentStore, ref: str | UUID) -> UUID:
    """A freeze's id from its full form or a unique start of it (at least 4 hex digits)."""
    if isinstance(ref, UUID):
        return ref
    text = ref.strip().lower()
    try:
        return UUID(text)
    except ValueError:
        pass
    prefix = text.replace("-", "")
    if len(prefix) < 4 or any(c not in "0123456789abcdef" for c in prefix):
        raise DefinitionError(
            f"{ref!r} is not a freeze id (its first 8 characters are enough, as listed)"
        )
    found = store.freeze_ids(prefix)
    if not found:
        raise NotFoundError(f"no freeze {ref}")
    if len(found) > 1:
        raise DefinitionError(f"{ref!r} names {len(found)} freezes; give more of the id")
    return found[0]


def _normalised(changes: Mapping[str, Any]) -> dict[str, Any]:
    out = dict(changes)
    for key in ("approver_roles", "approver_persons"):
        if key in out:
            out[key] = tuple(out[key])
    if "quorum" in out:
        out["quorum"] = dict(out["quorum"])
    return out


def _settings_of(env: Environment) -> dict[str, Any]:
    return {
        "order": env.order,
        "required_approvals": env.required_approvals,
        "separation_of_duties": env.separation_of_duties,
        "workflow": env.workflow,
        "approver_roles": tuple(env.approver_roles),
        "approver_persons": tuple(env.approver_persons),
        "quorum": dict(env.quorum),
        "schedule": env.schedule,
        "auto_promote_from": env.auto_promote_from,
    }


def _check_settings(
    settings: dict[str, Any], name: str, check_policy: PolicyCheck
) -> dict[str, Any]:
    """Settings that make a valid policy now, not at the first promotion (DefinitionError)."""
    in_range(settings["order"], "order", low=0, high=MAX_ORDER, field="order")
    in_range(
        settings["required_approvals"],
        "required approvals",
        low=0,
        high=MAX_REQUIRED_APPROVALS,
        field="required approvals",
    )
    for role, count in dict(settings["quorum"]).items():
        in_range(count, f"quorum {role}=N:", low=1, high=MAX_REQUIRED_APPROVALS, field="quorum")
    for person in settings["approver_persons"]:
        if not person.strip():
            raise DefinitionError(
                "approver needs a person's name, not an empty one", field="approver"
            )
        check_text(person, "approver", field="approver")
    roles = tuple(settings["approver_roles"]) or DEFAULT_APPROVER_ROLES
    for role in roles:
        if role not in {r.value for r in ProductRole}:
            known = ", ".join(r.value for r in ProductRole)
            raise DefinitionError(f"approver role {role!r} is not a role ({known})")
    checked = {**settings, "approver_roles": roles}
    _policy(name, None, checked, check_policy)
    return checked


def _policy(
    name: str, previous: str | None, settings: Mapping[str, Any], check_policy: PolicyCheck
) -> dict[str, Any]:
    """The environment's policy, checked by the decision engine (DefinitionError)."""
    return check_policy(
        environment_policy(
            name,
            previous=previous,
            required_approvals=settings["required_approvals"],
            separation_of_duties=settings["separation_of_duties"],
            approver_roles=settings["approver_roles"],
            approver_persons=tuple(settings["approver_persons"]),
            quorum=dict(settings["quorum"]),
            schedule=settings["schedule"],
        )
    )


def policy_digest(policy: Any) -> str:
    """`sha256:<hex>` of the policy's canonical JSON (RFC 8785), as decisions name it."""
    return "sha256:" + hashlib.sha256(canonical_json(policy)).hexdigest()


def _jsonable(value: Any) -> Any:
    return list(value) if isinstance(value, tuple) else value
