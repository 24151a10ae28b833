"""`stella serve`: the orchestrator's workers, until SIGTERM or SIGINT."""

from __future__ import annotations

import argparse
import logging
import sys
from typing import Any

from stella_core.cli.common import Leaf, acting, number_flag, seconds_flag, show
from stella_core.errors import StellaError
from stella_core.limits import MAX_WAIT_SECONDS


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


def _drift_every(stella: Any, every: float, stop: Any) -> None:
    """Drift checks on a schedule (its own thread: a check waits on targets, the loop must
    not). A failed check is logged and the next one comes at its time."""
    log = logging.getLogger("stella.serve")
    while not stop.wait(every):
        try:
            found = stella.orchestrator.drift.check()
            counts: dict[str, int] = {}
            for d in found:
                counts[d.status.value] = counts.get(d.status.value, 0) + 1
            log.info("drift checked: %s", counts or "no targets")
        except StellaError as exc:
            log.warning("drift check failed: %s", exc.message)
        except Exception:
            log.exception("drift check failed")


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
    gateway = None
    metrics = None
    with acting(args) as stella:
        try:
            identity = stella.tenancy.require(ProductRole.RELEASE_MANAGER, ProductRole.ADMIN)
            if stella.orchestrator is None:
                raise OrchestratorUnavailableError(
                    "stella serve runs the orchestrator, and this machine holds no orchestrator "
                    "login for this tenant (STELLA_HOME/orchestrator.json is made where the "
                    "database is initialised or migrated)"
                )
            if args.agent_listen:
                from stella_core.agents.gateway import open_gateway

                # Started first: a port in use stops serve before any worker runs.
                gateway = open_gateway(
                    stella.orchestrator,
                    listen=args.agent_listen,
                    link_listen=args.agent_link_listen,
                    db=stella.orchestrator.database(pool_size=4),
                ).start()
                print(
                    f"stella: agent gateway: enrollment on {gateway.host}:{gateway.enroll_port}, "
                    f"agent links on {gateway.link_host}:{gateway.link_port}",
                    file=sys.stderr,
                    flush=True,
                )
            if args.metrics_listen:
                from stella_core.drift.service import DriftService
                from stella_core.metrics import drift_counts_from, serve_metrics

                # Read at scrape time, as the orchestrator, from its own small pool.
                metrics = serve_metrics(
                    args.metrics_listen,
                    stella.orchestrator.database(pool_size=1),
                    drift=drift_counts_from(DriftService.latest_in),
                )
                print(
                    f"stella: metrics on http://{metrics.host}:{metrics.port}/metrics",
                    file=sys.stderr,
                    flush=True,
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
            if args.drift_every:
                threading.Thread(
                    target=_drift_every,
                    args=(stella, args.drift_every, stop),
                    name="drift",
                    daemon=True,  # a check waiting on a target does not hold up the exit
                ).start()
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
            if metrics is not None:
                metrics.close()
            if gateway is not None:
                gateway.stop()
                gateway.enrollment.db.dispose()
            if db is not None:
                db.dispose()
    show(args, {"workers": args.workers, "stopped": True}, lambda: ["stella: stopped"])


def group_serve(groups: Any, leaf: Leaf, help_: str) -> None:
    p = leaf(groups, "serve", cmd_serve, help_)
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
    p.add_argument(
        "--drift-every",
        type=seconds_flag(0, MAX_WAIT_SECONDS),
        default=300.0,
        metavar="SECONDS",
        help="check every target for drift this often (0: never)",
    )
    p.add_argument(
        "--agent-listen",
        default=None,
        metavar="HOST:PORT",
        help="run the agent gateway: agents enroll here (TLS) and learn where to link",
    )
    p.add_argument(
        "--agent-link-listen",
        default=None,
        metavar="HOST:PORT",
        help="where agents keep their mutual-TLS link (default: the --agent-listen port + 1)",
    )
    p.add_argument(
        "--metrics-listen",
        default=None,
        metavar="HOST:PORT",
        help="serve Prometheus metrics at http://HOST:PORT/metrics (read from the database at "
        "each scrape; bind to a private address)",
    )


GROUPS = {"serve": group_serve}
