"""`stella` entry point. Exit codes: 0 success, 2 bad input (a missing or wrong passphrase too),
3 a refused decision, 1 other failures (reason on stderr)."""

from __future__ import annotations

import argparse
import json
import logging
import sys
from collections.abc import Callable, Sequence
from typing import Any

from stella_core import __version__
from stella_core.cli.common import acting, number_flag, seconds_flag, text_flag
from stella_core.environments.model import MAX_ORDER, MAX_REQUIRED_APPROVALS
from stella_core.errors import DefinitionError, StellaError
from stella_core.limits import INT32_MAX, INT64_MAX, MAX_LIST_ROWS, MAX_WAIT_SECONDS

Handler = Callable[[argparse.Namespace], Any]

ROLES = ["release-manager", "approver", "auditor", "admin"]


class UsageError(DefinitionError):
    pass


class _Parser(argparse.ArgumentParser):
    def error(self, message: str) -> Any:  # argparse's own exit code 2 matches "bad input"
        raise UsageError(f"{self.prog}: {message}")

    def add_argument(self, *args: Any, **kwargs: Any) -> argparse.Action:
        """Text by default: every value a flag or argument takes is checked to be text
        PostgreSQL can store, unless it says otherwise (a path names a file: `type=str`)."""
        if kwargs.get("action", "store") in ("store", "append", "extend") and "type" not in kwargs:
            kwargs["type"] = text_flag
        return super().add_argument(*args, **kwargs)


# Flags' ranges: what the columns hold, and no more than makes sense.
ORDER = number_flag(0, MAX_ORDER)
APPROVALS = number_flag(0, MAX_REQUIRED_APPROVALS)
LIMIT = number_flag(1, MAX_LIST_ROWS)
VERSION = number_flag(1, INT32_MAX)
TIMEOUT = seconds_flag(0, MAX_WAIT_SECONDS)


def _out(args: argparse.Namespace, value: Any, text_lines: Callable[[], list[str]]) -> None:
    if args.output == "json":
        json.dump(value, sys.stdout, indent=2, sort_keys=False, default=str)
        sys.stdout.write("\n")
    else:
        for line in text_lines():
            print(line)


# ------------------------------------------------------------------------------- handlers
def cmd_db_upgrade(args: argparse.Namespace) -> None:
    from stella_core.bootstrap import Backend, Stella
    from stella_core.db import migrate
    from stella_core.profiles import ProfileStore

    backend = Backend.open()
    try:
        before, after = backend.upgrade()
        profiles = ProfileStore(backend.home)
        backend.ensure_ready(profiles, args.profile)
        # The orchestrator gets its login and its key with the schema.
        stella = Stella(backend, profiles.get(backend.target, args.profile))
        try:
            stella.evidence.ensure_orchestrator_key()
        finally:
            stella.close(keep_backend=True)
        value = {
            "target": backend.target,
            "before": before,
            "after": after,
            "head": migrate.head_revision(),
        }
    finally:
        backend.close()
    _out(args, value, lambda: [f"database {value['target']} at revision {after} (was {before})"])


def cmd_whoami(args: argparse.Namespace) -> None:
    with acting(args) as stella:
        me = stella.tenancy.whoami()
        demo = stella.tenancy.is_demo()
    value = {
        "user": me.user,
        "role": me.role.value,
        "tenant": me.tenant_name,
        "tenant_id": str(me.tenant_id),
        "profile": stella.profile.name,
        "demo": demo,
    }
    _out(
        args,
        value,
        lambda: [
            f"{me.user} ({me.role.value}) in tenant {me.tenant_name}{' (a demo)' if demo else ''}"
        ],
    )


def cmd_user_add(args: argparse.Namespace) -> None:
    from stella_core.cli.common import secret_line
    from stella_core.tenancy.model import ProductRole

    passphrase = None
    if args.passphrase_stdin:
        if args.role == ProductRole.AUDITOR.value:
            raise UsageError(
                "auditors sign nothing and get no key: --passphrase-stdin is for others"
            )
        passphrase = secret_line()
    with acting(args) as stella:
        user, key = stella.add_person(args.name, ProductRole(args.role), passphrase)
        # Their name, or `name@tenant` where another tenant's person has that profile here.
        profile = stella.profiles.name_for(stella.backend.target, user.tenant_id, user.name)
    profile = profile or user.name
    value = {
        "id": str(user.id),
        "name": user.name,
        "role": user.role.value,
        "created_at": user.created_at.isoformat(),
        "created_by": user.created_by,
        "profile": profile,
        "signing_key_id": key.key_id if key else None,
        "key_passphrase": passphrase is not None,
    }
    signs = f"; signing key {key.key_id[:16]}…" if key else ""
    _out(
        args,
        value,
        lambda: [f"added {user.name} ({user.role.value}); profile {profile}{signs}"],
    )


