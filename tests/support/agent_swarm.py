"""Many real `stella-agent` daemons in one process, for the scale benchmarks.

Each agent is the real `Agent` (its own key, certificate, journal, mutual-TLS link, backoff) running
the real task runner on the real `LocalHost`. What differs is the container engine on their PATH:
`engine_bin()` writes a small POSIX shell stand-in for `podman` and for a compose runtime that
does what the runner asks of them without starting anything: `pull` records the pinned reference,
`image inspect` answers only for a reference pulled before, `up` reads the lockfile the runner
wrote and records one container per service with the image's pinned digest, `ps`/`inspect`
report those containers the way podman formats them. The runner's own checks (the pulled digest,
each container's digest against the pinned one) run unchanged, so a benchmark's figure is the
orchestration's overhead, not container start-up. Every `up` is appended to `executions` in the
engine's state directory: how often each target's deployment really ran.

    python -m tests.support.agent_swarm --report FILE --bin DIR --state DIR [--state DIR ...]

runs one agent per state directory until SIGTERM and writes one JSON line per link change to
FILE, {"agent": name, "linked": bool, "at": unix seconds}, and one per dial the agent starts,
{"agent": name, "dial": true, "at": unix seconds} (when its backoff let it try again).
"""

from __future__ import annotations

import argparse
import json
import os
import signal
import sys
import threading
import time
from pathlib import Path

COMPOSE = "swarm-compose"

ENGINE = r"""#!/bin/sh
# A stand-in for podman and a compose runtime (see tests/support/agent_swarm.py).
state="${SWARM_ENGINE_STATE:?}"
me="$(basename "$0")"
if [ "$me" = "swarm-compose" ]; then
  [ "$1" = "version" ] && { echo "swarm-compose 1.0"; exit 0; }
  project=""; file=""
  while [ $# -gt 0 ]; do
    case "$1" in
      -p) project="$2"; shift 2 ;;
      -f) file="$2"; shift 2 ;;
      up) shift; break ;;
      *) echo "swarm-compose: unexpected $1" >&2; exit 2 ;;
    esac
  done
  [ -n "$project" ] && [ -r "$file" ] || { echo "swarm-compose: -p and -f needed" >&2; exit 2; }
  out="$state/projects/$project"
  : > "$out.tmp"
  # services:\n  NAME:\n    image: REF  # tag: T
  awk '/^services:/{s=1;next} /^[^ #]/{s=0} s && /^  [^ ]/{sub(":","",$1); svc=$1}
       s && /^    image: /{print svc, $2}' "$file" | while read -r svc ref; do
    grep -qxF "$ref" "$state/pulled" 2>/dev/null || { echo "$ref was not pulled" >&2; exit 1; }
    id="$(printf '%s/%s' "$project" "$svc" | sha256sum | cut -c1-64)"
    labels='{"com.docker.compose.project":"%s","com.docker.compose.service":"%s",'
    labels="$labels"'"stella.digest":"%s"}'
    printf "%s\t%s_%s_1\t%s\t%s\trunning\t$labels\n" "$id" "$project" "$svc" "$id" \
      "${ref##*@}" "$project" "$svc" "${ref##*@}" > "$state/containers/$id"
    echo "$id" >> "$out.tmp"
  done || exit 1
  mv "$out.tmp" "$out"
  echo "up $project" >> "$state/executions"
  exit 0
fi
case "$1" in
  --version) echo "podman version 5.0.0 (stand-in)"; exit 0 ;;
  pull)
    ref=""; for a in "$@"; do ref="$a"; done
    echo "$ref" >> "$state/pulled"; exit 0 ;;
  image)
    ref=""; for a in "$@"; do ref="$a"; done
    grep -qxF "$ref" "$state/pulled" 2>/dev/null || { echo "no such image $ref" >&2; exit 1; }
    printf '%s ["%s"]\n' "${ref##*@}" "$ref"; exit 0 ;;
  ps)
    project=""
    for a in "$@"; do
      case "$a" in label=com.docker.compose.project=*) project="${a#*=*=}" ;; esac
    done
    [ -r "$state/projects/$project" ] && cat "$state/projects/$project"
    exit 0 ;;
  inspect)
    id=""; for a in "$@"; do id="$a"; done
    [ -r "$state/containers/$id" ] || { echo "no such container" >&2; exit 1; }
    cat "$state/containers/$id"; exit 0 ;;
esac
echo "podman stand-in: unsupported: $*" >&2
exit 2
"""


