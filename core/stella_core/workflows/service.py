"""Workflow use cases: templates (import, export, versions), runs (start, watch, cancel, retry),
approvals, the tenant's executor setting, and the workers that run it all.

Running without `stella serve`: `wait_run` drives the run itself with an in-process worker
restricted to that run whenever no live tenant-wide worker has announced itself (workers beat in
`workflow.workers`). So on one machine `stella run start` then `stella run wait` just works, and
with a `stella serve` running the waiter only watches.
"""

from __future__ import annotations

import logging
import math
import re
import threading
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import replace
from typing import Any, NamedTuple
from uuid import UUID

from sqlalchemy import Connection

from stella_core.db.engine import Database
from stella_core.errors import (
    AlreadyExistsError,
    AuthorizationError,
    DefinitionError,
    NotFoundError,
    OrchestratorUnavailableError,
)
from stella_core.limits import MAX_SAFE_INTEGER, check_text, load_json, whole_number
from stella_core.releases.service import ReleaseService
from stella_core.tenancy.model import ProductRole
from stella_core.tenancy.service import TenancyService
from stella_core.workflows.engine import (
    DEFAULT_LEASE_S,
    Changes,
    Coordinator,
    Plans,
    RunEndWriter,
    RunFinishedHook,
    StepState,
    Worker,
    listen,
    new_worker_id,
    run_tx,
)
from stella_core.workflows.executors import Executors
from stella_core.workflows.model import (
    TEMPLATE_NAME_PATTERN,
    InputSpec,
    RunEvent,
    RunInfo,
    RunStatus,
    StepStatus,
    Template,
    TemplateSummary,
    TemplateVersionInfo,
)
from stella_core.workflows.steps.builtin import Failed, StepHandler, Succeeded, builtin_handlers
from stella_core.workflows.steps.registry import StepRegistry, default_registry
from stella_core.workflows.store import WorkflowStore

log = logging.getLogger(__name__)

WRITERS = (ProductRole.RELEASE_MANAGER, ProductRole.ADMIN)
_DRIVER_CHECK_S = 2.0
_TRUE = {"true", "yes", "on", "1"}
_FALSE = {"false", "no", "off", "0"}
_INTEGER = re.compile(r"^[+-]?\d+$")


class ImportedTemplate(NamedTuple):
    name: str
    version: int
    id: UUID


def coerce_inputs(declared: Mapping[str, InputSpec], given: Mapping[str, Any]) -> dict[str, Any]:
    """Run inputs as their declared types (CLI values arrive as strings); unknown or missing
    required inputs are refused. Declared inputs not given take their default (or null)."""
    unknown = sorted(set(given) - set(declared))
    if unknown:
        known = ", ".join(sorted(declared)) or "none"
        raise DefinitionError(f"unknown input(s) {', '.join(unknown)} (declared: {known})")
    out: dict[str, Any] = {}
    for name, spec in declared.items():
        if name not in given:
            if spec.required and spec.default is None:
                raise DefinitionError(f"input {name!r} is required ({spec.type})")
            out[name] = spec.default
            continue
        out[name] = _coerce(name, spec.type, given[name])
    # Inputs are stored as JSON (jsonb) and read by CEL: the same bounds as a document's values.
    from stella_core.workflows.template import json_value_problems

    problems = json_value_problems(out)
    if problems:
        raise DefinitionError(f"input {problems[0]}")
    return out


def _coerce(name: str, kind: str, value: Any) -> Any:
    def bad() -> DefinitionError:
        return DefinitionError(f"input {name!r} must be {kind}, not {value!r}")

    if kind == "string":
        if not isinstance(value, str):
            raise bad()
        return value
    if isinstance(value, str):
        text = value.strip()
        if kind == "integer":
            if not _INTEGER.match(text):
                raise bad()
            return whole_number(
                text, f"input {name!r}", low=-MAX_SAFE_INTEGER, high=MAX_SAFE_INTEGER
            )
        if kind == "number":
            try:
                number = float(text)
            except ValueError:
                raise bad() from None
            if not math.isfinite(number):
                raise bad()
            return number
        if kind == "boolean":
            if text.lower() in _TRUE:
                return True
            if text.lower() in _FALSE:
                return False
            raise bad()
        value = load_json(text, f"input {name!r}")
    ok = {
        "integer": isinstance(value, int) and not isinstance(value, bool),
        "number": isinstance(value, int | float) and not isinstance(value, bool),
        "boolean": isinstance(value, bool),
        "object": isinstance(value, dict),
        "array": isinstance(value, list),
    }.get(kind, False)
    if not ok:
        raise bad()
    return float(value) if kind == "number" else value