def cmd_user_list(args: argparse.Namespace) -> None:
    with acting(args) as stella:
        users = stella.tenancy.list_users()
    value = [
        {
            "id": str(u.id),
            "name": u.name,
            "role": u.role.value,
            "disabled": u.disabled,
            "created_at": u.created_at.isoformat(),
            "created_by": u.created_by,
        }
        for u in users
    ]
    _out(args, value, lambda: [f"{u.name:20} {u.role.value}" for u in users])


def cmd_profile_list(args: argparse.Namespace) -> None:
    from stella_core.profiles import (
        ProfileStore,
        configured_database_url,
        stella_home,
        target_of,
    )

    store = ProfileStore(stella_home())
    target = target_of(configured_database_url(stella_home()))
    default = store.default_name(target)
    names = store.names(target)
    value = [{"name": n, "default": n == default, "target": target} for n in names]
    _out(args, value, lambda: [("* " if n == default else "  ") + n for n in names])


def _registry_json(r: Any) -> dict[str, Any]:
    return {
        "id": str(r.id),
        "name": r.name,
        "url": r.url,
        "kind": r.kind.value,
        "username": r.username,
        "has_password": r.has_password,
        "insecure": r.insecure,
        "created_at": r.created_at.isoformat(),
    }


def cmd_registry_add(args: argparse.Namespace) -> None:
    from stella_core.cli.common import secret_line

    password = None
    if args.password_stdin:
        if not args.username:
            raise UsageError("--password-stdin needs --username")
        password = secret_line("the password")
        if not password:
            raise UsageError("no password on standard input")
    elif args.username:
        raise UsageError("--username needs --password-stdin (passwords are never taken as flags)")
    with acting(args) as stella:
        reg = stella.releases.add_registry(
            args.name, args.url, username=args.username, password=password, insecure=args.insecure
        )
    _out(args, _registry_json(reg), lambda: [f"added registry {reg.name} ({reg.url})"])


def cmd_registry_remove(args: argparse.Namespace) -> None:
    with acting(args) as stella:
        reg = stella.releases.remove_registry(args.name)
    _out(args, _registry_json(reg), lambda: [f"removed registry {reg.name} ({reg.url})"])


def cmd_registry_list(args: argparse.Namespace) -> None:
    with acting(args) as stella:
        regs = stella.releases.list_registries()
    _out(args, [_registry_json(r) for r in regs], lambda: [f"{r.name:20} {r.url}" for r in regs])


def _component_json(c: Any) -> dict[str, Any]:
    return {
        "id": str(c.id),
        "name": c.name,
        "registry": c.registry,
        "repository": c.repository,
        "created_at": c.created_at.isoformat(),
    }


def cmd_component_add(args: argparse.Namespace) -> None:
    with acting(args) as stella:
        comp = stella.releases.add_component(args.name, args.image)
    _out(
        args,
        _component_json(comp),
        lambda: [f"added component {comp.name} ({comp.registry}/{comp.repository})"],
    )


def cmd_component_list(args: argparse.Namespace) -> None:
    with acting(args) as stella:
        comps = stella.releases.list_components()
    _out(
        args,
        [_component_json(c) for c in comps],
        lambda: [f"{c.name:20} {c.registry}/{c.repository}" for c in comps],
    )


def _release_lines(rel: Any) -> list[str]:
    lines = [f"{rel.name}  created {rel.created_at:%Y-%m-%d %H:%M:%S} by {rel.created_by}"]
    lines += [f"  {c.name:16} {c.tag or '-':16} {c.digest}" for c in rel.components]
    return lines


def cmd_release_create(args: argparse.Namespace) -> None:
    from stella_core.releases.model import ComponentPin
    from stella_core.releases.reference import check_release_name, parse_component_pin

    check_release_name(args.name)
    if not args.component:
        raise UsageError("give at least one --component COMPONENT=TAG_OR_DIGEST")
    pins = []
    for raw in args.component:
        name, tag, digest = parse_component_pin(raw)
        pins.append(ComponentPin(component=name, tag=tag, digest=digest))
    with acting(args) as stella:
        rel = stella.releases.create_release(args.name, pins)
    _out(args, rel.to_json(), lambda: _release_lines(rel))


def cmd_release_show(args: argparse.Namespace) -> None:
    with acting(args) as stella:
        rel = stella.releases.get_release(args.name)
    _out(args, rel.to_json(), lambda: _release_lines(rel))


