"""The agent gateway: grpc.aio servers on their own thread and event loop, inside `stella serve`
and (later) the desktop.

Two ports, because grpc decides per port whether a client certificate is asked for (checked: with
`require_client_auth=False` a server never sees the certificate a client offers):
- the enrollment port: server-authenticated TLS; Discover, Enroll, Recover;
- the link port: mutual TLS against the tenant's agent CA; one Connect stream per agent.

On the link, who the agent is comes from its certificate only (`auth_context`), never from a
message. A link is refused for no certificate or one of another CA (the TLS handshake fails), an
expired one (likewise), a revoked or unknown agent, or an older generation than the one in use (a
copy: the agent is locked out). Revoking an agent cuts its live link within a poll (0.2 s).

Tasks: each poll (one query for all links) hands each agent its open tasks not yet sent on its
link (after a reconnect, the delivered-but-unanswered ones again); the agent's progress, log
lines and results are recorded in the queue, only for its own tasks.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import threading
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any
from uuid import UUID

import grpc
import orjson
from grpc import aio

from stella_core.agents._proto import agent_pb2 as pb
from stella_core.agents._proto import agent_pb2_grpc as rpc
from stella_core.agents.authority import (
    GATEWAY_NAME,
    AgentIdentity,
    agent_identity,
    pem_chain,
    private_pem,
)
from stella_core.agents.model import HEARTBEAT_SECONDS
from stella_core.agents.service import Enrollment, Issued
from stella_core.crypto.keys import PublicKey
from stella_core.deploy.model import TaskOutcome, TaskStatus
from stella_core.deploy.tasks import TaskQueue
from stella_core.errors import (
    AuthorizationError,
    DefinitionError,
    IntegrityError,
    NotFoundError,
    StellaError,
)

log = logging.getLogger(__name__)

# Keepalive (standards §D.5): the gateway pings an idle agent every 10 s and gives up after 10 s
# more, so a dead link is found in under 30 s; it lets agents ping as often as every 5 s (they
# ping every 10 s) without a GOAWAY "too_many_pings".
SERVER_OPTIONS: tuple[tuple[str, int], ...] = (
    ("grpc.keepalive_time_ms", 10_000),
    ("grpc.keepalive_timeout_ms", 10_000),
    ("grpc.keepalive_permit_without_calls", 1),
    ("grpc.http2.min_recv_ping_interval_without_data_ms", 5_000),
    ("grpc.http2.max_ping_strikes", 0),
    ("grpc.http2.max_pings_without_data", 0),
    ("grpc.max_receive_message_length", 16 * 1024 * 1024),
)
# One query per poll for every link at once, so polling often costs the same for 1 or 500.
POLL_SECONDS = 0.2
MAX_OUTPUTS = 4 * 1024 * 1024


def parse_listen(value: str, *, what: str = "agent listen address") -> tuple[str, int]:
    """`HOST:PORT` (`[::1]:PORT` for IPv6) -> (host, port)."""
    host, sep, port = value.rpartition(":")
    host = host.strip("[]")
    if not sep or not host or not port.isdigit() or not 0 <= int(port) <= 65535:
        raise DefinitionError(f"the {what} {value!r} is not HOST:PORT", field="agent listen")
    return host, int(port)


@dataclass
class _Link:
    agent_id: UUID
    name: str
    identity: AgentIdentity
    outbox: asyncio.Queue[pb.ServerMessage] = field(default_factory=asyncio.Queue)
    refusal: str | None = None
    code: grpc.StatusCode = grpc.StatusCode.PERMISSION_DENIED
    stop: asyncio.Event = field(default_factory=asyncio.Event)
    sent: set[UUID] = field(default_factory=set)
    answered: set[UUID] = field(default_factory=set)
    seq: int = 0
    ready: bool = False  # welcomed: tasks may follow

    def put(self, **body: Any) -> None:
        self.seq += 1
        self.outbox.put_nowait(pb.ServerMessage(seq=self.seq, **body))

    def cut(self, reason: str, code: grpc.StatusCode = grpc.StatusCode.PERMISSION_DENIED) -> None:
        """End the link: refused (PERMISSION_DENIED), or UNAVAILABLE when the agent should
        simply dial again (the orchestrator stopping, a newer link)."""
        self.refusal = reason
        self.code = code
        self.stop.set()


def _keys(keys: Sequence[PublicKey]) -> list[pb.PublicKey]:
    return [pb.PublicKey(key_id=k.key_id, pem=k.pem()) for k in keys]


def _ms(value: datetime | None) -> int:
    return int(value.timestamp() * 1000) if value else 0


def _from_ms(value: int) -> datetime | None:
    return datetime.fromtimestamp(value / 1000, UTC) if value > 0 else None


async def _abort(context: aio.ServicerContext[Any, Any], exc: StellaError) -> None:
    code = grpc.StatusCode.INTERNAL
    if isinstance(exc, AuthorizationError):
        code = grpc.StatusCode.PERMISSION_DENIED
    elif isinstance(exc, NotFoundError):
        code = grpc.StatusCode.NOT_FOUND
    elif isinstance(exc, DefinitionError | IntegrityError):
        code = grpc.StatusCode.INVALID_ARGUMENT
    await context.abort(code, exc.message)


class _EnrollmentServicer(rpc.EnrollmentServicer):  # type: ignore[misc]
    def __init__(self, gateway: AgentGateway) -> None:
        self.gateway = gateway

    def _link(self) -> pb.LinkEndpoint:
        return pb.LinkEndpoint(host="", port=self.gateway.link_port, server_name=GATEWAY_NAME)

    async def Discover(self, request: Any, context: Any) -> pb.DiscoverReply:
        return pb.DiscoverReply(link=self._link())

    async def Enroll(self, request: Any, context: Any) -> pb.EnrollReply:
        gateway = self.gateway
        try:
            issued: Issued = await asyncio.to_thread(
                gateway.enrollment.enroll,
                request.token,
                bytes(request.csr_der),
                request.hostname,
                request.version,
            )
            keys = await asyncio.to_thread(gateway.signer_keys)
        except StellaError as exc:
            log.info("enrollment refused: %s", exc.message)
            await _abort(context, exc)
            raise  # not reached: abort raises
        authority = gateway.enrollment.authority()
        log.info("agent %s enrolled (%s)", issued.agent.name, issued.agent.id)
        return pb.EnrollReply(
            agent_id=str(issued.agent.id),
            name=issued.agent.name,
            tenant_id=str(gateway.enrollment.tenant_id),
            certificate_pem=pem_chain(issued.certificate),
            ca_certificate_pem=authority.cert_pem,
            generation=issued.generation,
            link=self._link(),
            orchestrator_keys=_keys(keys),
            labels=issued.agent.labels,
        )

    async def Recover(self, request: Any, context: Any) -> pb.RecoverReply:
        gateway = self.gateway
        try:
            agent_id = UUID(request.agent_id)
        except ValueError:
            await context.abort(grpc.StatusCode.INVALID_ARGUMENT, "not an agent id")
            raise
        try:
            issued: Issued = await asyncio.to_thread(
                gateway.enrollment.recover,
                agent_id,
                bytes(request.csr_der),
                int(request.generation),
                int(request.timestamp_unix),
                bytes(request.proof),
            )
            keys = await asyncio.to_thread(gateway.signer_keys)
        except StellaError as exc:
            log.info("recovery of agent %s refused: %s", agent_id, exc.message)
            await _abort(context, exc)
            raise
        return pb.RecoverReply(
            certificate_pem=pem_chain(issued.certificate),
            generation=issued.generation,
            orchestrator_keys=_keys(keys),
        )


class _LinkServicer(rpc.AgentLinkServicer):  # type: ignore[misc]
    def __init__(self, gateway: AgentGateway) -> None:
        self.gateway = gateway

    async def Connect(self, request_iterator: Any, context: Any) -> None:
        gateway = self.gateway
        auth = context.auth_context()
        pems = auth.get("x509_pem_cert") or []
        if auth.get("transport_security_type") != [b"ssl"] or not pems:
            await context.abort(grpc.StatusCode.UNAUTHENTICATED, "no client certificate")
        try:
            identity = agent_identity(pems[0])
            agent = await asyncio.to_thread(gateway.enrollment.authorize, identity)
        except StellaError as exc:
            log.warning("agent link refused: %s", exc.message)
            await _abort(context, exc)
            return
        link = _Link(agent.id, agent.name, identity)
        previous = gateway._links.get(agent.id)
        if previous is not None:
            previous.cut(
                "a newer link of this agent replaced this one", grpc.StatusCode.UNAVAILABLE
            )
        gateway._links[agent.id] = link
        keys = await asyncio.to_thread(gateway.signer_keys)
        link.put(
            welcome=pb.Welcome(
                agent_id=str(agent.id),
                generation=agent.generation_in_use,
                orchestrator_keys=_keys(keys),
                heartbeat_seconds=HEARTBEAT_SECONDS,
            )
        )
        await asyncio.to_thread(gateway.enrollment.heartbeat, agent.id)
        link.ready = True
        gateway.poll_now()  # its open tasks at once, not at the next poll
        tasks = [
            asyncio.create_task(self._read(link, context)),
            asyncio.create_task(self._write(link, context)),
            asyncio.create_task(link.stop.wait()),
        ]
        try:
            done, _ = await asyncio.wait(tasks, return_when=asyncio.FIRST_COMPLETED)
            for task in done:
                if not task.cancelled() and task.exception() is not None:
                    log.warning("agent %s link failed: %r", link.name, task.exception())
        finally:
            for task in tasks:
                task.cancel()
            for task in tasks:
                with contextlib.suppress(asyncio.CancelledError, Exception):
                    await task
            if gateway._links.get(agent.id) is link:
                del gateway._links[agent.id]
                with contextlib.suppress(StellaError):
                    await asyncio.to_thread(gateway.enrollment.disconnected, agent.id)
        if link.refusal is not None:
            await context.abort(link.code, link.refusal)

    async def _write(self, link: _Link, context: Any) -> None:
        while True:
            message = await link.outbox.get()
            await context.write(message)

    async def _read(self, link: _Link, context: Any) -> None:
        gateway = self.gateway
        queue = gateway.queue
        while True:
            message = await context.read()
            if message is aio.EOF:
                return
            kind = message.WhichOneof("body")
            if kind == "hello":
                await asyncio.to_thread(
                    gateway.enrollment.connected,
                    link.agent_id,
                    message.hello.hostname,
                    message.hello.version,
                    list(message.hello.runtimes[:16]),
                )
            elif kind == "heartbeat":
                await asyncio.to_thread(gateway.enrollment.heartbeat, link.agent_id)
                link.put(heartbeat_ack=pb.HeartbeatAck(sent_unix_ms=message.heartbeat.sent_unix_ms))
            elif kind == "renew":
                try:
                    issued: Issued = await asyncio.to_thread(
                        gateway.enrollment.renew, link.identity, bytes(message.renew.csr_der)
                    )
                except StellaError as exc:
                    log.warning("renewal of agent %s refused: %s", link.name, exc.message)
                    link.cut(exc.message)
                    return
                link.put(
                    renewed=pb.CertificateRenewed(
                        certificate_pem=pem_chain(issued.certificate),
                        generation=issued.generation,
                    )
                )
            elif kind in ("started", "progress", "log", "result"):
                await self._task_message(link, kind, getattr(message, kind), queue)

    async def _task_message(self, link: _Link, kind: str, body: Any, queue: TaskQueue) -> None:
        try:
            task_id = UUID(body.task_id)
        except ValueError:
            return
        agent = link.agent_id
        if kind == "started":
            await asyncio.to_thread(queue.mark_started, task_id, agent_id=agent)
        elif kind == "progress":
            data = {"message": body.message[:2000], "fraction": round(float(body.fraction), 4)}
            await asyncio.to_thread(queue.record_event, task_id, "progress", data, agent_id=agent)
        elif kind == "log":
            data = {"line": body.line}
            await asyncio.to_thread(queue.record_event, task_id, "log", data, agent_id=agent)
        else:
            outputs: Any = {}
            if body.outputs_json and len(body.outputs_json) <= MAX_OUTPUTS:
                with contextlib.suppress(orjson.JSONDecodeError):
                    outputs = orjson.loads(body.outputs_json)
            outcome = TaskOutcome(
                ok=bool(body.ok),
                outputs=outputs if isinstance(outputs, dict) else {},
                error=body.error[:2000] or None,
                error_type=body.error_type[:64] or None,
                retryable=bool(body.retryable),
                started_at=_from_ms(body.started_unix_ms),
                finished_at=_from_ms(body.finished_unix_ms),
            )
            await asyncio.to_thread(queue.finish, task_id, outcome, agent_id=agent)
            link.answered.add(task_id)


class AgentGateway:
    """Start with `start()` (returns once both ports listen), stop with `stop()`. `enrollment`
    and `queue` act as the orchestrator; `signer_keys` gives the public keys of the
    orchestrator key this process holds (what agents trust tasks by)."""

    def __init__(
        self,
        enrollment: Enrollment,
        queue: TaskQueue,
        signer_keys: Callable[[], list[PublicKey]],
        *,
        listen: str,
        link_listen: str | None = None,
        poll_seconds: float = POLL_SECONDS,
    ) -> None:
        self.enrollment = enrollment
        self.queue = queue
        self.signer_keys = signer_keys
        self.host, self._enroll_port = parse_listen(listen)
        if link_listen is None:
            # Beside the enrollment port by default (agents ask where it is before each dial).
            link_host, link_port = self.host, (self._enroll_port + 1 if self._enroll_port else 0)
        else:
            link_host, link_port = parse_listen(link_listen, what="agent link address")
        self.link_host, self._link_port = link_host, link_port
        self.poll_seconds = poll_seconds
        self._links: dict[UUID, _Link] = {}
        self._loop: asyncio.AbstractEventLoop | None = None
        self._thread: threading.Thread | None = None
        self._ready = threading.Event()
        self._failure: BaseException | None = None
        self._stopping: asyncio.Event | None = None
        self._wake: asyncio.Event | None = None
        self.enroll_port = 0
        self.link_port = 0

    # lifecycle --------------------------------------------------------------------------
    def start(self, timeout: float = 30.0) -> AgentGateway:
        """Listen and serve; returns once both ports listen. Started again after `stop()`, it
        listens on the ports it had (agents know them)."""
        if self._thread is not None and self._thread.is_alive():
            return self
        self._ready.clear()
        self._failure = None
        authority = self.enrollment.authority()  # made (or opened) before listening
        key, cert = authority.issue_gateway(
            sorted({self.host, self.link_host}), self.enrollment.clock.now()
        )
        self._identity = (private_pem(key), pem_chain(cert, authority.cert))
        self._ca = authority.cert_pem
        self._thread = threading.Thread(target=self._run, name="stella-agent-gateway", daemon=True)
        self._thread.start()
        if not self._ready.wait(timeout):
            raise StellaError("the agent gateway did not start in time")
        if self._failure is not None:
            raise self._failure
        return self

    def _run(self) -> None:
        loop = asyncio.new_event_loop()
        self._loop = loop
        try:
            loop.run_until_complete(self._serve())
        except BaseException as exc:  # reported to start(), or logged when running
            if not self._ready.is_set():
                self._failure = exc
                self._ready.set()
            else:
                log.exception("the agent gateway stopped")
        finally:
            pending = asyncio.all_tasks(loop)
            for task in pending:
                task.cancel()
            with contextlib.suppress(BaseException):
                loop.run_until_complete(asyncio.gather(*pending, return_exceptions=True))
            loop.close()
            self._loop = None

    async def _serve(self) -> None:
        key_pem, chain = self._identity
        enroll = aio.server(options=list(SERVER_OPTIONS))
        rpc.add_EnrollmentServicer_to_server(_EnrollmentServicer(self), enroll)
        enroll_creds = grpc.ssl_server_credentials([(key_pem, chain)])
        link = aio.server(options=list(SERVER_OPTIONS))
        rpc.add_AgentLinkServicer_to_server(_LinkServicer(self), link)
        link_creds = grpc.ssl_server_credentials(
            [(key_pem, chain)], root_certificates=self._ca, require_client_auth=True
        )
        try:
            self.enroll_port = enroll.add_secure_port(
                f"{_bracket(self.host)}:{self._enroll_port}", enroll_creds
            )
            self.link_port = link.add_secure_port(
                f"{_bracket(self.link_host)}:{self._link_port}", link_creds
            )
        except RuntimeError as exc:
            raise StellaError(
                f"the agent gateway cannot listen on {self.host}:{self._enroll_port} or "
                f"{self.link_host}:{self._link_port} (in use?)"
            ) from exc
        await enroll.start()
        await link.start()
        self._stopping = asyncio.Event()
        self._ready.set()
        log.info(
            "agent gateway: enrollment on port %d, links on %d", self.enroll_port, self.link_port
        )
        self._wake = asyncio.Event()
        watcher = asyncio.create_task(self._watch_revocations())
        dispatcher = asyncio.create_task(self._dispatch())
        try:
            await self._stopping.wait()
        finally:
            watcher.cancel()
            dispatcher.cancel()
            for live in list(self._links.values()):
                live.cut("the orchestrator is stopping", grpc.StatusCode.UNAVAILABLE)
            # Let the links end themselves (their agents hear why), then stop the servers.
            for _ in range(20):
                if not self._links:
                    break
                await asyncio.sleep(0.05)
            await asyncio.gather(enroll.stop(self._grace), link.stop(self._grace))

    _grace = 1.0

    async def _watch_revocations(self) -> None:
        """Cut the link of any agent revoked since (polling: revocation takes effect within
        `poll_seconds`); also the place where overdue tasks expire."""
        expire_every = 0
        while True:
            await asyncio.sleep(self.poll_seconds)
            ids = list(self._links)
            try:
                revoked = await asyncio.to_thread(self.enrollment.revoked_among, ids)
                expire_every += 1
                if expire_every >= 10:
                    expire_every = 0
                    await asyncio.to_thread(self.queue.expire_overdue)
            except StellaError as exc:
                log.warning("agent gateway: %s", exc.message)
                continue
            for agent_id in revoked:
                live = self._links.get(agent_id)
                if live is not None:
                    log.info("agent %s revoked: cutting its link", live.name)
                    live.cut(f"agent {live.name} is revoked")

    def poll_now(self) -> None:
        """Look for open tasks at once (on the gateway's loop)."""
        if self._wake is not None:
            self._wake.set()

    async def _dispatch(self) -> None:
        """Every `poll_seconds` (or at once when a link comes up), one query for the open tasks
        of every linked agent, not one per link: 500 links polling on their own would make
        1,000 queries a second with nothing to do."""
        assert self._wake is not None
        while True:
            self._wake.clear()
            links = {a: link for a, link in self._links.items() if link.ready}
            if links:
                try:
                    found = await asyncio.to_thread(self.queue.for_agents, list(links))
                    results = await asyncio.gather(
                        *(self._deliver(link, found.get(a, [])) for a, link in links.items()),
                        return_exceptions=True,
                    )
                    for link, result in zip(links.values(), results, strict=True):
                        if isinstance(result, Exception):
                            log.warning("agent %s: tasks not delivered: %r", link.name, result)
                except StellaError as exc:
                    log.warning("agent gateway: %s", exc.message)
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._wake.wait(), self.poll_seconds)

    async def _deliver(self, link: _Link, open_tasks: list[tuple[UUID, bytes]]) -> None:
        """Hand `link` its open tasks not yet sent on it (after a reconnect, the delivered but
        unanswered ones again), and cancel those it was sent that closed unanswered."""
        if link.stop.is_set():
            return
        queue = self.queue
        open_ids = {task_id for task_id, _ in open_tasks}
        for task_id, envelope in open_tasks:
            if task_id in link.sent:
                continue
            link.sent.add(task_id)
            # Recorded before it is sent, so its events read in order.
            await asyncio.to_thread(queue.mark_delivered, task_id)
            link.put(task=pb.TaskAssignment(task_id=str(task_id), envelope=envelope))
        # Sent here, no longer open, and not answered on this link: cancelled (or expired).
        for task_id in link.sent - open_ids - link.answered:
            state = await asyncio.to_thread(queue.get, task_id)
            if state.status in (TaskStatus.CANCELLED, TaskStatus.EXPIRED):
                link.put(cancel=pb.CancelTask(task_id=str(task_id)))
            link.answered.add(task_id)

    def stop(self, grace: float = 1.0) -> None:
        loop, stopping = self._loop, self._stopping
        if loop is None or stopping is None or self._thread is None:
            return
        self._grace = grace
        with contextlib.suppress(RuntimeError):  # the loop ended already
            loop.call_soon_threadsafe(stopping.set)
        self._thread.join(timeout=grace + 10)
        self._thread = None
        self._enroll_port, self._link_port = self.enroll_port, self.link_port

    def __enter__(self) -> AgentGateway:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()

    def connected_agents(self) -> list[UUID]:
        return list(self._links)


def _bracket(host: str) -> str:
    return f"[{host}]" if ":" in host else host


def orchestrator_public_keys(db: Any, evidence: Any) -> Callable[[], list[PublicKey]]:
    """The public key of the orchestrator key this process holds (derived from the private
    key, never only read from a row a person could write)."""

    def keys() -> list[PublicKey]:
        with db.transaction() as conn:
            return [evidence.orchestrator_signer(conn).public_key()]

    return keys


def open_gateway(
    orchestrator: Any, *, listen: str, link_listen: str | None = None, db: Any = None
) -> AgentGateway:
    """A gateway for `orchestrator` (bootstrap's Orchestrator: `.db`, `.evidence`,
    `.backend.home`, `.backend.target`), not started yet: `start()` it. `db` (acting as the
    orchestrator) is the pool it uses, `orchestrator.db` by default."""
    from stella_core.agents.service import Enrollment, enrollment_for

    db = db or orchestrator.db
    base = enrollment_for(orchestrator)
    enrollment = Enrollment(db, base.directory.parent.parent, base.directory.name, base.secrets)
    return AgentGateway(
        enrollment,
        TaskQueue(db),
        orchestrator_public_keys(db, orchestrator.evidence),
        listen=listen,
        link_listen=link_listen,
    )