def release_snapshot(conn: Connection, name: str) -> tuple[UUID, dict[str, Any]]:
    found = ReleaseService.releases_in(conn, name)
    if not found:
        raise NotFoundError(f"no release named {name!r}")
    release = found[0]
    return release.id, {
        "name": release.name,
        "components": [
            {"name": c.name, "repository": c.repository, "tag": c.tag, "digest": c.digest}
            for c in release.components
        ],
    }


class WorkflowService:
    def __init__(
        self,
        db: Database,
        tenancy: TenancyService,
        registry: StepRegistry | None = None,
        *,
        executors: Executors | None = None,
        handlers: Mapping[str, StepHandler] | None = None,
        hooks: Sequence[RunFinishedHook] = (),
        run_end: RunEndWriter | None = None,
        system: WorkflowService | None = None,
        orchestrator: bool = False,
    ) -> None:
        """A principal's workflows. Templates and settings are people's; runs, steps and their
        log are written by the orchestrator alone, so a person's service hands starting,
        cancelling, retrying, step decisions and workers to `system`, the orchestrator's
        service, where this machine runs one."""
        self.db = db
        self.tenancy = tenancy
        self.system = system
        self.is_orchestrator = orchestrator
        self.registry = registry or default_registry()
        self.executors = executors or Executors.default()
        self.handlers = dict(handlers) if handlers is not None else builtin_handlers()
        self.hooks = list(hooks)
        self.plans = Plans()
        self.run_end = run_end
        self.coordinator = Coordinator(self.plans, run_end)
        # Which environments deploy with a workflow (wired in bootstrap: environments own that).
        self.deployed_with: Callable[[str], list[str]] | None = None

    # templates --------------------------------------------------------------------------
    # Other modules' reads, inside their own transaction.
    @staticmethod
    def template_exists_in(conn: Connection, name: str) -> bool:
        return WorkflowStore(conn).version(name, None) is not None

    @staticmethod
    def run_in(conn: Connection, run_id: UUID) -> RunInfo | None:
        """A run with its steps."""
        return WorkflowStore(conn).get_run(run_id)

    @staticmethod
    def template_document_in(conn: Connection, version_id: UUID) -> dict[str, Any] | None:
        """The stored document of one template version."""
        return WorkflowStore(conn).document(version_id)

    @staticmethod
    def promotion_of_in(conn: Connection, run_id: UUID) -> UUID | None:
        """The promotion a run carries out (None: a run started by hand)."""
        return WorkflowStore(conn).promotion_of(run_id)

    def check(self, raw: str | bytes | Mapping[str, Any]) -> tuple[Template | None, list[Any]]:
        """Load and validate (pure: no database)."""
        from stella_core.workflows.template import check

        return check(raw, self.registry)

    def import_template(self, raw: str | bytes | Mapping[str, Any]) -> ImportedTemplate:
        """Store a template; a new version only when its content (digest) changed."""
        from stella_core.workflows.template import TemplateError, digest

        template, problems = self.check(raw)
        if problems or template is None:
            first = problems[0] if problems else None
            where = ".".join(p for p in (first.node, first.field) if p) if first else ""
            message = first.message if first else "the template did not load"
            more = f" (and {len(problems) - 1} more)" if len(problems) > 1 else ""
            raise TemplateError(
                f"invalid template: {where + ': ' if where else ''}{message}{more}", problems
            )
        identity = self.tenancy.require(*WRITERS)
        content = digest(template)

        def work(conn: Connection) -> ImportedTemplate:
            store = WorkflowStore(conn)
            template_id = store.template_id(template.name) or store.insert_template(
                identity.tenant_id, template.name
            )
            store.lock_template(template_id)
            if store.retired(template_id):
                # The name was retired: importing under it brings the workflow back, its
                # history continuing (versions are never deleted).
                store.set_retired(template_id, False)
                TenancyService.audit(
                    conn, identity.tenant_id, "workflow.restore", "template", template.name, {}
                )
            latest = store.latest_version(template_id)
            if latest is not None and latest.digest == content:
                return ImportedTemplate(template.name, latest.version, latest.id)
            number = latest.version + 1 if latest else 1
            document = template.model_copy(update={"version": number}).to_document()
            version_id = store.insert_version(
                identity.tenant_id, template_id, number, document, content
            )
            TenancyService.audit(
                conn,
                identity.tenant_id,
                "workflow.import",
                "template",
                template.name,
                {"version": number, "digest": content},
            )
            return ImportedTemplate(template.name, number, version_id)

        return run_tx(self.db, work)

    def rename_template(self, name: str, new_name: str) -> TemplateSummary:
        """Give a workflow another name. Its versions keep the documents they were stored with
        and its runs the name they ran under; an environment that deploys with it must be
        pointed elsewhere first (it names the workflow)."""
        identity = self.tenancy.require(*WRITERS)
        new_name = new_name.strip()
        if not re.fullmatch(TEMPLATE_NAME_PATTERN, new_name):
            raise DefinitionError(
                f"{new_name!r} is not a workflow name: a-z, 0-9, '.', '_' and '-' (at most 63), "
                "starting with a-z or 0-9"
            )
        if new_name == name:
            raise DefinitionError(f"the workflow is called {name!r} already")
        self._refuse_if_deployed_with(name, "renamed")

        def work(conn: Connection) -> TemplateSummary:
            store = WorkflowStore(conn)
            template_id = self._live_template(store, name)
            if store.template_id(new_name) is not None:
                raise AlreadyExistsError(f"a workflow called {new_name!r} exists already")
            store.rename_template(template_id, new_name)
            TenancyService.audit(
                conn, identity.tenant_id, "workflow.rename", "template", new_name, {"from": name}
            )
            return next(t for t in store.list_templates() if t.id == template_id)

        return run_tx(self.db, work)

    def retire_template(self, name: str) -> int:
        """Take a workflow out of use (the desk's Delete): it leaves the list and can no longer
        be started or chosen for an environment. Its versions stay, append-only, for the runs and
        evidence that name them; importing a workflow under the same name brings it back.
        Returns how many runs used it."""
        identity = self.tenancy.require(*WRITERS)
        self._refuse_if_deployed_with(name, "deleted")

        def work(conn: Connection) -> int:
            store = WorkflowStore(conn)
            template_id = self._live_template(store, name)
            runs = store.runs_of(template_id)
            store.set_retired(template_id, True)
            TenancyService.audit(
                conn, identity.tenant_id, "workflow.retire", "template", name, {"runs": runs}
            )
            return runs

        return run_tx(self.db, work)

    def _refuse_if_deployed_with(self, name: str, done: str) -> None:
        users = self.deployed_with(name) if self.deployed_with is not None else []
        if users:
            which = ", ".join(users)
            raise DefinitionError(
                f"workflow {name!r} cannot be {done}: environment{'s' if len(users) > 1 else ''} "
                f"{which} deploy{'s' if len(users) == 1 else ''} with it; choose another "
                "workflow there first"
            )

    @staticmethod
    def _live_template(store: WorkflowStore, name: str) -> UUID:
        template_id = store.template_id(name)
        if template_id is None or store.retired(template_id):
            raise NotFoundError(f"no workflow named {name!r}")
        return template_id

    def export_template(self, name: str, version: int | None = None) -> dict[str, Any]:
        with self.db.transaction() as conn:
            store = WorkflowStore(conn)
            found = self._version(store, name, version)
            document = store.document(found.id)
        assert document is not None
        # Stored documents keep the name they were saved under; a renamed workflow's versions
        # read under its name now (what opening, comparing and saving again expect).
        return {**document, "name": found.name}

    def get_template(self, name: str, version: int | None = None) -> Template:
        return Template.model_validate(self.export_template(name, version))

    def list_templates(self) -> list[TemplateSummary]:
        with self.db.transaction() as conn:
            return WorkflowStore(conn).list_templates()

    def template_versions(self, name: str) -> list[TemplateVersionInfo]:
        with self.db.transaction() as conn:
            versions = WorkflowStore(conn).versions(name)
        if not versions:
            raise NotFoundError(f"no workflow template named {name!r}")
        return versions

    @staticmethod
    def _version(store: WorkflowStore, name: str, version: int | None) -> TemplateVersionInfo:
        found = store.version(name, version)
        if found is None:
            which = f" version {version}" if version is not None else ""
            raise NotFoundError(f"no workflow template named {name!r}{which}")
        return found

    # settings ---------------------------------------------------------------------------
    def settings(self) -> dict[str, Any]:
        """The tenant's settings, and the sandbox this machine has for script steps."""
        with self.db.transaction() as conn:
            store = WorkflowStore(conn)
            value: dict[str, Any] = {
                "local_executor": store.local_executor_enabled(),
                "allow_unsandboxed": store.unsandboxed_allowed(),
            }
        value["sandbox"] = self.executors.sandbox("local")
        return value

    def set_local_executor(self, enabled: bool) -> dict[str, Any]:
        identity = self.tenancy.require(ProductRole.ADMIN)
        with self.db.transaction() as conn:
            WorkflowStore(conn).set_local_executor(identity.tenant_id, enabled)
            TenancyService.audit(
                conn,
                identity.tenant_id,
                "workflow.settings",
                "tenant",
                identity.tenant_name,
                {"local_executor": enabled},
            )
        return {"local_executor": enabled}

    def set_unsandboxed(self, allowed: bool) -> dict[str, Any]:
        """Whether script steps may run without a sandbox where a host has none (admins)."""
        identity = self.tenancy.require(ProductRole.ADMIN)
        with self.db.transaction() as conn:
            WorkflowStore(conn).set_unsandboxed(identity.tenant_id, allowed)
            TenancyService.audit(
                conn,
                identity.tenant_id,
                "workflow.settings",
                "tenant",
                identity.tenant_name,
                {"allow_unsandboxed": allowed},
            )
        return {"allow_unsandboxed": allowed}

    # runs -------------------------------------------------------------------------------
    def _engine(self) -> WorkflowService:
        if self.is_orchestrator:
            return self
        if self.system is None:
            raise OrchestratorUnavailableError(
                "this machine does not run the orchestrator: runs are started, driven and "
                "decided where stella serve runs"
            )
        return self.system

    def start_run(
        self,
        template: str,
        version: int | None = None,
        release: str | None = None,
        inputs: Mapping[str, Any] | None = None,
    ) -> RunInfo:
        identity = self.tenancy.require(*WRITERS)
        engine = self._engine()

        def work(conn: Connection) -> UUID:
            return engine.start_in(
                conn,
                identity.tenant_id,
                template,
                version=version,
                release=release,
                inputs=inputs,
                requested_by=identity.user,
            )

        run_id = run_tx(engine.db, work, engine.hooks)
        return self.get_run(run_id)

    def start_in(
        self,
        conn: Connection,
        tenant_id: UUID,
        template: str,
        *,
        version: int | None = None,
        release: str | None = None,
        inputs: Mapping[str, Any] | None = None,
        promotion_id: UUID | None = None,
        requested_by: str | None = None,
    ) -> UUID:
        """Start a run inside the orchestrator's transaction (a promotion starts its run with
        the state change that approved it)."""
        store = WorkflowStore(conn)
        found = self._version(store, template, version)
        plan = self.plans.get(store, found.id)
        values = coerce_inputs(plan.template.inputs, inputs or {})
        release_id, snapshot = (
            release_snapshot(conn, release) if release is not None else (None, None)
        )
        run_id = store.insert_run(
            tenant_id,
            found,
            release_id,
            snapshot,
            values,
            promotion_id=promotion_id,
            requested_by=requested_by,
        )
        run = store.lock_run(run_id)
        assert run is not None
        ch = Changes(store, run)
        self.coordinator.start(ch, plan)
        self.coordinator.flush(conn, ch, plan)
        TenancyService.audit(
            conn,
            tenant_id,
            "workflow.run.start",
            "run",
            str(run_id),
            {
                "template": found.name,
                "version": found.version,
                "release": release,
                "promotion": str(promotion_id) if promotion_id else None,
                "requested_by": requested_by,
            },
        )
        return run_id

    def get_run(self, run_id: UUID | str, *, steps: bool = True) -> RunInfo:
        key = _run_uuid(run_id)
        with self.db.transaction() as conn:
            run = WorkflowStore(conn).get_run(key, with_steps=steps)
        if run is None:
            raise NotFoundError(f"no workflow run {run_id}")
        return run

    def list_runs(self, limit: int | None = None) -> list[RunInfo]:
        with self.db.transaction() as conn:
            return WorkflowStore(conn).list_runs(limit)

    def run_events(self, run_id: UUID | str, after_seq: int = 0) -> list[RunEvent]:
        key = _run_uuid(run_id)
        with self.db.transaction() as conn:
            store = WorkflowStore(conn)
            if store.get_run(key, with_steps=False) is None:
                raise NotFoundError(f"no workflow run {run_id}")
            return store.events(key, after_seq)

    def cancel_run(self, run_id: UUID | str) -> RunInfo:
        identity = self.tenancy.require(*WRITERS)
        key = _run_uuid(run_id)
        engine = self._engine()

        def work(conn: Connection) -> None:
            store = WorkflowStore(conn)
            run = store.lock_run(key)
            if run is None:
                raise NotFoundError(f"no workflow run {run_id}")
            if run.terminal:
                raise DefinitionError(f"run {run_id} has ended already ({run.status})")
            ch = Changes(store, run)
            engine.coordinator.end_run(ch, RunStatus.CANCELLED, f"cancelled by {identity.user}")
            engine.coordinator.flush(conn, ch)
            TenancyService.audit(
                conn,
                identity.tenant_id,
                "workflow.run.cancel",
                "run",
                str(key),
                {"by": identity.user},
            )

        run_tx(engine.db, work, engine.hooks)
        return self.get_run(key)

    def cancel_in(self, conn: Connection, run_id: UUID, reason: str) -> bool:
        """Cancel a run inside the caller's transaction; False when it had ended already."""
        store = WorkflowStore(conn)
        run = store.lock_run(run_id)
        if run is None or run.terminal:
            return False
        ch = Changes(store, run)
        self.coordinator.end_run(ch, RunStatus.CANCELLED, reason)
        self.coordinator.flush(conn, ch)
        return True

    def declared_inputs_in(self, conn: Connection, template: str) -> set[str]:
        store = WorkflowStore(conn)
        found = self._version(store, template, None)
        return set(self.plans.get(store, found.id).template.inputs)

    def retry_step(self, run_id: UUID | str, step_id: str) -> RunInfo:
        """Resume a failed run from a failed step: it and what the failure cut short run again;
        what succeeded stays done."""
        identity = self.tenancy.require(*WRITERS)
        key = _run_uuid(run_id)
        engine = self._engine()

        def work(conn: Connection) -> None:
            store = WorkflowStore(conn)
            step = store.lock_step(key, step_id)
            run = store.lock_run(key)
            if run is None:
                raise NotFoundError(f"no workflow run {run_id}")
            if step is None:
                raise NotFoundError(f"run {run_id} has no step {step_id!r}")
            if run.status not in (RunStatus.FAILED, RunStatus.TIMED_OUT) or run.phase != "main":
                raise DefinitionError(
                    f"only a failed run can be retried; run {run_id} is {run.status}"
                )
            if step.status not in (StepStatus.FAILED, StepStatus.TIMED_OUT):
                raise DefinitionError(f"step {step_id} did not fail (it is {step.status})")
            plan = engine.plans.get(store, run.template_version_id)
            store.reopen_run(key)
            ch = Changes(store, replace(run, status=RunStatus.RUNNING))
            ch.event("run.retried", None, step=step_id, by=identity.user)
            engine.coordinator.reset_for_retry(ch, plan)
            engine.coordinator.flush(conn, ch, plan)
            TenancyService.audit(
                conn,
                identity.tenant_id,
                "workflow.run.retry",
                "run",
                str(key),
                {"step": step_id, "by": identity.user},
            )

        run_tx(engine.db, work, engine.hooks)
        return self.get_run(key)

    # approvals --------------------------------------------------------------------------
    def approve(self, run_id: UUID | str, step_id: str, comment: str = "") -> RunInfo:
        return self._decide(run_id, step_id, "approve", comment)

    def reject(self, run_id: UUID | str, step_id: str, comment: str = "") -> RunInfo:
        return self._decide(run_id, step_id, "reject", comment)

    def _decide(self, run_id: UUID | str, step_id: str, decision: str, comment: str) -> RunInfo:
        """A person records their decision on an approval step in their own session (the
        database stamps who and when); the orchestrator then counts the step's decisions by
        people its inputs name and moves the run on."""
        key = _run_uuid(run_id)
        check_text(comment, "the comment")
        identity = self.tenancy.whoami()
        engine = self._engine()
        with self.db.transaction() as conn:
            store = WorkflowStore(conn)
            step = store.lock_step(key, step_id, lock=False)
            run = store.get_run(key, with_steps=False)
            if run is None:
                raise NotFoundError(f"no workflow run {run_id}")
            if step is None:
                raise NotFoundError(f"run {run_id} has no step {step_id!r}")
            if step.step_type != "approval":
                raise DefinitionError(f"step {step_id} is a {step.step_type} step, not an approval")
            if run.terminal:
                raise DefinitionError(f"run {run_id} has ended ({run.status})")
            if step.status != StepStatus.WAITING:
                raise DefinitionError(
                    f"step {step_id} is not waiting for a decision (it is {step.status})"
                )
            approvers = [str(a) for a in (step.inputs or {}).get("approvers") or []]
            person, role = identity.user, identity.role.value
            if person not in approvers and role not in approvers:
                raise AuthorizationError(
                    f"{person} ({role}) may not decide step {step_id}; "
                    f"its approvers are: {', '.join(approvers)}"
                )
            if any(a.person == person for a in store.approvals(key, step_id, step.attempts)):
                raise AlreadyExistsError(f"{person} has already decided step {step_id}")
            store.insert_approval(
                identity.tenant_id, key, step_id, step.attempts, decision, comment
            )
            TenancyService.audit(
                conn,
                identity.tenant_id,
                f"workflow.step.{decision}",
                "run",
                str(key),
                {"step": step_id, "comment": comment},
            )
        refused = engine.settle_decisions(key, step_id, person)
        if refused:
            raise DefinitionError(refused)
        return self.get_run(key)

    def settle_decisions(self, run_id: UUID, step_id: str, person: str) -> str | None:
        """The orchestrator counts an approval step's decisions: a rejection by one of its
        approvers fails it, enough approvals by them complete it. Decisions by anyone the
        step does not name count for nothing. Returns why nothing could be settled."""

        def work(conn: Connection) -> str | None:
            store = WorkflowStore(conn)
            # The step row first, then the run (the engine's lock order).
            step = store.lock_step(run_id, step_id)
            run = store.lock_run(run_id)
            if run is None or step is None:
                raise NotFoundError(f"no step {step_id!r} in run {run_id}")
            plan = self.plans.get(store, run.template_version_id)
            state = StepState(step_id, step.attempts, step.lost_leases, step.rollback)
            ch = Changes(store, run)
            if run.terminal and step.status in (
                StepStatus.PENDING,
                StepStatus.READY,
                StepStatus.WAITING,
            ):
                # A cancel skipped this row while the decision was being recorded: close it.
                self.coordinator.settle(ch, plan, state, Failed("run ended", cancelled=True))
                self.coordinator.flush(conn, ch, plan)
                return f"run {run_id} has ended ({run.status})"
            if run.terminal or step.status != StepStatus.WAITING:
                return None
            inputs = step.inputs or {}
            approvers = {str(a) for a in inputs.get("approvers") or []}
            required = int(inputs.get("required") or 1)
            decisions = [
                a
                for a in store.approvals(run_id, step_id, step.attempts)
                if a.person in approvers or a.product_role in approvers
            ]
            for a in decisions:
                if a.person == person:
                    kind = "step.approved" if a.decision == "approve" else "step.rejected"
                    ch.event(kind, step_id, person=a.person, role=a.product_role, comment=a.comment)
            rejected = next((a for a in decisions if a.decision == "reject"), None)
            approved = list(dict.fromkeys(a.person for a in decisions if a.decision == "approve"))
            if rejected is not None:
                why = f"rejected by {rejected.person}" + (
                    f": {rejected.comment}" if rejected.comment else ""
                )
                self.coordinator.settle(ch, plan, state, Failed(why, retryable=False))
            elif len(approved) >= required:
                self.coordinator.settle(ch, plan, state, Succeeded({"approved_by": approved}))
            self.coordinator.flush(conn, ch, plan)
            return None

        return run_tx(self._engine().db, work, self.hooks)

    # workers ----------------------------------------------------------------------------
    def worker(
        self,
        worker_id: str | None = None,
        *,
        db: Database | None = None,
        run_id: UUID | None = None,
        lease_seconds: float = DEFAULT_LEASE_S,
        shutdown_grace_seconds: float = 10.0,
    ) -> Worker:
        """A worker acting as the orchestrator (or `db`'s, e.g. its pool sized for serve)."""
        engine = self._engine()
        return Worker(
            db or engine.db,
            engine.registry,
            engine.executors,
            worker_id or new_worker_id("run" if run_id else "serve"),
            handlers=engine.handlers,
            plans=engine.plans,
            hooks=engine.hooks,
            run_end=engine.run_end,
            lease_seconds=lease_seconds,
            run_id=run_id,
            shutdown_grace_seconds=shutdown_grace_seconds,
        )

    def live_workers(self) -> int:
        with self.db.transaction() as conn:
            return WorkflowStore(conn).live_workers()

    def wait_run(
        self, run_id: UUID | str, timeout: float | None = None, *, drive: bool = True
    ) -> RunInfo:
        """Block until the run ends or `timeout` passes; returns the run as it is then.

        With `drive`, runs the run in-process while no tenant-wide worker is alive."""
        key = _run_uuid(run_id)
        deadline = None if timeout is None else time.monotonic() + timeout
        listener = listen(self.db)
        driver: tuple[Worker, threading.Thread] | None = None
        checked = 0.0
        try:
            while True:
                run = self.get_run(key, steps=False)
                if run.terminal:
                    break
                now = time.monotonic()
                if deadline is not None and now >= deadline:
                    break
                if drive and driver is None and now - checked >= _DRIVER_CHECK_S:
                    checked = now
                    if self.live_workers() == 0:
                        driver = self._drive(key)
                pause = 1.0 if deadline is None else max(0.0, min(1.0, deadline - now))
                if listener is None or not listener.wait(pause):
                    time.sleep(pause)
        finally:
            if listener is not None:
                listener.close()
            if driver is not None:
                worker, thread = driver
                worker.stop()
                thread.join(timeout=30)
        return self.get_run(key)

    def _drive(self, run_id: UUID) -> tuple[Worker, threading.Thread]:
        log.info("no live worker: running %s in this process", run_id)
        worker = self.worker(run_id=run_id, shutdown_grace_seconds=1.0)
        thread = threading.Thread(target=worker.run_forever, name=f"drive-{run_id}", daemon=True)
        thread.start()
        return worker, thread


def _run_uuid(value: UUID | str) -> UUID:
    if isinstance(value, UUID):
        return value
    try:
        return UUID(value)
    except ValueError:
        raise NotFoundError(f"no workflow run {value!r} (not a run id)") from None


def enable_local_executor_everywhere(admin_conn: Connection) -> None:
    """The embedded default runs scripts on this machine: the local executor is on for every
    tenant not yet set (on the administrative connection, which sees every tenant)."""
    WorkflowStore(admin_conn).enable_local_executor_everywhere()