def cmd_release_list(args: argparse.Namespace) -> None:
    with acting(args) as stella:
        rels = stella.releases.list_releases()
    _out(
        args,
        [r.to_json() for r in rels],
        lambda: [
            f"{r.name:24} {r.created_at:%Y-%m-%d %H:%M} {r.created_by:12} "
            f"{len(r.components)} components"
            for r in rels
        ],
    )


def cmd_env_add(args: argparse.Namespace) -> None:
    with acting(args) as stella:
        from stella_core.cli.promotion_cmds import parse_quorum, parse_window

        env = stella.environments.add(
            args.name,
            order=args.order,
            required_approvals=args.required_approvals,
            separation_of_duties=args.separation_of_duties,
            workflow=args.workflow,
            approver_roles=args.approver_role or None,
            approver_persons=args.approver,
            quorum=parse_quorum(args.quorum),
            schedule=[parse_window(w) for w in args.window] if args.window else None,
            auto_promote_from=args.auto_promote_from,
            reason=args.reason,
        )
    _out(args, env.to_json(), lambda: [f"added environment {env.name} (order {env.order})"])


def cmd_env_set(args: argparse.Namespace) -> None:
    """An admin changes an environment's policy: a new version, signed and audited."""
    from stella_core.cli.promotion_cmds import parse_quorum, parse_window

    changes: dict[str, Any] = {}
    if args.order is not None:
        changes["order"] = args.order
    if args.required_approvals is not None:
        changes["required_approvals"] = args.required_approvals
    if args.separation_of_duties is not None:
        changes["separation_of_duties"] = args.separation_of_duties
    if args.no_workflow:
        changes["workflow"] = None
    elif args.workflow is not None:
        changes["workflow"] = args.workflow
    if args.approver_role:
        changes["approver_roles"] = args.approver_role
    if args.no_approvers:
        changes["approver_persons"] = []
    elif args.approver:
        changes["approver_persons"] = args.approver
    if args.no_quorum:
        changes["quorum"] = {}
    elif args.quorum:
        changes["quorum"] = parse_quorum(args.quorum)
    if args.no_windows:
        changes["schedule"] = None
    elif args.window:
        changes["schedule"] = [parse_window(w) for w in args.window]
    if args.no_auto_promote:
        changes["auto_promote_from"] = None
    elif args.auto_promote_from is not None:
        changes["auto_promote_from"] = args.auto_promote_from
    with acting(args) as stella:
        env = stella.environments.set(args.name, reason=args.reason, **changes)
    _out(
        args,
        env.to_json(),
        lambda: [f"environment {env.name}: policy version {env.policy_version}"],
    )


def cmd_env_policies(args: argparse.Namespace) -> None:
    with acting(args) as stella:
        versions = stella.environments.policy_versions(args.name)
    _out(
        args,
        versions,
        lambda: [
            f"v{v['version']:<3} {v['changed_at']}  by {v['changed_by']}  "
            f"{v['packet'] or 'unsigned (from before signed policies)'}"
            for v in versions
        ],
    )


def cmd_env_list(args: argparse.Namespace) -> None:
    with acting(args) as stella:
        envs = stella.environments.list()
    _out(
        args,
        [e.to_json() for e in envs],
        lambda: [
            f"{e.order:3} {e.name:16} approvals={e.required_approvals} "
            f"sod={'yes' if e.separation_of_duties else 'no'}"
            for e in envs
        ],
    )


def cmd_demo_seed(args: argparse.Namespace) -> None:
    from stella_core.demo.seed import seed

    with acting(args) as stella:
        summary = seed(stella, history=not args.no_history)
    _out(args, summary, lambda: [f"{k}: {v}" for k, v in summary.items()])


def cmd_audit_verify(args: argparse.Namespace) -> None:
    with acting(args) as stella:
        count, problems = stella.tenancy.verify_audit()
    value = {"ok": not problems, "entries": count, "problems": problems}
    _out(args, value, lambda: [f"{count} entries, {'ok' if not problems else 'BROKEN'}", *problems])
    if problems:
        raise SystemExit(1)


def cmd_audit_list(args: argparse.Namespace) -> None:
    with acting(args) as stella:
        entries = stella.tenancy.audit_entries(args.limit)
    value = [e.model_dump(mode="json") for e in entries]
    _out(
        args,
        value,
        lambda: [
            f"{e.chain_index:5} {e.at:%Y-%m-%d %H:%M:%S} {e.actor:12} {e.action:18} {e.entity_id}"
            for e in entries
        ],
    )


# ------------------------------------------------------------------------------- workflows
def _read_document(path: str) -> str:
    """A workflow document's text, read under the size a template may have."""
    from stella_core.limits import read_text
    from stella_core.workflows.template import MAX_TEMPLATE_BYTES

    return read_text(path, MAX_TEMPLATE_BYTES, "workflow document")


