"""Drift for real: a deployed release, then hands on the targets.

The estate of test_deploy_e2e (PostgreSQL, the CNCF registry, rootful podman + podman-compose,
an agent process linked over mutual TLS, OpenSSH's sshd): after a deployment both targets are in
sync; a container recreated by hand from another image under the release's tag shows as drifted
in `stella drift check`, seen by the agent in a report it signed; a deleted and an edited sticker
each show as unknown with the reason; remediation, once an admin opts the environment in, puts
the release's digest back (podman says so) and leaves its evidence; each change of status is one
packet; a modified agent's forged or unsigned report is refused; and nobody's own login can
write findings or flip the remediation switch.
"""

from __future__ import annotations

import base64
import hashlib
import json
import subprocess
import sys
import threading
from pathlib import Path
from typing import Any
from uuid import UUID

import psycopg
import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric import ec
from sqlalchemy import text

from stella_core.agents.daemon import Agent
from stella_core.deploy.model import TaskType
from stella_core.deploy.runner import run_task
from stella_core.deploy.service import DeployService
from stella_core.drift.service import DriftService
from stella_core.evidence.packets import canonical_json
from stella_core.evidence.predicates import DEPLOYMENT_V1, DRIFT_V1
from stella_core.promotions.model import PromotionStatus
from stella_core.releases.model import ComponentPin
from stella_core.tenancy.model import ProductRole
from tests.integration.test_cli import stella as stella_cli
from tests.integration.test_deploy_e2e import Estate, estate, running_digests
from tests.integration.test_promotions import role_conn
from tests.support.containers import Podman, podman_fixture
from tests.support.workflow_helpers import wait_until

__all__ = ["estate", "podman_fixture"]


def deploy_release(e: Estate) -> dict[str, str]:
    release = e.alice.releases.create_release(
        "drift-1", [ComponentPin(component=c, tag="1.0", digest=None) for c in e.images]
    )
    promotion = e.alice.promotions.request("drift-1", "dev", "ship it")
    assert promotion.run_id is not None
    e.alice.workflows.wait_run(promotion.run_id, timeout=240)
    assert e.alice.promotions.get(promotion.id).status is PromotionStatus.DEPLOYED
    return {c.name: c.digest for c in release.components}


def drift_check(e: Estate, *extra: str) -> dict[str, dict[str, Any]]:
    shown = stella_cli(e.world.env(), "drift", "check", "--env", "dev", *extra, "--output", "json")
    assert shown.returncode == 0, shown.stderr
    found = json.loads(shown.stdout)
    return {t["target"]: t for t in found}


def drift_packets(e: Estate) -> list[dict[str, Any]]:
    found = [p for p in e.admin.evidence.find() if p.predicate_type == DRIFT_V1]
    return [e.admin.evidence.get(p.id) for p in found]


def replace_by_hand(podman: Podman, project: str, component: str, image: str, tag: str) -> None:
    """What someone with a shell on the host does: the image under the release's tag is
    another one now, and the container is recreated from it under the same name and labels."""
    listed = podman.run(
        "ps",
        "--filter",
        f"label=io.podman.compose.project={project}",
        "--filter",
        f"label=com.docker.compose.service={component}",
        "--format",
        "json",
    )
    (container,) = json.loads(listed.stdout)
    inspected = json.loads(podman.run("inspect", container["Id"]).stdout)[0]
    name = inspected["Name"].lstrip("/")
    labels = inspected["Config"]["Labels"]
    podman.run("tag", image, tag)
    podman.run("rm", "-f", container["Id"])
    argv = ["run", "-d", "--name", name, "--network", "none"]
    for key, value in sorted(labels.items()):
        argv += ["--label", f"{key}={value}"]
    podman.run(*argv, tag)


