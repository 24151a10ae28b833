"""The mutual-TLS link: who may open it, and what the database lets people do to agents.

Every refusal is checked against the real gateway over loopback: no certificate, a certificate
of another CA, an expired one, a revoked agent (its live link cut), a copy of an agent presenting
an older generation after a renewal (locked out, recorded). Keepalive finds a dead link in under
30 s. Raw SQL as a release manager or an approver cannot make tokens, enroll, move a generation or
un-revoke.
"""

from __future__ import annotations

import shutil
import time
from datetime import UTC, datetime, timedelta
from pathlib import Path
from uuid import uuid4

import grpc
import psycopg
import pytest
from cryptography.hazmat.primitives.asymmetric import ec
from sqlalchemy import text

from stella_core.agents._proto import agent_pb2 as pb
from stella_core.agents._proto import agent_pb2_grpc as rpc
from stella_core.agents.authority import GATEWAY_NAME, Authority, pem_chain, private_pem
from stella_core.agents.daemon import CHANNEL_OPTIONS, AgentState
from stella_core.agents.gateway import SERVER_OPTIONS
from stella_core.tenancy.model import ProductRole
from tests.integration.test_agent_enrollment import Orchestra, RunningAgent, Shifted, orchestra
from tests.integration.test_promotions import role_conn
from tests.support.workflow_helpers import wait_until

__all__ = ["orchestra"]


def connect(orchestra: Orchestra, ca_pem: bytes, key_pem=None, cert_pem=None) -> grpc.RpcError:
    """Open a link with these credentials; the error it ends with."""
    creds = grpc.ssl_channel_credentials(ca_pem, key_pem, cert_pem)
    target = f"127.0.0.1:{orchestra.gateway.link_port}"
    with grpc.secure_channel(
        target, creds, options=[("grpc.ssl_target_name_override", GATEWAY_NAME)]
    ) as channel:
        call = rpc.AgentLinkStub(channel).Connect(
            iter([pb.AgentMessage(hello=pb.Hello(version="t"))]), timeout=10
        )
        with pytest.raises(grpc.RpcError) as caught:
            for _ in call:
                pass
    return caught.value


def ca_pem(orchestra: Orchestra) -> bytes:
    return orchestra.gateway.enrollment.authority().cert_pem


# ------------------------------------------------------------------------------ refusals
def test_a_link_without_a_client_certificate_is_refused(orchestra: Orchestra) -> None:
    error = connect(orchestra, ca_pem(orchestra))
    assert error.code() == grpc.StatusCode.UNAVAILABLE  # the TLS handshake fails
    assert orchestra.gateway.connected_agents() == []


def test_a_certificate_of_another_ca_is_refused(orchestra: Orchestra, tmp_path: Path) -> None:
    state = orchestra.enroll("edge-a", tmp_path / "s")
    # Same agent id, same key, a CA the orchestrator never made.
    other = Authority.create("other", datetime.now(UTC))
    key = ec.generate_private_key(ec.SECP256R1())
    forged = other.issue_agent(
        key.public_key(), state.tenant_id, state.agent_id, datetime.now(UTC), timedelta(hours=1)
    )
    error = connect(orchestra, ca_pem(orchestra), private_pem(key), pem_chain(forged))
    assert error.code() == grpc.StatusCode.UNAVAILABLE
    assert orchestra.gateway.connected_agents() == []


def test_an_expired_certificate_is_refused(orchestra: Orchestra, tmp_path: Path) -> None:
    state = orchestra.enroll("edge-b", tmp_path / "s")
    authority = orchestra.gateway.enrollment.authority()
    key = ec.generate_private_key(ec.SECP256R1())
    expired = authority.issue_agent(
        key.public_key(),
        state.tenant_id,
        state.agent_id,
        datetime.now(UTC) - timedelta(days=2),
        timedelta(hours=24),
    )
    error = connect(orchestra, ca_pem(orchestra), private_pem(key), pem_chain(expired))
    assert error.code() == grpc.StatusCode.UNAVAILABLE
    assert orchestra.gateway.connected_agents() == []