def cmd_workflow_validate(args: argparse.Namespace) -> None:
    # Pure: parsing and validation need no database, no profile.
    from stella_core.workflows.steps.registry import default_registry
    from stella_core.workflows.template import check, validation_report

    _, problems = check(_read_document(args.file), default_registry())
    report = validation_report(problems)
    _out(
        args,
        report,
        lambda: (
            ["valid"]
            if not problems
            else [
                f"{'.'.join(x for x in (p.node, p.field) if x) or '(template)'}: {p.message}"
                for p in problems
            ]
        ),
    )
    if problems:
        first = problems[0]
        where = ".".join(x for x in (first.node, first.field) if x)
        more = f" (and {len(problems) - 1} more)" if len(problems) > 1 else ""
        raise UsageError(f"invalid template: {where + ': ' if where else ''}{first.message}{more}")


def cmd_workflow_import(args: argparse.Namespace) -> None:
    raw = _read_document(args.file)
    with acting(args) as stella:
        imported = stella.workflows.import_template(raw)
    value = {"name": imported.name, "version": imported.version, "id": str(imported.id)}
    _out(args, value, lambda: [f"{imported.name} version {imported.version}"])


def cmd_workflow_export(args: argparse.Namespace) -> None:
    with acting(args) as stella:
        document = stella.workflows.export_template(args.name, args.version)
    json.dump(document, sys.stdout, indent=2)
    sys.stdout.write("\n")


def cmd_workflow_list(args: argparse.Namespace) -> None:
    with acting(args) as stella:
        templates = stella.workflows.list_templates()
    value = [
        {
            "name": t.name,
            "version": t.latest_version,
            "digest": t.latest_digest,
            "id": str(t.id),
            "updated_at": t.updated_at.isoformat(),
            "updated_by": t.updated_by,
        }
        for t in templates
    ]
    _out(
        args,
        value,
        lambda: [f"{t.name:24} v{t.latest_version:<4} {t.updated_by}" for t in templates],
    )


def cmd_workflow_versions(args: argparse.Namespace) -> None:
    with acting(args) as stella:
        versions = stella.workflows.template_versions(args.name)
    value = [
        {
            "name": v.name,
            "version": v.version,
            "id": str(v.id),
            "digest": v.digest,
            "created_at": v.created_at.isoformat(),
            "created_by": v.created_by,
        }
        for v in versions
    ]
    _out(
        args,
        value,
        lambda: [
            f"v{v.version:<4} {v.created_at:%Y-%m-%d %H:%M} {v.created_by:12} {v.digest}"
            for v in versions
        ],
    )


def cmd_workflow_settings(args: argparse.Namespace) -> None:
    with acting(args) as stella:
        if args.local_executor is None and args.unsandboxed is None:
            value = stella.workflows.settings()
        else:
            value = {}
            if args.local_executor is not None:
                value |= stella.workflows.set_local_executor(args.local_executor == "on")
            if args.unsandboxed is not None:
                value |= stella.workflows.set_unsandboxed(args.unsandboxed == "on")

    def lines() -> list[str]:
        out = []
        if "local_executor" in value:
            out.append(f"local executor: {'on' if value['local_executor'] else 'off'}")
        if "allow_unsandboxed" in value:
            allowed = value["allow_unsandboxed"]
            out.append(
                "unsandboxed scripts: "
                + ("allowed where a host has no sandbox" if allowed else "refused")
            )
        if "sandbox" in value:
            out.append(f"sandbox on this machine: {value['sandbox'] or 'none'}")
        return out

    _out(args, value, lines)


def _inputs(pairs: list[str]) -> dict[str, str]:
    out: dict[str, str] = {}
    for pair in pairs:
        name, sep, value = pair.partition("=")
        if not sep or not name:
            raise UsageError(f"--input needs NAME=VALUE, got {pair!r}")
        if name in out:
            raise UsageError(f"input {name!r} given twice")
        out[name] = value
    return out


def _run_json(run: Any) -> dict[str, Any]:
    """`stella run show` as the CLI contract fixes it."""
    return {
        "run_id": str(run.id),
        "status": run.status,
        "steps": [
            {
                "id": s.id,
                "status": s.status,
                "attempts": s.attempts,
                "outputs": s.outputs,
                "started_at": s.started_at.isoformat() if s.started_at else None,
                "finished_at": s.finished_at.isoformat() if s.finished_at else None,
            }
            for s in run.steps
        ],
    }