def test_drift_is_found_explained_and_put_back(estate: Estate) -> None:
    e = estate
    expected = deploy_release(e)
    web, worker = e.images["web"], e.images["worker"]

    # Right after a deployment, both targets run what the database says.
    found = drift_check(e)
    assert {t: (f["status"], f["differences"]) for t, f in found.items()} == {
        "edge": ("in_sync", []),
        "box": ("in_sync", []),
    }
    # The agent signed what it saw; over SSH the orchestrator saw it itself.
    assert found["edge"]["observer"] == "agent edge-1"
    assert found["box"]["observer"] == "orchestrator"
    with e.admin.db.transaction() as conn:
        report = DriftService.report_in(conn, found["edge"]["report_digest"])
    assert report is not None
    assert report["observer_kind"] == "agent"
    assert report["certificate"].startswith("-----BEGIN CERTIFICATE-----")
    assert {c["component"]: c["digest"] for c in report["report"]["containers"]} == expected
    # Kept by the digest of what the agent sent, and its signature holds with its certificate.
    envelope = {k: report[k] for k in ("report", "signature", "certificate")}
    assert report["digest"] == "sha256:" + hashlib.sha256(canonical_json(envelope)).hexdigest()
    public = x509.load_pem_x509_certificate(report["certificate"].encode()).public_key()
    public.verify(  # type: ignore[union-attr,call-arg]
        base64.b64decode(report["signature"]),
        canonical_json(report["report"]),
        ec.ECDSA(hashes.SHA256()),  # type: ignore[call-arg]
    )
    assert len(drift_packets(e)) == 2  # first look at each target: one packet each

    # Nothing changed: nothing new to say.
    assert {f["status"] for f in drift_check(e).values()} == {"in_sync"}
    assert len(drift_packets(e)) == 2

    # By hand on the agent's target: web recreated from the worker image under web's tag.
    replace_by_hand(e.podman, "stella-dev-edge", "web", worker.pinned, f"{web.repository}:1.0")
    assert running_digests(e.podman, "stella-dev-edge")["web"] == worker.digest
    found = drift_check(e)
    assert found["box"]["status"] == "in_sync"
    assert found["edge"]["status"] == "drifted"
    assert found["edge"]["differences"] == [
        {
            "component": "web",
            "kind": "changed",
            "expected": web.digest,
            "observed": worker.digest,
            "tag": "1.0",
        }
    ]
    packets = drift_packets(e)
    assert len(packets) == 3
    changed = next(p for p in packets if p["statement"]["predicate"]["status"] == "drifted")
    assert changed["verified"] is True
    predicate = changed["statement"]["predicate"]
    assert predicate["previousStatus"] == "in_sync"
    assert predicate["report"]["observerKind"] == "agent"
    assert predicate["report"]["digest"]["sha256"] == found["edge"]["report_digest"][7:]

    # Stickers: deleted, then edited (one byte), each says why nothing can be told.
    sticker = e.dirs["box"] / "stella.version.json"
    original = sticker.read_bytes()
    sticker.unlink()
    found = drift_check(e)
    assert found["box"]["status"] == "unknown"
    assert found["box"]["reason"].startswith("sticker missing")
    data = bytearray(original)
    data[data.index(b"drift-1")] ^= 0x01
    sticker.write_bytes(bytes(data))
    found = drift_check(e)
    assert found["box"]["status"] == "unknown"
    assert found["box"]["reason"].startswith("sticker badly signed")
    assert len(drift_packets(e)) == 4  # in_sync -> unknown once; unknown -> unknown: none
    sticker.write_bytes(original)

    # Remediation is an admin's switch; a release manager cannot throw it.
    env = e.world.env()
    refused = stella_cli(env, "--profile", "alice", "env", "set", "dev", "--remediate-drift", "on")
    assert refused.returncode != 0
    turned = stella_cli(env, "env", "set", "dev", "--remediate-drift", "on", "--output", "json")
    assert turned.returncode == 0, turned.stderr
    assert json.loads(turned.stdout)["remediate_drift"] is True

    found = drift_check(e)
    assert found["edge"]["status"] == "drifted"  # what was found, and then put back
    assert found["edge"]["remediation"] is not None
    assert found["box"]["status"] == "in_sync"
    assert running_digests(e.podman, "stella-dev-edge") == expected
    with e.admin.db.transaction() as conn:
        deployment = DeployService.deployment_in(conn, UUID(found["edge"]["remediation"]))
    assert deployment is not None
    assert (deployment.kind, deployment.status, deployment.run_id) == (
        "remediation",
        "succeeded",
        None,
    )
    deployments = [p for p in e.admin.evidence.find() if p.predicate_type == DEPLOYMENT_V1]
    assert deployment.packet_id in {p.id for p in deployments}
    remedied = [
        p["statement"]["predicate"]
        for p in drift_packets(e)
        if "remediation" in p["statement"]["predicate"]
    ]
    assert len(remedied) == 1
    assert remedied[0]["remediation"] == {
        "deploymentId": str(deployment.id),
        "status": "succeeded",
        "packetId": str(deployment.packet_id),
    }
    # The next look finds it back in sync.
    found = drift_check(e)
    assert {t: f["status"] for t, f in found.items()} == {"edge": "in_sync", "box": "in_sync"}

    # stella serve checks on its own schedule.
    with e.admin.db.transaction() as conn:
        count = "SELECT count(*) FROM drift.findings"
        checked = conn.execute(text(count)).scalar_one()
    serve = ["serve", "--workers", "1", "--drift-every", "1"]
    serving = subprocess.Popen(
        [sys.executable, "-m", "stella_core.cli.main", *serve],
        env=env,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    try:

        def scheduled() -> bool:
            with e.admin.db.transaction() as conn:
                return conn.execute(text(count)).scalar_one() >= checked + 2

        wait_until(scheduled, timeout=90, what="a scheduled drift check")
    finally:
        serving.terminate()
        serving.wait(60)

    # What people read: each target's newest finding.
    latest = {d.target: d.status.value for d in e.alice.drift_findings("dev")}
    assert latest == {"edge": "in_sync", "box": "in_sync"}

    # Raw SQL as a release manager, an approver, an auditor: no finding is theirs to write,
    # and the remediation switch is not theirs to flip.
    e.admin.add_person("carol", ProductRole.APPROVER)
    e.admin.add_person("dave", ProductRole.AUDITOR)
    for name in ("alice", "carol", "dave"):
        person = role_conn(e.world, name)
        assert person.execute("SELECT count(*) FROM drift.findings").fetchone()[0] > 0
        with pytest.raises(psycopg.Error):
            person.execute(
                "INSERT INTO drift.findings (tenant_id, check_id, target_id, target,"
                " environment, status) SELECT tenant_id, check_id, target_id, target,"
                " environment, 'in_sync' FROM drift.findings LIMIT 1"
            )
        person.rollback()
        try:  # refused outright, or hidden from them: either way nothing changes
            person.execute("UPDATE env.environments SET remediate_drift = false")
            person.commit()
        except psycopg.Error:
            person.rollback()
        with pytest.raises(psycopg.Error):
            person.execute("DELETE FROM drift.findings")
        person.rollback()
        person.close()
    assert e.admin.environments.remediate_drift("dev") is True


ELSEWHERE = "sha256:" + "0" * 64


class ForgingAgent(Agent):
    """A modified agent: it sees something else run, then says the release runs (its report
    is not what it signed), or sends no signature at all."""

    forge = "tamper"
    release: dict[str, str] = {}

    def _signed_report(self, spec: Any, containers: Any) -> dict[str, Any]:
        signed = super()._signed_report(spec, containers)
        if self.forge == "unsigned":
            return {}
        for c in signed["report"]["containers"]:
            c["digest"] = self.release[c["component"]]
        return signed


def test_a_forged_or_unsigned_inspection_report_is_refused(estate: Estate, tmp_path: Path) -> None:
    e = estate
    ForgingAgent.release = deploy_release(e)
    # The real agent stops; the same enrolled agent (its key, its certificate) runs modified.
    e.agent.terminate()
    e.agent.wait(10)

    def runner(task_type: Any, payload: Any, host: Any, **kw: Any) -> dict[str, Any]:
        if TaskType(task_type) is TaskType.INSPECT:  # what it really sees
            return {
                "containers": [
                    {"component": c, "container": c, "digest": ELSEWHERE, "state": "running"}
                    for c in ForgingAgent.release
                ]
            }
        return run_task(task_type, payload, host, **kw)

    agent = ForgingAgent(
        tmp_path / "agent", runner=runner, server=f"127.0.0.1:{e.gateway.enroll_port}"
    )
    stop = threading.Event()
    thread = threading.Thread(target=agent.run, args=(stop,), daemon=True)
    thread.start()
    try:
        wait_until(agent.connected.is_set, timeout=30)
        before = len(drift_packets(e))
        found = drift_check(e)
        assert found["edge"]["status"] == "unknown"
        assert "report is refused" in found["edge"]["reason"]
        assert "signature does not hold" in found["edge"]["reason"]
        assert found["edge"]["report_digest"] is None
        ForgingAgent.forge = "unsigned"
        found = drift_check(e)
        assert found["edge"]["status"] == "unknown"
        assert "unsigned" in found["edge"]["reason"]
        # Nothing it sent is kept as a report, and the refusal is a status, once.
        with e.admin.db.transaction() as conn:
            kept = conn.execute(
                text("SELECT count(*) FROM drift.reports WHERE target = 'edge'")
            ).scalar_one()
        assert kept == 0
        assert len(drift_packets(e)) == before + 2  # first look: edge unknown, box in_sync
    finally:
        ForgingAgent.forge = "tamper"
        stop.set()
        agent.close()
        thread.join(10)
