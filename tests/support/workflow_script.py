"""What the tests' script steps run (always through the engine's executor, never a shell).

effect DIR [--sleep S] [--fail-first N] [--ticks]
    Appends "<step> <attempt> <pid> <execution id> <cwd>" to DIR/executions.log on every
    execution. The side effect (a line "<step> <key>" in DIR/effects.log) happens once per
    WORKFLOW_IDEMPOTENCY_KEY: a marker file DIR/markers/<key hash> makes a retried call
    recognise that it was done. Then sleeps S seconds; fails the first N executions (counted in
    DIR/counter-<step>). With --ticks, appends "<step> <execution id> <unix time>" to
    DIR/ticks.log every 50 ms while it sleeps: proof of when each execution was alive.
sleep S            sleeps, prints "slept"
echo TEXT...       prints its arguments (and writes "err" to stderr)
exit CODE          prints "bye" and exits with CODE
flood BYTES [--stderr N]  writes that many bytes ("x") to stdout, and N ("e") to stderr
"""

from __future__ import annotations

import hashlib
import os
import sys
import time
import uuid
from pathlib import Path


def effect(args: list[str]) -> int:
    root = Path(args[0])
    sleep = float(args[args.index("--sleep") + 1]) if "--sleep" in args else 0.0
    fail_first = int(args[args.index("--fail-first") + 1]) if "--fail-first" in args else 0
    step = os.environ["WORKFLOW_STEP_ID"]
    key = os.environ.get("WORKFLOW_IDEMPOTENCY_KEY", "")
    # PIDs repeat across sandboxes (each has its own PID namespace): this tells executions apart.
    execution = uuid.uuid4().hex[:12]
    root.joinpath("markers").mkdir(parents=True, exist_ok=True)
    with root.joinpath("executions.log").open("a") as fh:
        attempt = os.environ.get("WORKFLOW_ATTEMPT", "?")
        fh.write(f"{step} {attempt} {os.getpid()} {execution} {os.getcwd()}\n")
    counter = root / f"counter-{step}"
    count = int(counter.read_text()) + 1 if counter.exists() else 1
    counter.write_text(str(count))
    if count <= fail_first:
        print(f"failing on purpose ({count}/{fail_first})", file=sys.stderr)
        return 3
    marker = root / "markers" / hashlib.sha256(key.encode()).hexdigest()
    if marker.exists():
        print("already done")
    else:
        with root.joinpath("effects.log").open("a") as fh:
            fh.write(f"{step} {key}\n")
        marker.touch()
        print("done")
    if "--ticks" in args:
        end = time.monotonic() + sleep
        while time.monotonic() < end:
            with root.joinpath("ticks.log").open("a") as fh:
                fh.write(f"{step} {execution} {time.time():.6f}\n")
            time.sleep(0.05)
    else:
        time.sleep(sleep)
    return 0


def main(argv: list[str]) -> int:
    command, args = argv[0], argv[1:]
    if command == "effect":
        return effect(args)
    if command == "sleep":
        time.sleep(float(args[0]))
        print("slept")
        return 0
    if command == "echo":
        print(" ".join(args))
        print("err", file=sys.stderr)
        return 0
    if command == "exit":
        print("bye")
        return int(args[0])
    if command == "flood":
        sys.stdout.write("x" * int(args[0]))
        if "--stderr" in args:
            sys.stderr.write("e" * int(args[args.index("--stderr") + 1]))
        return 0
    print(f"unknown command {command}", file=sys.stderr)
    return 64


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