def _run_lines(run: Any) -> list[str]:
    release = f" on {run.release['name']}" if run.release else ""
    lines = [f"run {run.id}: {run.template} v{run.template_version}{release}: {run.status}"]
    if run.error:
        lines.append(f"  {run.error}")
    for s in run.steps:
        extra = f"  {s.error}" if s.error and s.status not in ("succeeded",) else ""
        lines.append(f"  {s.id:24} {s.status:10} attempts={s.attempts}{extra}")
    return lines


def cmd_run_start(args: argparse.Namespace) -> None:
    inputs = _inputs(args.input)
    with acting(args) as stella:
        run = stella.workflows.start_run(
            args.template, version=args.version, release=args.release, inputs=inputs
        )
        if args.wait:
            run = stella.workflows.wait_run(run.id, args.timeout)
    _out(args, {"run_id": str(run.id), "status": run.status}, lambda: [f"{run.id} {run.status}"])
    if args.wait and run.status != "succeeded":
        raise SystemExit(1)


def cmd_run_show(args: argparse.Namespace) -> None:
    with acting(args) as stella:
        run = stella.workflows.get_run(args.run_id)
    _out(args, run.to_json() if args.full else _run_json(run), lambda: _run_lines(run))


def cmd_run_list(args: argparse.Namespace) -> None:
    with acting(args) as stella:
        runs = stella.workflows.list_runs(args.limit)
    value = [
        {
            "run_id": str(r.id),
            "status": r.status,
            "template": r.template,
            "version": r.template_version,
            "release": r.release["name"] if r.release else None,
            "created_at": r.created_at.isoformat(),
            "created_by": r.created_by,
        }
        for r in runs
    ]
    _out(
        args,
        value,
        lambda: [
            f"{r.id} {r.status:12} {r.template} v{r.template_version} {r.created_at:%Y-%m-%d %H:%M}"
            for r in runs
        ],
    )


def cmd_run_wait(args: argparse.Namespace) -> None:
    with acting(args) as stella:
        run = stella.workflows.wait_run(args.run_id, args.timeout, drive=not args.no_drive)
    _out(args, _run_json(run), lambda: _run_lines(run))
    if run.status != "succeeded":
        raise SystemExit(1)


def cmd_run_cancel(args: argparse.Namespace) -> None:
    with acting(args) as stella:
        run = stella.workflows.cancel_run(args.run_id)
    _out(args, _run_json(run), lambda: _run_lines(run))


def _decide(args: argparse.Namespace, decision: str) -> None:
    with acting(args) as stella:
        service = stella.workflows
        decide = service.approve if decision == "approve" else service.reject
        run = decide(args.run_id, args.step, args.comment)
    _out(args, _run_json(run), lambda: _run_lines(run))


def cmd_run_approve(args: argparse.Namespace) -> None:
    _decide(args, "approve")


def cmd_run_reject(args: argparse.Namespace) -> None:
    _decide(args, "reject")


def cmd_run_retry(args: argparse.Namespace) -> None:
    with acting(args) as stella:
        run = stella.workflows.retry_step(args.run_id, args.step)
    _out(args, _run_json(run), lambda: _run_lines(run))


def cmd_run_events(args: argparse.Namespace) -> None:
    with acting(args) as stella:
        events = stella.workflows.run_events(args.run_id, args.after)
    _out(
        args,
        [e.to_json() for e in events],
        lambda: [
            f"{e.seq:5} {e.at:%H:%M:%S.%f} {e.node_id or '-':20} {e.kind:20} "
            f"{json.dumps(e.details) if e.details else ''}"
            for e in events
        ],
    )


def _seal(stella: Any) -> None:
    """The ledger sealed at intervals: a checkpoint when packets came since the last one."""
    from stella_core.errors import NotFoundError

    try:
        row = stella.evidence.checkpoint()
        logging.getLogger("stella.serve").info("ledger sealed at %s packets", row.tree_size)
    except NotFoundError:
        pass  # nothing to seal yet
    except StellaError as exc:
        logging.getLogger("stella.serve").warning("could not seal the ledger: %s", exc.message)


