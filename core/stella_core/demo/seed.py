"""`stella demo seed`: the people of DESIGN.md §4, three environments and a few releases, in a
tenant the database then calls a demo.

Images come from an OCI image layout the project builds itself (deterministic tiny images), so
seeding needs no network and no registry. Where this machine has a static busybox the images
carry it and a command, so they really run. Where this machine runs the orchestrator (its
local agent is dev's target `local`), the layout is recorded as a registry on loopback that
the desk serves beside its local agent (`releases.layout_server`), so the local agent's podman
or docker pulls the demo's images by digest, and once the demo's history is played dev
promotes with `promote-web`, which deploys. Running it twice changes nothing.
"""

from __future__ import annotations

import json
import platform
from importlib import resources
from pathlib import Path
from typing import TYPE_CHECKING, Any

from stella_core.demo.images import HEALTHCHECK, NO_PROGRAM, busybox_layer, runnable_config
from stella_core.errors import AlreadyExistsError
from stella_core.releases.model import ComponentPin
from stella_core.tenancy.model import ProductRole

if TYPE_CHECKING:
    from stella_core.bootstrap import Stella

PEOPLE = [
    ("alice", ProductRole.RELEASE_MANAGER),
    ("bob", ProductRole.APPROVER),
    ("carol", ProductRole.APPROVER),
    ("dave", ProductRole.AUDITOR),
]
ENVIRONMENTS = [("dev", 0, 0, False), ("stage", 1, 1, False), ("prod", 2, 2, True)]
IMAGES = {
    # web 1.3.0 is in the registry but in no release: it never passes its health check, so a
    # release made with it shows a rolling deployment stopping and rolling back.
    "shop/web": ["1.0.0", "1.1.0", "1.2.0", "1.3.0"],
    "shop/api": ["2.3.0", "2.4.0"],
    "shop/worker": ["0.9.0", "0.9.1"],
}
NEVER_READY = {("shop/web", "1.3.0")}
COMPONENTS = {"web": "shop/web", "api": "shop/api", "worker": "shop/worker"}
RELEASES = [
    ("shop-2026.11.1", {"web": "1.0.0", "api": "2.3.0", "worker": "0.9.0"}),
    ("shop-2026.11.2", {"web": "1.1.0", "api": "2.4.0", "worker": "0.9.0"}),
    ("shop-2026.11.3", {"web": "1.2.0", "api": "2.4.0", "worker": "0.9.1"}),
]
# What already went through the pipeline: every release reached dev and stage, prod runs the
# first. So any release can be requested into prod, and the pipeline has something to show.
# (release, environment, approvers) in order.
HISTORY = [
    ("shop-2026.11.1", "dev", ()),
    ("shop-2026.11.1", "stage", ("bob",)),
    ("shop-2026.11.1", "prod", ("bob", "carol")),
    ("shop-2026.11.2", "dev", ()),
    ("shop-2026.11.2", "stage", ("carol",)),
    ("shop-2026.11.3", "dev", ()),
    ("shop-2026.11.3", "stage", ("bob",)),
]
DEMO_REGISTRY = "demo"
TEMPLATES = ["promote-web.json", "deliver.json"]
# The workflow every demo environment promotes with: it runs on any machine.
DEMO_WORKFLOW = "deliver"
# dev's targets: this machine, through the agent the desk runs beside its orchestrator, three
# times over (three compose projects), so dev's rolling deployment has batches to show.
LOCAL_TARGET = "local"
LOCAL_TARGETS = (LOCAL_TARGET, "local-2", "local-3")
LOCAL_ENVIRONMENT = "dev"
# The workflow dev switches to once the history is played there: it deploys to `local`.
DEPLOY_WORKFLOW = "promote-web"
LAYOUT_DIR = "demo-oci-layout"


def _architecture() -> str:
    machine = platform.machine()
    return {"x86_64": "amd64", "aarch64": "arm64"}.get(machine, machine)


