"""Composition root of the core: from a home directory and a profile to ready services.

With no database URL, the embedded default starts a real PostgreSQL in STELLA_HOME, migrates it
and, on first use, makes whoever runs it the first admin and the default profile.
"""

from __future__ import annotations

import fcntl
import getpass
import logging
from collections.abc import Iterable
from dataclasses import dataclass, field, replace
from functools import cached_property
from pathlib import Path
from typing import TYPE_CHECKING
from uuid import UUID

import sqlalchemy.exc
from sqlalchemy import Connection, Engine, text
from sqlalchemy.engine import make_url

from stella_core.crypto.keys import personal_passphrase
from stella_core.crypto.secretbox import SecretBox
from stella_core.db import migrate
from stella_core.db.changes import ChangeListener, Topic
from stella_core.db.engine import Database, make_engine, translate
from stella_core.errors import DatabaseError, DefinitionError, NotFoundError, StellaError
from stella_core.profiles import (
    EMBEDDED,
    OrchestratorLogin,
    OrchestratorLogins,
    Profile,
    ProfileStore,
    configured_database_url,
    stella_home,
    target_of,
)
from stella_core.tenancy.keys import LocalKeys, RegisteredKey
from stella_core.tenancy.model import ProductRole, User
from stella_core.tenancy.service import (
    Provisioner,
    TenancyService,
    person_name_from_os,
    person_role_name,
)

if TYPE_CHECKING:
    from stella_core.deploy.hosts import Host
    from stella_core.deploy.service import DeployService, Destination
    from stella_core.deploy.tasks import TaskQueue
    from stella_core.drift.model import TargetDrift
    from stella_core.drift.service import DriftService
    from stella_core.environments.service import EnvironmentService
    from stella_core.evidence.service import EvidenceService
    from stella_core.promotions.rollback import RollbackService, TargetHoldings
    from stella_core.promotions.service import PromotionService
    from stella_core.releases.service import ReleaseService
    from stella_core.workflows.service import WorkflowService

log = logging.getLogger(__name__)

DEFAULT_TENANT = "default"
MIN_SERVER_VERSION = 160000


def _driver_url(url: str) -> str:
    parsed = make_url(url)
    if parsed.drivername in ("postgresql", "postgres"):
        parsed = parsed.set(drivername="postgresql+psycopg")
    if parsed.drivername != "postgresql+psycopg":
        raise DatabaseError(f"unsupported database URL scheme {parsed.drivername!r}")
    return parsed.render_as_string(hide_password=False)


def probe_database(url: str) -> str:
    """Connect to a shared PostgreSQL server once and say what it is ('PostgreSQL 16.4'), or
    raise a clear error (an unusable URL, a refused login, a server older than 16). Neither the
    result nor the errors carry the password."""
    form = "postgresql://USER:PASSWORD@HOST:PORT/DATABASE"
    try:
        driver_url = _driver_url(url)
        host = make_url(url).host
    except (sqlalchemy.exc.ArgumentError, ValueError, DatabaseError) as exc:
        raise DefinitionError(f"not a PostgreSQL URL: give {form}") from exc
    if not host:
        raise DefinitionError(f"the URL names no server: give {form}")
    engine = make_engine(driver_url, pool_size=1)
    try:
        with engine.connect() as conn:
            number = int(conn.execute(text("SHOW server_version_num")).scalar_one())
            shown = str(conn.execute(text("SHOW server_version")).scalar_one()).split()[0]
    except sqlalchemy.exc.DBAPIError as exc:
        raise translate(exc) from exc
    finally:
        engine.dispose()
    if number < MIN_SERVER_VERSION:
        raise DatabaseError(
            f"PostgreSQL {shown} is too old; Stella Release Desk needs PostgreSQL 16 or newer"
        )
    return f"PostgreSQL {shown}"