def cmd_serve(args: argparse.Namespace) -> None:
    """Run workers until SIGTERM or SIGINT; a step in flight gets a grace period, then it is
    stopped and handed back (its lease released) so another worker takes it at once."""
    import signal
    import threading
    import time

    from stella_core.errors import OrchestratorUnavailableError
    from stella_core.tenancy.model import ProductRole

    stop = threading.Event()
    db = None
    with acting(args) as stella:
        try:
            identity = stella.tenancy.require(ProductRole.RELEASE_MANAGER, ProductRole.ADMIN)
            if stella.orchestrator is None:
                raise OrchestratorUnavailableError(
                    "stella serve runs the orchestrator, and this machine holds no orchestrator "
                    "login for this tenant (STELLA_HOME/orchestrator.json is made where the "
                    "database is initialised or migrated)"
                )
            # Workers act as the orchestrator; each holds a connection while working and one
            # for its lease heartbeats.
            db = stella.orchestrator.database(pool_size=2 * args.workers + 2)
            workers = [
                stella.workflows.worker(
                    db=db, lease_seconds=args.lease_seconds, shutdown_grace_seconds=args.grace
                )
                for _ in range(args.workers)
            ]
            for sig in (signal.SIGTERM, signal.SIGINT):
                signal.signal(sig, lambda *_: stop.set())
            threads = [
                threading.Thread(target=w.run_forever, args=(stop,), name=w.worker_id)
                for w in workers
            ]
            for thread in threads:
                thread.start()
            print(
                f"stella: serving tenant {identity.tenant_name} as the orchestrator (started "
                f"by {identity.user}) with {args.workers} worker(s)",
                file=sys.stderr,
                flush=True,
            )
            sealed_at = rechecked_at = time.monotonic()
            while not stop.wait(0.5):
                if not any(t.is_alive() for t in threads):
                    break
                if args.checkpoint_every and time.monotonic() - sealed_at >= args.checkpoint_every:
                    sealed_at = time.monotonic()
                    _seal(stella)
                if args.recheck_every and time.monotonic() - rechecked_at >= args.recheck_every:
                    rechecked_at = time.monotonic()
                    stella.promotions.recheck_blocked()
            stop.set()
            for thread in threads:
                thread.join()
        finally:
            if db is not None:
                db.dispose()
    _out(args, {"workers": args.workers, "stopped": True}, lambda: ["stella: stopped"])