def build_layout(stella: Stella) -> str:
    """The demo's images in an OCI layout below STELLA_HOME; runnable ones where this machine
    has a static busybox (`demo_images_runnable` says which)."""
    from stella_core.releases.layout import OciLayoutWriter

    root = stella.home / LAYOUT_DIR
    writer = OciLayoutWriter(root)
    base = busybox_layer()
    for repository, tags in IMAGES.items():
        for tag in tags:
            app = repository.split("/")[-1]
            files = {
                f"srv/{app}/VERSION": f"{tag}\n".encode(),
                f"srv/{app}/app.json": json.dumps(
                    {"name": app, "version": tag}, sort_keys=True
                ).encode(),
            }
            if base is None:
                writer.write_image(repository, tag, files=files)
            else:
                writer.write_image(
                    repository,
                    tag,
                    files=files,
                    config=runnable_config(app, tag, ready=(repository, tag) not in NEVER_READY),
                    architecture=_architecture(),
                    base_layers=[base],
                )
    return str(root)


def demo_images_runnable() -> bool:
    return busybox_layer() is not None


def _component_service() -> dict[str, Any]:
    """How a demo component runs: no network (nothing leaves the container); where the images
    hold no program, a deploy says so instead of failing inside the runtime."""
    service: dict[str, Any] = {"network_mode": "none"}
    if not demo_images_runnable():
        service["x-stella-cannot-run"] = NO_PROGRAM
        return service
    # Healthy once the file its command writes is there: asked every second, for 10 s.
    service["healthcheck"] = dict(HEALTHCHECK)
    service["x-stella-health"] = {"interval": 1, "timeout": 10}
    return service


def _demo_registry_url(stella: Stella, layout: str) -> str:
    """Where the demo registry is recorded: on loopback where this machine runs the
    orchestrator (its local agent pulls from there; the desk serves the layout on that port,
    chosen free now and kept in STELLA_HOME), else the layout directory itself."""
    from stella_core.releases.layout_server import free_port, save_served_layout, served_layout

    if stella.orchestrator is None:
        return layout
    recorded = served_layout(stella.home)
    port = recorded[1] if recorded is not None else free_port()
    save_served_layout(stella.home, Path(layout), port)
    return f"http://127.0.0.1:{port}"


def seed(stella: Stella, *, history: bool = False) -> dict[str, Any]:
    """With `history`, the demo's past promotions are played through the real path (requests,
    signed approvals, workflow runs driven here), once."""
    summary: dict[str, Any] = {
        "people": [],
        "environments": [],
        "templates": [],
        "releases": [],
        "promotions": [],
        "targets": [],
    }
    # Said first, through the administrative connection: the desk lets anyone act as the demo
    # people (whose keys have no passphrase of their own) only where the database says so.
    summary["demo_declared"] = stella.tenancy.mark_demo()
    existing = {u.name for u in stella.tenancy.list_users()}
    for name, role in PEOPLE:
        if name in existing:
            continue
        stella.add_person(name, role)
        summary["people"].append(name)

    layout = build_layout(stella)
    # Releases are made by the release manager, so the demo shows who did what.
    alice = stella.as_person("alice")
    try:
        if DEMO_REGISTRY not in {r.name for r in alice.releases.list_registries()}:
            url = _demo_registry_url(stella, layout)
            alice.releases.add_registry(DEMO_REGISTRY, url, insecure=url.startswith("http:"))
        known_components = {c.name for c in alice.releases.list_components()}
        for comp, repo in COMPONENTS.items():
            if comp not in known_components:
                alice.releases.add_component(
                    comp, f"{DEMO_REGISTRY}/{repo}", service=_component_service()
                )
        known_templates = {t.name for t in alice.workflows.list_templates()}
        for template_file in TEMPLATES:
            document = json.loads(
                resources.files("stella_core.demo").joinpath("templates", template_file).read_text()
            )
            if document["name"] not in known_templates:
                alice.workflows.import_template(document)
                summary["templates"].append(document["name"])
        known_envs = {e.name for e in stella.environments.list()}
        for name, order, approvals, sod in ENVIRONMENTS:
            if name not in known_envs:
                stella.environments.add(
                    name,
                    order=order,
                    required_approvals=approvals,
                    separation_of_duties=sod,
                    workflow=DEMO_WORKFLOW,
                )
                summary["environments"].append(name)
        summary["targets"] = _local_target(stella)
        known_releases = {r.name for r in alice.releases.list_releases()}
        # Resolved from the layout where it lies (`ReleaseService` knows the layout this
        # machine serves), the bytes the layout server gives the local agent's podman.
        for rel_name, tags in RELEASES:
            if rel_name in known_releases:
                continue
            pins = [ComponentPin(component=c, tag=t) for c, t in tags.items()]
            try:
                alice.releases.create_release(rel_name, pins)
            except AlreadyExistsError:
                continue
            summary["releases"].append(rel_name)
        if history and not alice.promotions.find(limit=1):
            summary["promotions"] = _play_history(stella, alice)
        summary["workflows"] = _deploy_in_dev(stella) if history else []
    finally:
        alice.close(keep_backend=True)
    summary["layout"] = layout
    return summary