@dataclass
class Backend:
    """Where the database is and the administrative connection to it."""

    home: Path
    target: str
    admin_url: str
    embedded: object | None = None
    _admin_engine: Engine | None = field(default=None, repr=False)
    # The person's engine ensure_ready checked the schema with, connected: the command uses it.
    _checked: dict[str, Engine] = field(default_factory=dict, repr=False)

    @classmethod
    def open(
        cls, home: Path | None = None, database_url: str | None = None, *, durable: bool = True
    ) -> Backend:
        home = home or stella_home()
        database_url = database_url or configured_database_url(home)
        if database_url:
            return cls(
                home=home, target=target_of(database_url), admin_url=_driver_url(database_url)
            )
        from stella_core.db.embedded import EmbeddedPostgres

        embedded = EmbeddedPostgres(home, durable=durable)
        info = embedded.start()
        return cls(home=home, target=EMBEDDED, admin_url=info.url(), embedded=embedded)

    @property
    def admin_engine(self) -> Engine:
        if self._admin_engine is None:
            self._admin_engine = make_engine(self.admin_url, pool_size=1)
        return self._admin_engine

    def person_url(self, profile: Profile) -> str:
        return self.login_url(profile.user, profile.password)

    def login_url(self, user: str, password: str) -> str:
        return (
            make_url(self.admin_url)
            .set(username=user, password=password)
            .render_as_string(hide_password=False)
        )

    def upgrade(self) -> tuple[str | None, str | None]:
        self.check_server()
        return migrate.upgrade(self.admin_engine)

    def check_server(self, engine: Engine | None = None) -> None:
        """Refuse servers older than PostgreSQL 16 and say why, before touching anything."""
        try:
            with (engine or self.admin_engine).connect() as conn:
                version = int(conn.execute(text("SHOW server_version_num")).scalar_one())
        except sqlalchemy.exc.DBAPIError as exc:
            raise translate(exc) from exc
        if version < MIN_SERVER_VERSION:
            raise DatabaseError(
                f"PostgreSQL {version // 10000} at {self.target} is too old; "
                "Stella Release Desk needs PostgreSQL 16 or newer"
            )

    def ensure_ready(self, profiles: ProfileStore, profile: str | None = None) -> bool:
        """Migrate if behind; on a database nobody has initialised, create the first admin; give
        the tenant its orchestrator login where none is known here. True when something changed.

        The administrative (superuser) connection is opened only for those three: an ordinary
        command checks the server and the schema through the person's own login."""
        # Two processes starting together on a fresh home must not both initialise.
        with open(self.home / "init.lock", "a+") as lock:
            fcntl.flock(lock, fcntl.LOCK_EX)
            return self._ensure_ready(profiles, profile)

    def _ensure_ready(self, profiles: ProfileStore, profile_name: str | None) -> bool:
        changed = False
        if not profiles.has_any(self.target):
            self.check_server()
            if migrate.needs_upgrade(self.admin_engine):
                self.upgrade()
                changed = True
            self._initialise(profiles)
            changed = True
        profile = profiles.get(self.target, profile_name)
        url = self.person_url(profile)
        person = make_engine(url)
        try:
            self.check_server(person)
            try:
                behind = migrate.needs_upgrade(person)
            except sqlalchemy.exc.ProgrammingError:
                behind = True  # schemas before 0008 let only the admin read their revision
        except BaseException:
            person.dispose()
            raise
        if url in self._checked:
            person.dispose()  # checked twice: one kept is enough
        else:
            self._checked[url] = person
        if behind:
            self.upgrade()
            self._embedded_defaults()
            changed = True
        if self._ensure_orchestrator(profile.tenant):
            changed = True
        return changed

    def _initialise(self, profiles: ProfileStore) -> None:
        with self.admin_engine.connect() as conn:
            initialised = conn.execute(text("SELECT count(*) FROM tenancy.tenants")).scalar_one()
        if initialised:
            raise NotFoundError(
                f"the database at {self.target} is already initialised but this machine has no "
                "profile for it; ask an admin to add you as a person",
                remedy=("user-add",),
            )
        admin = person_name_from_os(getpass.getuser())
        provisioner = Provisioner(self.admin_engine)
        tenant_id, password = provisioner.initialise(DEFAULT_TENANT, admin)
        login = person_role_name(tenant_id, admin)
        profiles.save(
            Profile(admin, self.target, login, password, str(tenant_id), person=admin),
            make_default=True,
        )
        self._embedded_defaults()
        log.info("initialised %s: %s is the first admin", self.target, admin)

    def orchestrator_login(self, tenant_id: UUID) -> OrchestratorLogin | None:
        return OrchestratorLogins(self.home).get(self.target, tenant_id)

    def _ensure_orchestrator(self, tenant_id: UUID) -> bool:
        """A tenant's orchestrator login is made once, by whoever initialises or migrates. On
        the embedded default (one machine) a missing one is made again here; on a server, an
        existing orchestrator keeps its password and runs where its login is."""
        logins = OrchestratorLogins(self.home)
        if logins.get(self.target, tenant_id) is not None:
            return False
        provisioner = Provisioner(self.admin_engine)
        if self.target != EMBEDDED and provisioner.orchestrator_exists(tenant_id):
            return False
        user, password = provisioner.provision_orchestrator(tenant_id)
        logins.save(OrchestratorLogin(self.target, str(tenant_id), user, password))
        return True

    def _embedded_defaults(self) -> None:
        """On the embedded default (one machine, its owner is the admin) script steps may run
        on this host: the local executor is turned on for tenants that have no setting yet."""
        if self.target != EMBEDDED:
            return
        from stella_core.workflows.service import enable_local_executor_everywhere

        with self.admin_engine.begin() as conn:
            enable_local_executor_everywhere(conn)

    def engine_for(self, url: str) -> Engine:
        """A person's engine: the one ensure_ready just used (its connection is open), else new."""
        return self._checked.pop(url, None) or make_engine(url)

    def close(self) -> None:
        for engine in self._checked.values():
            engine.dispose()
        self._checked.clear()
        if self._admin_engine is not None:
            self._admin_engine.dispose()
            self._admin_engine = None
        if self.embedded is not None:
            self.embedded.release()  # type: ignore[attr-defined]
            self.embedded = None