def test_a_certificate_the_ca_issued_but_never_recorded_is_refused(
    orchestra: Orchestra, tmp_path: Path
) -> None:
    """Identity comes from the certificate, and the certificate must be one the orchestrator
    issued to that agent (unknown agent)."""
    state = orchestra.enroll("edge-c", tmp_path / "s")
    authority = orchestra.gateway.enrollment.authority()
    key = ec.generate_private_key(ec.SECP256R1())
    for agent_id in (uuid4(), state.agent_id):
        stray = authority.issue_agent(
            key.public_key(), state.tenant_id, agent_id, datetime.now(UTC), timedelta(hours=1)
        )
        error = connect(orchestra, ca_pem(orchestra), private_pem(key), pem_chain(stray))
        assert error.code() == grpc.StatusCode.PERMISSION_DENIED
        assert "not enrolled" in error.details()


def test_revoking_cuts_the_live_link_and_the_next_dial_is_refused(
    orchestra: Orchestra, tmp_path: Path
) -> None:
    state = orchestra.enroll("edge-d", tmp_path / "s")
    running = RunningAgent(tmp_path / "s")
    try:
        running.wait_linked()
        assert orchestra.gateway.connected_agents() == [state.agent_id]
        orchestra.agents().revoke("edge-d", "lost laptop")
        started = time.monotonic()
        wait_until(lambda: not orchestra.gateway.connected_agents(), timeout=5)
        assert time.monotonic() - started < 2
        wait_until(lambda: running.agent.refusal, timeout=10, what="a refused dial")
        assert "revoked" in running.agent.refusal
    finally:
        running.close()
    (agent,) = orchestra.agents().list()
    assert agent.revoke_reason == "lost laptop"
    assert agent.revoked_by == orchestra.admin.tenancy.whoami().user


def test_a_copy_presenting_an_older_generation_after_a_renewal_is_locked_out(
    orchestra: Orchestra, tmp_path: Path
) -> None:
    # A first certificate already past two thirds of its life (valid from a minute back, for
    # 30 s more): the agent renews it at once over its link, then moves to the new one.
    orchestra.gateway.enrollment.cert_lifetime = timedelta(seconds=30)
    orchestra.enroll("edge-e", tmp_path / "s")
    orchestra.gateway.enrollment.cert_lifetime = timedelta(hours=24)
    shutil.copytree(tmp_path / "s", tmp_path / "copy")  # someone copies the agent's files
    running = RunningAgent(tmp_path / "s")
    try:
        wait_until(lambda: AgentState.load(tmp_path / "s").generation == 2, timeout=20)
        wait_until(
            lambda: orchestra.agents().get("edge-e").generation_in_use == 2,
            timeout=20,
            what="the renewed certificate in use",
        )
    finally:
        running.close()
    copy = RunningAgent(tmp_path / "copy")
    try:
        wait_until(lambda: copy.agent.refusal, timeout=20, what="the copy refused")
    finally:
        copy.close()
    assert "locked out" in copy.agent.refusal
    agent = orchestra.agents().get("edge-e")
    assert agent.revoked_at is not None
    assert agent.revoke_reason.startswith("clone detected")
    kinds = [e["kind"] for e in orchestra.agents().events("edge-e")]
    assert kinds == ["enrolled", "renewed", "clone-detected"]
    # Locked out means the original too: it needs a new token.
    original = RunningAgent(tmp_path / "s")
    try:
        wait_until(lambda: original.agent.refusal, timeout=20)
    finally:
        original.close()
    assert "revoked" in original.agent.refusal


def test_an_agent_offline_past_expiry_recovers_with_its_bound_key(
    orchestra: Orchestra, tmp_path: Path
) -> None:
    enrollment = orchestra.gateway.enrollment
    enrollment.cert_lifetime = timedelta(seconds=2)
    state = orchestra.enroll("edge-f", tmp_path / "s")
    time.sleep(3)  # the certificate really expires: TLS itself would refuse it now
    enrollment.cert_lifetime = timedelta(hours=24)
    running = RunningAgent(tmp_path / "s")
    try:
        running.wait_linked()
    finally:
        running.close()
    assert AgentState.load(tmp_path / "s").generation == 2
    assert [e["kind"] for e in orchestra.agents().events("edge-f")] == ["enrolled", "recovered"]
    # Beyond the window, it needs a new token.
    enrollment.cert_lifetime = timedelta(seconds=2)
    other = orchestra.enroll("edge-g", tmp_path / "g")
    time.sleep(3)
    enrollment.clock = Shifted(timedelta(days=8))
    from stella_core.agents.service import EnrollmentRefusedError

    with pytest.raises(EnrollmentRefusedError, match="new token"):
        enrollment.recover(other.agent_id, b"", other.generation, 0, b"")
    assert state.agent_id != other.agent_id


