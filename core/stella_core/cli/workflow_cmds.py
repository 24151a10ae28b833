"""`stella workflow …` and `stella run …`: templates and their runs."""

from __future__ import annotations

import argparse
import json
import sys
from typing import Any

from stella_core.cli.common import (
    LIMIT,
    TIMEOUT,
    VERSION,
    Leaf,
    UsageError,
    acting,
    named_values,
    number_flag,
    show,
)
from stella_core.limits import INT64_MAX


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
    show(
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
    show(args, value, lambda: [f"{imported.name} version {imported.version}"])


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
    show(
        args,
        value,
        lambda: [f"{t.name:24} v{t.latest_version:<4} {t.updated_by}" for t in templates],
    )


def cmd_workflow_rename(args: argparse.Namespace) -> None:
    with acting(args) as stella:
        renamed = stella.workflows.rename_template(args.name, args.new_name)
    value = {"name": renamed.name, "renamed_from": args.name, "version": renamed.latest_version}
    show(args, value, lambda: [f"{args.name} is now {renamed.name}"])


def cmd_workflow_delete(args: argparse.Namespace) -> None:
    with acting(args) as stella:
        runs = stella.workflows.retire_template(args.name)
    value = {"name": args.name, "retired": True, "runs": runs}
    show(
        args,
        value,
        lambda: [
            f"{args.name} deleted (retired: its versions stay for the {runs} run(s) that used it)"
        ],
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
    show(
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

    show(args, value, lines)


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
    inputs = named_values(args.input, "--input")
    with acting(args) as stella:
        run = stella.workflows.start_run(
            args.template, version=args.version, release=args.release, inputs=inputs
        )
        if args.wait:
            run = stella.workflows.wait_run(run.id, args.timeout)
    show(args, {"run_id": str(run.id), "status": run.status}, lambda: [f"{run.id} {run.status}"])
    if args.wait and run.status != "succeeded":
        raise SystemExit(1)


def cmd_run_show(args: argparse.Namespace) -> None:
    with acting(args) as stella:
        run = stella.workflows.get_run(args.run_id)
    show(args, run.to_json() if args.full else _run_json(run), lambda: _run_lines(run))


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
    show(
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
    show(args, _run_json(run), lambda: _run_lines(run))
    if run.status != "succeeded":
        raise SystemExit(1)


def cmd_run_cancel(args: argparse.Namespace) -> None:
    with acting(args) as stella:
        run = stella.workflows.cancel_run(args.run_id)
    show(args, _run_json(run), lambda: _run_lines(run))


def _decide(args: argparse.Namespace, decision: str) -> None:
    with acting(args) as stella:
        service = stella.workflows
        decide = service.approve if decision == "approve" else service.reject
        run = decide(args.run_id, args.step, args.comment)
    show(args, _run_json(run), lambda: _run_lines(run))


def cmd_run_approve(args: argparse.Namespace) -> None:
    _decide(args, "approve")


def cmd_run_reject(args: argparse.Namespace) -> None:
    _decide(args, "reject")


def cmd_run_retry(args: argparse.Namespace) -> None:
    with acting(args) as stella:
        run = stella.workflows.retry_step(args.run_id, args.step)
    show(args, _run_json(run), lambda: _run_lines(run))


def cmd_run_events(args: argparse.Namespace) -> None:
    with acting(args) as stella:
        events = stella.workflows.run_events(args.run_id, args.after)
    show(
        args,
        [e.to_json() for e in events],
        lambda: [
            f"{e.seq:5} {e.at:%H:%M:%S.%f} {e.node_id or '-':20} {e.kind:20} "
            f"{json.dumps(e.details) if e.details else ''}"
            for e in events
        ],
    )


def group_workflow(groups: Any, leaf: Leaf, help_: str) -> None:
    wf = groups.add_parser("workflow", help=help_).add_subparsers(dest="cmd", required=True)
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
    p = leaf(wf, "rename", cmd_workflow_rename, "give a workflow another name")
    p.add_argument("name")
    p.add_argument("new_name", metavar="NEW_NAME")
    p = leaf(
        wf, "delete", cmd_workflow_delete, "take a workflow out of use (its versions are kept)"
    )
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


def group_run(groups: Any, leaf: Leaf, help_: str) -> None:
    run = groups.add_parser("run", help=help_).add_subparsers(dest="cmd", required=True)
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


GROUPS = {"workflow": group_workflow, "run": group_run}