def _environment_id(conn: Connection, name: str) -> UUID | None:
    from stella_core.environments.service import EnvironmentService

    found = EnvironmentService.get_in(conn, name)
    return found.id if found is not None else None


class Orchestrator:
    """The orchestrator principal: its own database login and the orchestrator key. It alone
    decides promotions, writes runs and steps, signs system evidence and seals the ledger.

    Services are made (and their modules imported) on first use: a command that lists releases
    never loads the workflow engine."""

    def __init__(self, backend: Backend, login: OrchestratorLogin, local_keys: LocalKeys) -> None:
        self.login = login
        self.backend = backend
        self.local_keys = local_keys
        self.db = self.database()
        self.tenancy = TenancyService(self.db, None)

    @cached_property
    def evidence(self) -> EvidenceService:
        from stella_core.evidence.service import EvidenceService
        from stella_core.promotions.decision import replay as replay_decision
        from stella_core.workflows.service import WorkflowService

        return EvidenceService(
            self.db,
            self.tenancy,
            self.local_keys,
            decisions=replay_decision,
            runs=WorkflowService,
            orchestrator=True,
        )

    @cached_property
    def workflows(self) -> WorkflowService:
        from stella_core.deploy.step import DeployStep
        from stella_core.workflows.service import WorkflowService
        from stella_core.workflows.steps.builtin import builtin_handlers

        return WorkflowService(
            self.db,
            self.tenancy,
            handlers={**builtin_handlers(), "deploy": DeployStep(self.deploy, self.destinations)},
            run_end=self._run_ended,
            hooks=[self._after_run],
            orchestrator=True,
        )

    @cached_property
    def tasks(self) -> TaskQueue:
        from stella_core.deploy.tasks import TaskQueue

        return TaskQueue(self.db)

    @cached_property
    def deploy(self) -> DeployService:
        from stella_core.deploy.service import DeployService
        from stella_core.promotions.service import PromotionService

        return DeployService(
            self.db,
            self.evidence,
            self.tasks,
            promotion_environment=PromotionService.promotion_of_run_in,
            environment_id=_environment_id,
            rung_approvers=PromotionService.rung_approvers_in,
            promotion_kind=PromotionService.kind_in,
        )

    def destinations(self, environment: str | None, target: str | None = None) -> list[Destination]:
        """An environment's targets (or the one named `target`) as a deployment reaches them:
        an agent's by its id (an agent not enrolled, or revoked, makes the target fail with
        that reason), the others through a connection opened with their secret when their task
        runs."""
        from stella_core.agents.service import AgentService
        from stella_core.deploy.service import Destination
        from stella_core.deploy.transports import host_for
        from stella_core.environments.model import TargetType
        from stella_core.environments.service import EnvironmentService

        with self.db.transaction() as conn:
            targets = EnvironmentService.targets_in(conn, environment)
        if target is not None:
            targets = [t for t in targets if t.name == target]
            if not targets:
                raise NotFoundError(f"no target named {target!r}", field="target")
        agents = AgentService(self.db, self.tenancy)
        found = []
        for t in targets:
            base = Destination(t.id, t.name, t.type.value, t.runtime, t.directory)
            if t.type is TargetType.AGENT:
                try:
                    found.append(replace(base, agent_id=agents.id_of(str(t.agent))))
                except NotFoundError:
                    problem = f"its agent {t.agent!r} is not enrolled, or was revoked"
                    found.append(replace(base, problem=problem))
                continue

            def open_host(name: str = t.name) -> Host:
                return host_for(*self.environments.target_connection(name))

            found.append(replace(base, open_host=open_host))
        return found

    @cached_property
    def promotions(self) -> PromotionService:
        from stella_core.promotions.service import PromotionService

        return PromotionService(
            self.db, self.tenancy, self.evidence, self.workflows, orchestrator=True
        )

    # drift (issue 12) -----------------------------------------------------------------------
    @cached_property
    def drift(self) -> DriftService:
        """Drift checks: stickers and what runs against what should (`stella drift check`,
        `stella serve --drift-every`), remediating where an environment opted in."""
        from stella_core.drift.service import DriftService

        return DriftService(self.db, self.evidence, self.deploy, self.destinations)

    @cached_property
    def environments(self) -> EnvironmentService:
        """Environments and targets as the orchestrator reads them: it alone opens a target's
        connection secret (`target_connection`)."""
        from stella_core.environments.service import EnvironmentService
        from stella_core.promotions.decision import check_policy

        return EnvironmentService(
            self.db,
            self.tenancy,
            self.evidence,
            check_policy=check_policy,
            secrets=SecretBox.from_home(self.backend.home),
            orchestrator=True,
        )

    # rollback (issue 12) ------------------------------------------------------------------
    @cached_property
    def rollbacks(self) -> RollbackService:
        from stella_core.promotions.rollback import RollbackService

        return RollbackService(self.promotions, self.evidence, self.rollback_holdings)

    def rollback_holdings(self, environment: str) -> list[TargetHoldings]:
        """What each target of `environment` holds according to its sticker, read through its
        agent or connection and checked against the orchestrator's keys."""
        from concurrent.futures import ThreadPoolExecutor

        from stella_core.deploy.sticker import sticker_history
        from stella_core.promotions.rollback import TargetHoldings

        def one(dest: Destination) -> TargetHoldings:
            try:
                reading = self.deploy.read_sticker(dest)
            except StellaError as exc:
                return TargetHoldings(dest.name, dest.id, problem=exc.message)
            if reading.sticker is None or not reading.signature_ok:
                why = reading.reason or "its sticker does not verify"
                return TargetHoldings(dest.name, dest.id, problem=why)
            deployment = reading.sticker.get("deployment") or {}
            if deployment.get("targetId") != str(dest.id):
                # A sticker copied from elsewhere says nothing about this target's history.
                other = str(deployment.get("targetName"))[:64]
                return TargetHoldings(
                    dest.name, dest.id, problem=f"its sticker was written for target {other}"
                )
            try:
                deployment_id: str | None = str(UUID(str(deployment.get("id"))))
            except ValueError:
                deployment_id = None
            return TargetHoldings(
                dest.name,
                dest.id,
                tuple(sticker_history(reading.sticker)),
                deployment_id=deployment_id,
            )

        destinations = self.destinations(environment)
        with ThreadPoolExecutor(max(1, min(8, len(destinations)))) as pool:
            return list(pool.map(one, destinations))

    def database(self, pool_size: int = 5) -> Database:
        """A connection pool acting as the orchestrator (stella serve sizes its own)."""
        url = self.backend.login_url(self.login.user, self.login.password)
        return Database(make_engine(url, pool_size=pool_size), UUID(self.login.tenant_id))

    def _run_ended(self, conn: Connection, run_id: UUID, status: str) -> None:
        """In the transaction that ends a run: its evidence, and its promotion's outcome."""
        self.evidence.emit_run(conn, run_id, status)
        self.promotions.run_ended(conn, run_id, status)
        self.rollbacks.run_ended(conn, run_id, status)

    def _after_run(self, run_id: UUID, status: str) -> None:
        """After a run's ending committed: environments that auto-promote from where a
        release just landed get their promotion requested."""
        self.promotions.auto_promote(run_id, status)

    def close(self) -> None:
        self.db.dispose()