def _local_target(stella: Stella) -> list[str]:
    """This machine as dev's target, through its own agent (enrolled here, once; the desk runs
    it on the embedded default), so a promotion with `promote-web` deploys here where podman or
    docker is, and the target says which runtime is missing where neither is. Only where this
    machine holds the orchestrator's login: the local agent is enrolled with it directly."""
    from stella_core.agents.local import (
        LOCAL_AGENT,
        enroll_local,
        local_agent_dir,
        local_runtime,
    )

    if stella.orchestrator is None:
        return []
    enroll_local(stella)
    known = {t.name for t in stella.environments.list_targets()}
    added = []
    for name in LOCAL_TARGETS:
        if name in known:
            continue
        folder = LOCAL_ENVIRONMENT if name == LOCAL_TARGET else f"{LOCAL_ENVIRONMENT}-{name}"
        stella.environments.add_target(
            name,
            environment=LOCAL_ENVIRONMENT,
            type="agent",
            agent=LOCAL_AGENT,
            runtime=local_runtime(),
            directory=str(local_agent_dir(stella.home) / "deploy" / folder),
        )
        added.append(name)
    return added


def _deploy_in_dev(stella: Stella) -> list[str]:
    """Once dev's past has been played with `deliver`, dev deploys: it promotes with
    `promote-web`, whose `deploy` step runs the release on dev's target `local` (this machine's
    agent). Only where that target exists and can run the demo's images (a container runtime
    and runnable images here): elsewhere a promotion to dev would only fail, so dev keeps
    `deliver`, as stage and prod do. Said as "ENV: WORKFLOW" for each environment switched
    (none when seeded before)."""
    from stella_core.agents.local import local_runtime_ready

    if stella.orchestrator is None or not demo_images_runnable() or not local_runtime_ready():
        return []
    targets = {t.name: t for t in stella.environments.list_targets(LOCAL_ENVIRONMENT)}
    if LOCAL_TARGET not in targets:
        return []
    if stella.environments.get(LOCAL_ENVIRONMENT).workflow != DEMO_WORKFLOW:
        return []
    stella.environments.set(
        LOCAL_ENVIRONMENT,
        workflow=DEPLOY_WORKFLOW,
        reason="demo: dev deploys to this machine through its local agent",
    )
    return [f"{LOCAL_ENVIRONMENT}: {DEPLOY_WORKFLOW}"]


def _play_history(stella: Stella, alice: Stella) -> list[str]:
    approvers = {name: stella.as_person(name) for name in ("bob", "carol")}
    done = []
    try:
        for release, environment, people in HISTORY:
            promotion = alice.promotions.request(release, environment, "demo history")
            for name in people:
                promotion = approvers[name].promotions.approve(promotion.id, "demo history")
            if promotion.run_id is not None:
                alice.workflows.wait_run(promotion.run_id, timeout=120)
            done.append(f"{release} → {environment}")
    finally:
        for person in approvers.values():
            person.close(keep_backend=True)
    return done