def engine_bin(directory: Path) -> tuple[Path, Path]:
    """Write the stand-in as `podman` and `swarm-compose` in `directory/bin`, with its state
    in `directory/state`; returns (bin, state)."""
    bin_dir, state = directory / "bin", directory / "state"
    bin_dir.mkdir(parents=True, exist_ok=True)
    for sub in ("projects", "containers"):
        (state / sub).mkdir(parents=True, exist_ok=True)
    for name in ("podman", COMPOSE):
        path = bin_dir / name
        path.write_text(ENGINE)
        path.chmod(0o755)
    return bin_dir, state


def executions(state: Path) -> dict[str, int]:
    """How many times each compose project was brought up."""
    counts: dict[str, int] = {}
    path = state / "executions"
    if path.exists():
        for line in path.read_text().splitlines():
            project = line.removeprefix("up ")
            counts[project] = counts.get(project, 0) + 1
    return counts


def main(argv: list[str] | None = None) -> int:
    from stella_core.agents.daemon import Agent
    from stella_core.deploy.hosts import LocalHost

    class DialingAgent(Agent):
        """The real agent; it notes when each dial starts."""

        def __init__(self, *args: object, **kw: object) -> None:
            super().__init__(*args, **kw)  # type: ignore[arg-type]
            self.dials: list[float] = []

        def _connect_once(self) -> None:
            self.dials.append(time.time())
            super()._connect_once()

    parser = argparse.ArgumentParser()
    parser.add_argument("--report", required=True, type=Path)
    parser.add_argument("--bin", required=True, type=Path)
    parser.add_argument("--engine-state", required=True, type=Path)
    parser.add_argument("--state", action="append", required=True, type=Path)
    args = parser.parse_args(argv)
    import logging

    logging.basicConfig(
        level=logging.INFO, format="%(asctime)s %(levelname)s %(threadName)s: %(message)s"
    )
    path = f"{args.bin}{os.pathsep}{os.environ.get('PATH', '')}"
    env = {**os.environ, "PATH": path, "SWARM_ENGINE_STATE": str(args.engine_state)}
    agents = [
        DialingAgent(state, host_factory=lambda: LocalHost(env), runtime_path=path)
        for state in args.state
    ]
    stop = threading.Event()
    signal.signal(signal.SIGTERM, lambda *_: stop.set())
    signal.signal(signal.SIGINT, lambda *_: stop.set())
    threads = [
        threading.Thread(target=a.run, args=(stop,), daemon=True, name=f"agent-{a.state.name}")
        for a in agents
    ]
    for t in threads:
        t.start()
    linked = {a.state.name: False for a in agents}
    noted = {a.state.name: 0 for a in agents}
    with args.report.open("a", buffering=1) as report:
        while not stop.wait(0.05):
            for a in agents:
                for at in a.dials[noted[a.state.name] :]:
                    noted[a.state.name] += 1
                    report.write(json.dumps({"agent": a.state.name, "dial": True, "at": at}) + "\n")
                now = a.connected.is_set()
                if now != linked[a.state.name]:
                    linked[a.state.name] = now
                    line = {"agent": a.state.name, "linked": now, "at": time.time()}
                    report.write(json.dumps(line) + "\n")
    for a in agents:
        a.stop()
    for a in agents:
        a.close(timeout=2)
    return 0


if __name__ == "__main__":
    sys.exit(main())
