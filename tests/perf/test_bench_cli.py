"""Benchmark: a command on a warm embedded server against `stella --help`.

`stella --help` is the floor of any command (an interpreter starting and a parser built); the
target is `stella release list --output json` within 1.5x of it once the embedded server runs
(it lingers between commands) and the home's warm command process has the core imported. Also
measured: the same command in its own process (STELLA_CLI_WARM=0). All in this run, as median
wall time of several calls; prints the ratios and never asserts wall-clock times.
"""

from __future__ import annotations

import os
import shutil
import statistics
import subprocess
import sys
import time
from pathlib import Path

import pytest

from stella_core.db.embedded import SYSTEM_DIR, EmbeddedPostgres

pytestmark = pytest.mark.integration

ROUNDS = 7


def _command() -> list[str]:
    script = Path(sys.executable).with_name("stella")  # what a person runs
    return [str(script)] if script.exists() else [sys.executable, "-m", "stella_core.cli.main"]


def _median_seconds(env: dict[str, str], *args: str) -> float:
    times = []
    for _ in range(ROUNDS):
        start = time.perf_counter()
        result = subprocess.run(
            [*_command(), *args], env=env, capture_output=True, text=True, check=False
        )
        times.append(time.perf_counter() - start)
        assert result.returncode == 0, result.stderr
    return statistics.median(times)


def test_release_list_on_a_warm_embedded_server_against_help(tmp_path: Path) -> None:
    home = tmp_path / "home"
    env = {k: v for k, v in os.environ.items() if k != "STELLA_DATABASE_URL"}
    env["STELLA_HOME"] = str(home)
    env["STELLA_EMBEDDED_LINGER"] = "600"
    try:
        cold_start = time.perf_counter()
        upgraded = subprocess.run(
            [*_command(), "db", "upgrade"], env=env, capture_output=True, text=True, check=False
        )
        cold = time.perf_counter() - cold_start
        assert upgraded.returncode == 0, upgraded.stderr
        assert EmbeddedPostgres(home, linger=0).is_running()  # warm from here on
        # The home's warm command process (started by that command) has the core imported.
        deadline = time.monotonic() + 120
        while not (home / "pg" / "cli.sock").exists() and time.monotonic() < deadline:
            time.sleep(0.2)
        warm = (home / "pg" / "cli.sock").exists()
        cold_list = _median_seconds(
            {**env, "STELLA_CLI_WARM": "0"}, "release", "list", "-o", "json"
        )
        help_s = _median_seconds(env, "--help")
        listed = _median_seconds(env, "release", "list", "--output", "json")
        print(
            f"\n[bench] first command (starts the server) {cold:.3f}s; on the warm server: "
            f"stella --help {help_s:.3f}s, stella release list --output json {listed:.3f}s "
            f"({'warm command process' if warm else 'no warm command process'}), "
            f"ratio x{listed / help_s:.2f} (target x1.5); in its own process "
            f"(STELLA_CLI_WARM=0) {cold_list:.3f}s, ratio x{cold_list / help_s:.2f}"
        )
    finally:
        server = EmbeddedPostgres(home, linger=0)
        if server.is_running():
            server.stop()
        cluster = server.data_dir.parent
        if cluster.is_relative_to(SYSTEM_DIR / "clusters"):
            shutil.rmtree(cluster, ignore_errors=True)