class Stella:
    """Every core service, acting as one person (a profile). Where this machine holds the
    orchestrator's login (the embedded default, the host of stella serve) the person's requests
    are decided here at once by the orchestrator; elsewhere stella serve decides them.

    Services other than tenancy are made on first use (see Orchestrator)."""

    def __init__(
        self, backend: Backend, profile: Profile, orchestrator: Orchestrator | None = None
    ) -> None:
        self.backend = backend
        self.home = backend.home
        self.profile = profile
        self.profiles = ProfileStore(backend.home)
        self.db = Database(backend.engine_for(backend.person_url(profile)), profile.tenant)
        self.provisioner = Provisioner(backend.admin_engine)
        self.secrets = SecretBox.from_home(backend.home)
        self.local_keys = LocalKeys(backend.home, backend.target, self.secrets)
        self._owns_orchestrator = orchestrator is None
        if orchestrator is None:
            login = backend.orchestrator_login(profile.tenant)
            orchestrator = Orchestrator(backend, login, self.local_keys) if login else None
        self.orchestrator = orchestrator
        self.tenancy = TenancyService(self.db, self.provisioner)

    @cached_property
    def releases(self) -> ReleaseService:
        from stella_core.releases.service import ReleaseService

        return ReleaseService(self.db, self.tenancy, self.secrets, home=self.home)

    @cached_property
    def evidence(self) -> EvidenceService:
        from stella_core.evidence.service import EvidenceService
        from stella_core.promotions.decision import replay as replay_decision
        from stella_core.workflows.service import WorkflowService

        system = self.orchestrator.evidence if self.orchestrator else None
        return EvidenceService(
            self.db,
            self.tenancy,
            self.local_keys,
            decisions=replay_decision,
            runs=WorkflowService,
            system=system,
        )

    @cached_property
    def environments(self) -> EnvironmentService:
        from stella_core.environments.service import EnvironmentService
        from stella_core.promotions.decision import check_policy

        return EnvironmentService(
            self.db, self.tenancy, self.evidence, check_policy=check_policy, secrets=self.secrets
        )

    @cached_property
    def workflows(self) -> WorkflowService:
        from stella_core.workflows.service import WorkflowService

        system = self.orchestrator.workflows if self.orchestrator else None
        workflows = WorkflowService(self.db, self.tenancy, system=system)
        # Environments own which workflow each deploys with; a workflow in use is not retired.
        workflows.deployed_with = lambda name: [
            e.name for e in self.environments.list() if e.workflow == name
        ]
        return workflows

    @cached_property
    def promotions(self) -> PromotionService:
        from stella_core.promotions.service import PromotionService

        system = self.orchestrator.promotions if self.orchestrator else None
        return PromotionService(self.db, self.tenancy, self.evidence, self.workflows, system=system)

    def drift_findings(self, environment: str | None = None) -> list[TargetDrift]:
        """Each target's newest drift finding (of `environment`), as this person reads them."""
        from stella_core.drift.service import DriftService

        with self.db.transaction() as conn:
            return DriftService.latest_in(conn, environment)

    @cached_property
    def rollbacks(self) -> RollbackService:
        """Rollbacks (issue 12): reading the targets' stickers is the orchestrator's."""
        from stella_core.promotions.rollback import RollbackService

        reader = self.orchestrator.rollback_holdings if self.orchestrator else None
        return RollbackService(self.promotions, self.evidence, reader)

    @classmethod
    def open(
        cls,
        profile: str | None = None,
        *,
        home: Path | None = None,
        database_url: str | None = None,
        durable: bool = True,
    ) -> Stella:
        backend = Backend.open(home, database_url, durable=durable)
        try:
            profiles = ProfileStore(backend.home)
            backend.ensure_ready(profiles, profile)
            stella = cls(backend, profiles.get(backend.target, profile))
            # The orchestrator makes its key on first need (one query when it exists).
            stella.evidence.ensure_orchestrator_key()
            return stella
        except BaseException:
            backend.close()
            raise

    def as_person(self, name: str, passphrase: str | None = None) -> Stella:
        """Another person's view over the same backend and orchestrator (the desktop's
        switch-person control). With `passphrase`, it must open their key (else
        WrongPassphraseError) and they sign without being asked again."""
        person = Stella(
            self.backend, self.profiles.get(self.backend.target, name), self.orchestrator
        )
        if passphrase is not None:
            try:
                person.local_keys.unlock(person.profile.person_name, passphrase)
            except BaseException:
                person.close(keep_backend=True)
                raise
        return person

    def add_person(
        self, name: str, role: ProductRole, passphrase: str | None = None
    ) -> tuple[User, RegisteredKey | None]:
        """A new person: their login role and user, their profile on this machine, and their
        personal signing key, made and registered by their own session (the database lets a
        person register only their own key), so their first approval needs no extra step.
        Auditors get no key: they read evidence and never sign any. The person exists once
        the user is committed: should the key fail here, it is made at their first signature.
        With `passphrase`, their key is made under it, never under this machine's."""
        if passphrase is not None:
            personal_passphrase(passphrase)  # refused before anything is made
        user, password = self.tenancy.add_user(name, role)
        profile = self.save_profile_for(user.name, password)
        if passphrase is not None:
            self.profiles.protect_key(self.backend.target, user.name)
        if role is ProductRole.AUDITOR:
            return user, None
        person = self.as_person(profile.name)
        try:
            if passphrase is not None:
                person.local_keys.remember(user.name, passphrase)
            return user, person.evidence.ensure_personal_key()
        except StellaError as exc:
            log.warning("no signing key made for %s yet: %s", user.name, exc.message)
            return user, None
        finally:
            person.close(keep_backend=True)

    def save_profile_for(self, user: str, password: str) -> Profile:
        """The profile of a person just added to this tenant (their login role is named by
        tenant and name, see tenancy.service.person_role_name)."""
        tenant = self.profile.tenant
        target = self.backend.target
        name = self.profiles.free_name(target, tenant, user, self.tenancy.whoami().tenant_name)
        login = person_role_name(tenant, user)
        profile = Profile(name, target, login, password, str(tenant), person=user)
        self.profiles.save(profile)
        return profile

    def listen_changes(self, topics: Iterable[Topic] = tuple(Topic)) -> ChangeListener:
        """A listener for what any process changes in this person's tenant (see
        `stella_core.db.changes`); raises `DatabaseError` when it cannot connect."""
        return ChangeListener.open(self.db, topics)

    def close(self, *, keep_backend: bool = False) -> None:
        self.db.dispose()
        if self.orchestrator is not None and self._owns_orchestrator:
            self.orchestrator.close()
        if not keep_backend:
            self.backend.close()