# ------------------------------------------------------------------------------- parser
def build_parser() -> argparse.ArgumentParser:
    common = _Parser(add_help=False)
    common.add_argument("--output", "-o", choices=["text", "json"], default="text")
    common.add_argument(
        "--profile", default=argparse.SUPPRESS, help="act as this person (a connection profile)"
    )

    parser = _Parser(prog="stella", description="Stella Release Desk command line")
    parser.add_argument("--version", action="version", version=f"stella {__version__}")
    parser.add_argument("--profile", default=None, help="act as this person (a connection profile)")
    parser.add_argument("--verbose", "-v", action="store_true")
    groups = parser.add_subparsers(dest="group", required=True, parser_class=_Parser)

    def leaf(sub: Any, name: str, handler: Handler, help_: str) -> argparse.ArgumentParser:
        p: argparse.ArgumentParser = sub.add_parser(name, parents=[common], help=help_)
        p.set_defaults(handler=handler)
        return p

    db = groups.add_parser("db", help="database schema").add_subparsers(dest="cmd", required=True)
    leaf(db, "upgrade", cmd_db_upgrade, "create or migrate the schema (idempotent)")

    leaf(groups, "whoami", cmd_whoami, "who this profile acts as")

    user = groups.add_parser("user", help="people").add_subparsers(dest="cmd", required=True)
    p = leaf(user, "add", cmd_user_add, "add a person (login role, user, profile)")
    p.add_argument("name")
    p.add_argument("--role", required=True, choices=ROLES)
    p.add_argument(
        "--passphrase-stdin",
        action="store_true",
        help="make their signing key under this passphrase (one line of standard input) rather "
        "than this machine's; they give it when they sign",
    )
    leaf(user, "list", cmd_user_list, "list people of this tenant")

    prof = groups.add_parser("profile", help="connection profiles").add_subparsers(
        dest="cmd", required=True
    )
    leaf(prof, "list", cmd_profile_list, "profiles on this machine")

    reg = groups.add_parser("registry", help="OCI registries").add_subparsers(
        dest="cmd", required=True
    )
    p = leaf(reg, "add", cmd_registry_add, "add a registry or an OCI layout directory")
    p.add_argument("name")
    p.add_argument("--url", required=True)
    p.add_argument("--username")
    p.add_argument("--password-stdin", action="store_true")
    p.add_argument(
        "--insecure",
        action="store_true",
        help="allow plain HTTP (the password then goes over it, to this registry's own host "
        "only) and skip TLS certificate verification",
    )
    leaf(reg, "list", cmd_registry_list, "list registries")
    p = leaf(reg, "remove", cmd_registry_remove, "remove a registry no component uses")
    p.add_argument("name")

    comp = groups.add_parser("component", help="components").add_subparsers(
        dest="cmd", required=True
    )
    p = leaf(comp, "add", cmd_component_add, "add a component")
    p.add_argument("name")
    p.add_argument("--image", required=True, help="REGISTRY_NAME/REPOSITORY")
    leaf(comp, "list", cmd_component_list, "list components")

    rel = groups.add_parser("release", help="releases").add_subparsers(dest="cmd", required=True)
    p = leaf(rel, "create", cmd_release_create, "create an immutable release")
    p.add_argument("name")
    p.add_argument("--component", action="append", default=[], metavar="COMPONENT=TAG_OR_DIGEST")
    p = leaf(rel, "show", cmd_release_show, "show a release")
    p.add_argument("name")
    leaf(rel, "list", cmd_release_list, "list releases")

    env = groups.add_parser("env", help="environments").add_subparsers(dest="cmd", required=True)
    p = leaf(env, "add", cmd_env_add, "add an environment")
    p.add_argument("name")
    p.add_argument("--order", type=ORDER, required=True)
    p.add_argument("--required-approvals", type=APPROVALS, default=0)
    p.add_argument("--separation-of-duties", action="store_true")
    p.add_argument("--workflow", default=None, help="workflow template a promotion runs")
    p.add_argument(
        "--approver-role",
        action="append",
        default=[],
        choices=ROLES,
        help="a role whose people may approve (default: approver and admin)",
    )
    p.add_argument("--approver", action="append", default=[], metavar="PERSON")
    p.add_argument("--quorum", action="append", default=[], metavar="ROLE=N")
    p.add_argument(
        "--window",
        action="append",
        default=[],
        metavar="DAYS@HH:MM-HH:MM",
        help="allowed deployment window in UTC, e.g. mon-fri@08:00-18:00 (repeatable)",
    )
    p.add_argument("--auto-promote-from", default=None, metavar="ENV")
    p.add_argument("--reason", default="", help="why (kept in the signed policy packet)")
    p = leaf(env, "set", cmd_env_set, "admins: change an environment's policy (signed, audited)")
    p.add_argument("name")
    p.add_argument("--reason", required=True, help="why the policy changes")
    p.add_argument("--order", type=ORDER, default=None)
    p.add_argument("--required-approvals", type=APPROVALS, default=None)
    p.add_argument(
        "--separation-of-duties",
        action=argparse.BooleanOptionalAction,
        default=None,
        help="bar the requester from approving (or --no-separation-of-duties)",
    )
    p.add_argument("--workflow", default=None)
    p.add_argument("--no-workflow", action="store_true", help="promotions run no workflow")
    p.add_argument("--approver-role", action="append", default=[], choices=ROLES)
    p.add_argument("--approver", action="append", default=[], metavar="PERSON")
    p.add_argument("--no-approvers", action="store_true", help="clear the named approvers")
    p.add_argument("--quorum", action="append", default=[], metavar="ROLE=N")
    p.add_argument("--no-quorum", action="store_true")
    p.add_argument("--window", action="append", default=[], metavar="DAYS@HH:MM-HH:MM")
    p.add_argument("--no-windows", action="store_true", help="deploy at any time")
    p.add_argument("--auto-promote-from", default=None, metavar="ENV")
    p.add_argument("--no-auto-promote", action="store_true")
    p = leaf(env, "policies", cmd_env_policies, "every version of an environment's policy")
    p.add_argument("name")
    leaf(env, "list", cmd_env_list, "list environments in promotion order")

    demo = groups.add_parser("demo", help="demo data").add_subparsers(dest="cmd", required=True)
    p = leaf(demo, "seed", cmd_demo_seed, "create the demo people, environments and releases")
    p.add_argument(
        "--no-history",
        action="store_true",
        help="skip playing the demo's past promotions (dev and stage for every release)",
    )

    audit = groups.add_parser("audit", help="the audit log").add_subparsers(
        dest="cmd", required=True
    )
    leaf(audit, "verify", cmd_audit_verify, "check the audit hash chain")
    p = leaf(audit, "list", cmd_audit_list, "list audit entries")
    p.add_argument("--limit", type=LIMIT, default=None)

    wf = groups.add_parser("workflow", help="workflow templates").add_subparsers(
        dest="cmd", required=True
    )
    p = leaf(wf, "validate", cmd_workflow_validate, "validate a template file (no database)")
    p.add_argument("file", type=str, help="template JSON file, or - for standard input")
    p = leaf(wf, "import", cmd_workflow_import, "store a template (a new version if it changed)")
    p.add_argument("file", type=str, help="template JSON file, or - for standard input")
    p = leaf(wf, "export", cmd_workflow_export, "print a template version's JSON")
    p.add_argument("name")
    p.add_argument("--version", type=VERSION, default=None)
    leaf(wf, "list", cmd_workflow_list, "list templates")
    p = leaf(wf, "versions", cmd_workflow_versions, "list a template's versions")
    p.add_argument("name")
    p = leaf(wf, "settings", cmd_workflow_settings, "show or change the tenant's workflow settings")
    p.add_argument(
        "--local-executor",
        choices=["on", "off"],
        default=None,
        help="allow script steps to run on the orchestrator's host (admins)",
    )
    p.add_argument(
        "--unsandboxed",
        choices=["on", "off"],
        default=None,
        help="let script steps run without a sandbox where a host has none (admins)",
    )

    run = groups.add_parser("run", help="workflow runs").add_subparsers(dest="cmd", required=True)
    p = leaf(run, "start", cmd_run_start, "start a run of a template")
    p.add_argument("template")
    p.add_argument(
        "--version", type=VERSION, default=None, help="template version (default latest)"
    )
    p.add_argument("--release", default=None, help="release to run on")
    p.add_argument("--input", action="append", default=[], metavar="NAME=VALUE")
    p.add_argument("--wait", action="store_true", help="then wait as 'stella run wait' does")
    p.add_argument("--timeout", type=TIMEOUT, default=None, help="with --wait: seconds")
    p = leaf(run, "show", cmd_run_show, "show a run and its steps")
    p.add_argument("run_id")
    p.add_argument("--full", action="store_true", help="also inputs, errors, release, phase")
    p = leaf(run, "list", cmd_run_list, "list runs, newest first")
    p.add_argument("--limit", type=LIMIT, default=None)
    p = leaf(
        run,
        "wait",
        cmd_run_wait,
        "wait for a run to end (runs it here when no 'stella serve' is alive)",
    )
    p.add_argument("run_id")
    p.add_argument("--timeout", type=TIMEOUT, default=None, help="seconds")
    p.add_argument(
        "--no-drive", action="store_true", help="only watch, never run steps in this process"
    )
    p = leaf(run, "cancel", cmd_run_cancel, "cancel a run (running scripts are stopped)")
    p.add_argument("run_id")
    for name, handler, what in (
        ("approve", cmd_run_approve, "approve a waiting approval step"),
        ("reject", cmd_run_reject, "reject a waiting approval step"),
    ):
        p = leaf(run, name, handler, what)
        p.add_argument("run_id")
        p.add_argument("--step", required=True)
        p.add_argument("--comment", default="")
    p = leaf(run, "retry", cmd_run_retry, "resume a failed run from its failed step")
    p.add_argument("run_id")
    p.add_argument("--step", required=True)
    p = leaf(run, "events", cmd_run_events, "a run's event log")
    p.add_argument("run_id")
    p.add_argument(
        "--after",
        type=number_flag(0, INT64_MAX),
        default=0,
        help="only events after this sequence number",
    )

    from stella_core.cli import evidence_cmds, promotion_cmds

    evidence_cmds.register(groups, leaf)
    promotion_cmds.register(groups, leaf, env)

    p = leaf(groups, "serve", cmd_serve, "run workflow workers until SIGTERM/SIGINT")
    p.add_argument("--workers", type=number_flag(1, 64), default=2)
    p.add_argument(
        "--lease-seconds",
        type=seconds_flag(1, 86400),
        default=30.0,
        help="how long a step stays claimed without a heartbeat (a dead worker's steps are "
        "taken over after this)",
    )
    p.add_argument(
        "--grace",
        type=seconds_flag(0, 3600),
        default=10.0,
        help="on SIGTERM/SIGINT, seconds a running step may take to finish before it is "
        "stopped and handed back to be run again",
    )
    p.add_argument(
        "--checkpoint-every",
        type=seconds_flag(0, MAX_WAIT_SECONDS),
        default=300.0,
        metavar="SECONDS",
        help="seal the evidence ledger with a signed checkpoint this often (0: never)",
    )
    p.add_argument(
        "--recheck-every",
        type=seconds_flag(0, MAX_WAIT_SECONDS),
        default=30.0,
        metavar="SECONDS",
        help="decide blocked promotions again this often, once their gates clear (0: never)",
    )
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    try:
        args = parser.parse_args(argv)
        logging.basicConfig(
            level=logging.INFO if args.verbose else logging.WARNING,
            format="%(levelname)s %(name)s: %(message)s",
        )
        args.handler(args)
    except StellaError as exc:
        print(f"stella: error: {exc.message}", file=sys.stderr)
        return exc.exit_code
    except KeyboardInterrupt:
        print("stella: interrupted", file=sys.stderr)
        return 130
    except Exception as exc:  # an unexpected failure still gets a one-line reason and exit 1
        logging.getLogger("stella").debug("unexpected failure", exc_info=True)
        print(f"stella: error: {type(exc).__name__}: {exc}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
