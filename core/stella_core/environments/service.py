"""Environment use cases."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from datetime import datetime
from typing import Any

from stella_core.db.engine import Database
from stella_core.environments.model import DEFAULT_APPROVER_ROLES, Environment, Freeze
from stella_core.environments.store import EnvironmentStore
from stella_core.errors import AlreadyExistsError, DefinitionError, NotFoundError
from stella_core.releases.reference import check_name
from stella_core.tenancy.model import ProductRole
from stella_core.tenancy.service import TenancyService
from stella_core.tenancy.store import TenancyStore


class EnvironmentService:
    def __init__(self, db: Database, tenancy: TenancyService) -> None:
        self.db = db
        self.tenancy = tenancy

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
    ) -> Environment:
        check_name("environment", name)
        if order < 0:
            raise DefinitionError("--order must be 0 or more")
        if required_approvals < 0:
            raise DefinitionError("--required-approvals must be 0 or more")
        roles = tuple(approver_roles) if approver_roles else DEFAULT_APPROVER_ROLES
        for role in roles:
            if role not in {r.value for r in ProductRole}:
                known = ", ".join(r.value for r in ProductRole)
                raise DefinitionError(f"approver role {role!r} is not a role ({known})")
        # The policy this environment will be decided by must be valid now, not at promotion.
        from stella_core.promotions.model import environment_policy

        environment_policy(
            name,
            previous=None,
            required_approvals=required_approvals,
            separation_of_duties=separation_of_duties,
            approver_roles=roles,
            approver_persons=tuple(approver_persons),
            quorum=dict(quorum or {}),
            schedule=schedule,
        )
        identity = self.tenancy.require(ProductRole.RELEASE_MANAGER, ProductRole.ADMIN)
        with self.db.transaction() as conn:
            store = EnvironmentStore(conn)
            if store.get(name) is not None:
                raise AlreadyExistsError(f"environment {name!r} exists already")
            taken = store.order_taken(order)
            if taken:
                raise AlreadyExistsError(f"promotion order {order} is taken by {taken!r}")
            if auto_promote_from is not None and store.get(auto_promote_from) is None:
                raise NotFoundError(f"--auto-promote-from: no environment {auto_promote_from!r}")
            if workflow is not None:
                from stella_core.workflows.store import WorkflowStore

                if WorkflowStore(conn).version(workflow, None) is None:
                    raise NotFoundError(
                        f"--workflow: no workflow template {workflow!r} (import it first)"
                    )
            env = store.insert(
                identity.tenant_id,
                name,
                order,
                required_approvals,
                separation_of_duties,
                workflow=workflow,
                approver_roles=list(roles),
                approver_persons=list(approver_persons),
                quorum=dict(quorum or {}),
                schedule=schedule,
                auto_promote_from=auto_promote_from,
            )
            TenancyStore(conn).append_audit(
                identity.tenant_id, "environment.add", "environment", name, env.to_json()
            )
            return env

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
        for when, flag in ((start, "--start"), (end, "--end")):
            if when.tzinfo is None:
                raise DefinitionError(f"{flag} needs a timezone (for example 2026-12-24T00:00:00Z)")
        if end <= start:
            raise DefinitionError("--end must be after --start")
        if not reason.strip():
            raise DefinitionError("--reason must say why the environment is frozen")
        identity = self.tenancy.require(ProductRole.RELEASE_MANAGER, ProductRole.ADMIN)
        with self.db.transaction() as conn:
            store = EnvironmentStore(conn)
            if store.get(name) is None:
                raise NotFoundError(f"no environment named {name!r}")
            known = {u.name for u in TenancyStore(conn).list_users()}
            unknown = sorted(set(allow) - known)
            if unknown:
                raise NotFoundError(f"--allow: no such person: {', '.join(unknown)}")
            found = store.add_freeze(identity.tenant_id, name, start, end, reason, list(allow))
            TenancyStore(conn).append_audit(
                identity.tenant_id, "environment.freeze", "environment", name, found.to_json()
            )
            return found

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