def test_keepalive_finds_a_dead_link_in_under_30_seconds() -> None:
    agent = dict(CHANNEL_OPTIONS)
    server = dict(SERVER_OPTIONS)
    assert agent["grpc.keepalive_time_ms"] + agent["grpc.keepalive_timeout_ms"] < 30_000
    assert server["grpc.keepalive_time_ms"] + server["grpc.keepalive_timeout_ms"] < 30_000
    assert agent["grpc.keepalive_permit_without_calls"] == 1
    # The gateway accepts the agent's pings (else a GOAWAY "too_many_pings").
    assert (
        server["grpc.http2.min_recv_ping_interval_without_data_ms"]
        <= agent["grpc.keepalive_time_ms"]
    )
    assert server["grpc.keepalive_permit_without_calls"] == 1


# ------------------------------------------------------------------------------ the database
def refused(conn: psycopg.Connection, sql: str, params: tuple = ()) -> str:
    tenant = conn.execute("SELECT current_setting('app.tenant_id')").fetchone()[0]
    with pytest.raises(psycopg.Error) as caught:
        conn.execute(sql, params)
    conn.rollback()
    conn.execute("SELECT set_config('app.tenant_id', %s, false)", (tenant,))
    return str(caught.value)


def not_done(conn: psycopg.Connection, sql: str, params: tuple = ()) -> None:
    """A write row-level security hides the rows from (0 rows) or a trigger refuses."""
    tenant = conn.execute("SELECT current_setting('app.tenant_id')").fetchone()[0]
    try:
        cur = conn.execute(sql, params)
        assert cur.rowcount == 0, sql
        conn.commit()
    except psycopg.Error:
        conn.rollback()
    conn.execute("SELECT set_config('app.tenant_id', %s, false)", (tenant,))


def test_people_cannot_make_tokens_enroll_move_generations_or_unrevoke(
    orchestra: Orchestra, world, tmp_path: Path
) -> None:
    admin = orchestra.admin
    admin.add_person("rita", ProductRole.RELEASE_MANAGER)
    admin.add_person("abe", ProductRole.APPROVER)
    state = orchestra.enroll("edge-h", tmp_path / "s")
    agent_id = str(state.agent_id)
    for name in ("rita", "abe"):
        conn = role_conn(world, name)
        tenant = conn.execute("SELECT current_setting('app.tenant_id')").fetchone()[0]
        # They can see the agent...
        assert conn.execute("SELECT count(*) FROM agent.agents").fetchone()[0] == 1
        conn.rollback()
        conn.execute("SELECT set_config('app.tenant_id', %s, false)", (tenant,))
        # ...but not the tokens, and cannot write any agent table.
        assert conn.execute("SELECT count(*) FROM agent.tokens").fetchone()[0] == 0
        refused(
            conn,
            "INSERT INTO agent.tokens (tenant_id, token_hash, name, expires_at)"
            " VALUES (%s, %s, 'x', now() + interval '1 hour')",
            (tenant, "a" * 64),
        )
        refused(
            conn,
            "INSERT INTO agent.agents (tenant_id, name, key_fingerprint, cert_not_after)"
            " VALUES (%s, 'rogue', %s, now() + interval '1 day')",
            (tenant, "b" * 64),
        )
        for statement in (
            "UPDATE agent.agents SET generation = 1, generation_in_use = 1 WHERE id = %s",
            "UPDATE agent.agents SET revoked_at = now() WHERE id = %s",
            'UPDATE agent.agents SET labels = \'{"x": "y"}\' WHERE id = %s',
        ):
            not_done(conn, statement, (agent_id,))
        refused(
            conn,
            "INSERT INTO agent.certificates (tenant_id, serial, agent_id, generation,"
            " not_before, not_after, reason) VALUES (%s, 'abc', %s, 9, now(), now(), 'renew')",
            (tenant, agent_id),
        )
        refused(
            conn,
            "INSERT INTO deploy.tasks (id, tenant_id, type, target, target_id, agent_id,"
            " idempotency_key, payload, envelope, issued_at, expires_at) VALUES"
            " (gen_random_uuid(), %s, 'execute-command', 't', gen_random_uuid(), %s, 'k',"
            " '{}', '\\x00', now(), now() + interval '1 hour')",
            (tenant, agent_id),
        )
        conn.close()
    agent = orchestra.agents().get(agent_id)
    assert (agent.revoked_at, agent.labels, agent.generation) == (None, {}, 1)
    # The admin revokes; nobody, the admin included, un-revokes or takes a generation back.
    orchestra.agents().revoke(agent_id)
    admin_conn = role_conn(world, admin.profile.name)
    words = refused(
        admin_conn, "UPDATE agent.agents SET revoked_at = NULL WHERE id = %s", (agent_id,)
    )
    assert "stays revoked" in words
    words = refused(admin_conn, "UPDATE agent.agents SET generation = 5 WHERE id = %s", (agent_id,))
    assert "only the orchestrator" in words
    admin_conn.close()
    with (
        pytest.raises(Exception, match=r"never goes back|stays revoked"),
        orchestra.orchestrator.db.transaction() as conn,
    ):
        conn.execute(
            text("UPDATE agent.agents SET generation = 0 WHERE id = :id"), {"id": agent_id}
        )


