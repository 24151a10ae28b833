"""Demo runs for `--screenshot` (and a first look): the editor's sample workflow, run for real.

The sample (`stella_core/demo/templates/promote-web.json`) deploys to the environment's targets
and may check a health URL, neither of which a first look should depend on, so the demo imports a
variant of it under a name of its own (`promote-web-rehearsal`) whose steps run a few lines of
Python instead (printing what they would do, and failing for one release on purpose), then runs
it three times with a worker of its own, restricted to each run: one run succeeds, one fails at
"Deploy" and reports it (the rollback branch), one waits for its approval. Nothing here runs
unless the person may start runs, the local executor is on (the embedded default) and scripts
can run here (a sandbox, or an admin's leave to run without one).
"""

from __future__ import annotations

import copy
import time
from collections.abc import Callable
from typing import TYPE_CHECKING, Any
from uuid import UUID

from stella_core.errors import StellaError
from stella_core.tenancy.model import ProductRole
from stella_desk.workflows.library import sample_document

if TYPE_CHECKING:
    from stella_core.bootstrap import Stella
    from stella_core.workflows.model import RunInfo

BROKEN_RELEASE = "shop-2026.11.2"  # the demo's bad release: its web deploy never gets ready
APPROVER = "alice"  # the seeded release manager decides the demo approvals

# Run by `python -c`: pretend to do the step's work, briefly, and say what was done.
STEP_SCRIPT = f"""\
import os, sys, time
action, target = sys.argv[1], sys.argv[2]
release = os.environ.get("RELEASE", "")
time.sleep(0.25)
if action == "deploy" and release == {BROKEN_RELEASE!r}:
    print("web: readiness probe failed after 3 checks (HTTP 503)", file=sys.stderr)
    sys.exit(1)
if action == "check":
    print("GET https://web.shop.example/healthz -> 200")
else:
    print(f"{{action}} {{target}}: done" + (f" ({{release}})" if release else ""))
"""


REHEARSAL = "promote-web-rehearsal"


def demo_template() -> dict[str, Any]:
    """The sample workflow with runnable commands (same graph, step names and layout), under a
    name of its own: imported as `promote-web` it would become that workflow's newest version,
    and an environment deploying with it would then only pretend to deploy."""
    doc = copy.deepcopy(sample_document())
    doc["name"] = REHEARSAL
    doc["description"] = (
        "Promote the web shop (demo variant: each step runs a short Python script that says "
        "what it would do)."
    )
    # The system's Python, found in the script's sandbox (this process's may be a virtual
    # environment's anywhere, e.g. in a home directory the sandbox does not show).
    python = "python3"
    release_env = {"RELEASE": "${{ release.name }}"}
    for node in doc["nodes"]:
        if node["type"] == "deploy":
            # No agent needed to look: the deploy says what it would do.
            node["type"] = "script"
            node["inputs"] = {
                "command": [python, "-c", STEP_SCRIPT, "deploy", "web+worker"],
                "env": dict(release_env),
            }
            node["retry"] = {"max_attempts": 1, "backoff_initial_ms": 300, "backoff_factor": 1.5}
        elif node["type"] == "http-check":
            # No network here: the health check becomes a script that reports the answer.
            node["type"] = "script"
            node["condition"] = None
            node["inputs"] = {
                "command": [python, "-c", STEP_SCRIPT, "check", "web"],
                "env": dict(release_env),
            }
            node["retry"] = {"max_attempts": 2, "backoff_initial_ms": 300, "backoff_factor": 1.5}
        elif node["id"] == "announce":
            node["inputs"] = {"message": "Released ${{ release.name }}: health check passed"}
    return doc


def _may_run(stella: Stella) -> bool:
    identity = stella.tenancy.whoami()
    if identity.role not in (ProductRole.RELEASE_MANAGER, ProductRole.ADMIN):
        return False
    settings = stella.workflows.settings()
    # Scripts run here only in a sandbox, or where an admin allowed them to run without one.
    return bool(settings["local_executor"]) and bool(
        settings["sandbox"] or settings["allow_unsandboxed"]
    )


def _drive(stella: Stella, run_id: UUID, done: Callable[[RunInfo], bool], timeout: float) -> None:
    """Run the run's steps here until `done(run)` (a worker restricted to this run)."""
    service = stella.workflows
    worker = service.worker(run_id=run_id, shutdown_grace_seconds=1.0)
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        run = service.get_run(run_id)
        if done(run):
            return
        if not worker.run_once():
            time.sleep(0.05)


def _approve(stella: Stella, run_id: UUID, step: str, comment: str) -> bool:
    """The seeded release manager approves (else the acting person, if an approver)."""
    try:
        person = stella.as_person(APPROVER)
    except StellaError:  # no such profile on this machine
        person = None
    try:
        (person or stella).workflows.approve(run_id, step, comment)
    except StellaError:
        return False  # nobody here may decide: the run stays waiting
    finally:
        if person is not None:
            person.close(keep_backend=True)
    return True


def _waiting_on(step: str) -> Callable[[RunInfo], bool]:
    def check(run: RunInfo) -> bool:
        return run.terminal or any(s.id == step and s.status == "waiting" for s in run.steps)

    return check


def prepare_demo_runs(stella: Stella, timeout: float = 60.0) -> list[UUID]:
    """Worker thread: three runs of the sample on the demo releases. Only on the demo's own
    database (the database says it is a demo; seeded releases, no template but the seeded ones
    and no run but the seeded history's) and where steps may run here: a person's real database
    is never written to."""
    service = stella.workflows
    from stella_core.demo.seed import DEMO_WORKFLOW, DEPLOY_WORKFLOW

    seeded = {REHEARSAL, DEPLOY_WORKFLOW, DEMO_WORKFLOW}
    foreign = [t for t in service.list_templates() if t.name not in seeded]
    # The seed's own history runs its workflow: those runs are part of the demo too.
    ran = {r.template for r in service.list_runs()}
    if ran - {DEMO_WORKFLOW} or foreign or not _may_run(stella) or not stella.tenancy.is_demo():
        return []
    releases = sorted(stella.releases.list_releases(), key=lambda r: r.created_at)
    names = [r.name for r in releases]
    if BROKEN_RELEASE not in names:
        return []  # not the demo data
    name = service.import_template(demo_template()).name
    plan = [
        (names[0], "stage", True),
        (BROKEN_RELEASE, "prod", True),
        (names[-1], "prod", False),
    ]
    started: list[UUID] = []
    for release, environment, approve in plan:
        run = service.start_run(name, release=release, inputs={"environment": environment})
        started.append(run.id)
        _drive(stella, run.id, _waiting_on("approve"), timeout)
        if not approve:
            continue
        if not _approve(stella, run.id, "approve", f"Go for {environment}"):
            continue
        _drive(stella, run.id, lambda r: r.terminal, timeout)
    return started
