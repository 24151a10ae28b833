"""Environment use cases."""

from __future__ import annotations

from stella_core.db.engine import Database
from stella_core.environments.model import Environment
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
    ) -> Environment:
        check_name("environment", name)
        if order < 0:
            raise DefinitionError("--order must be 0 or more")
        if required_approvals < 0:
            raise DefinitionError("--required-approvals must be 0 or more")
        identity = self.tenancy.require(ProductRole.RELEASE_MANAGER, ProductRole.ADMIN)
        with self.db.transaction() as conn:
            store = EnvironmentStore(conn)
            if store.get(name) is not None:
                raise AlreadyExistsError(f"environment {name!r} exists already")
            taken = store.order_taken(order)
            if taken:
                raise AlreadyExistsError(f"promotion order {order} is taken by {taken!r}")
            env = store.insert(
                identity.tenant_id, name, order, required_approvals, separation_of_duties
            )
            TenancyStore(conn).append_audit(
                identity.tenant_id, "environment.add", "environment", name, env.to_json()
            )
            return env

    def list(self) -> list[Environment]:
        with self.db.transaction() as conn:
            return EnvironmentStore(conn).list()

    def get(self, name: str) -> Environment:
        with self.db.transaction() as conn:
            env = EnvironmentStore(conn).get(name)
        if env is None:
            raise NotFoundError(f"no environment named {name!r}")
        return env