def test_one_port_cannot_serve_both_enrollment_and_mutual_tls() -> None:
    """Why there are two ports: a grpc server that does not require a client certificate never
    asks for one, so a link's identity could not come from it there (checked here on the real
    grpc); and the enrollment port does not serve links at all."""
    from concurrent import futures

    now = datetime.now(UTC)
    authority = Authority.create("t", now)
    server_key, server_cert = authority.issue_gateway(["127.0.0.1"], now)
    agent_key = ec.generate_private_key(ec.SECP256R1())
    agent_cert = authority.issue_agent(
        agent_key.public_key(), uuid4(), uuid4(), now, timedelta(hours=1)
    )
    seen: list[object] = []

    def handler(request: bytes, context: grpc.ServicerContext) -> bytes:
        seen.append(context.auth_context().get("x509_pem_cert"))
        return b"ok"

    server = grpc.server(futures.ThreadPoolExecutor(2))
    server.add_generic_rpc_handlers(
        [
            grpc.method_handlers_generic_handler(
                "t.S", {"M": grpc.unary_unary_rpc_method_handler(handler)}
            )
        ]
    )
    creds = grpc.ssl_server_credentials(
        [(private_pem(server_key), pem_chain(server_cert, authority.cert))],
        root_certificates=authority.cert_pem,
        require_client_auth=False,
    )
    port = server.add_secure_port("127.0.0.1:0", creds)
    server.start()
    try:
        client = grpc.ssl_channel_credentials(
            authority.cert_pem, private_pem(agent_key), pem_chain(agent_cert)
        )
        with grpc.secure_channel(
            f"127.0.0.1:{port}", client, [("grpc.ssl_target_name_override", GATEWAY_NAME)]
        ) as channel:
            assert channel.unary_unary("/t.S/M")(b"x", timeout=10) == b"ok"
    finally:
        server.stop(0)
    assert seen == [None]  # the offered client certificate was never asked for


def test_the_enrollment_port_serves_no_links(orchestra: Orchestra) -> None:
    creds = grpc.ssl_channel_credentials(ca_pem(orchestra))
    with grpc.secure_channel(
        f"127.0.0.1:{orchestra.gateway.enroll_port}",
        creds,
        options=[("grpc.ssl_target_name_override", GATEWAY_NAME)],
    ) as channel:
        call = rpc.AgentLinkStub(channel).Connect(iter([]), timeout=10)
        with pytest.raises(grpc.RpcError) as caught:
            list(call)
        assert caught.value.code() == grpc.StatusCode.UNIMPLEMENTED
        reply = rpc.EnrollmentStub(channel).Discover(pb.DiscoverRequest(), timeout=10)
    assert reply.link.port == orchestra.gateway.link_port
