"""What a target's runtime needs from its agent's machine (pure: agents.model)."""

from __future__ import annotations

import pytest

from stella_core.agents.model import known_runtimes, runtime_problem, runtime_program


@pytest.mark.parametrize(
    ("runtime", "program"),
    [
        ("podman-compose", "podman-compose"),
        ("/usr/local/bin/podman-compose", "podman-compose"),
        ("docker compose", "docker compose"),
        ("/usr/bin/docker compose --progress plain", "docker compose"),
        ("docker-compose", None),  # not one the agents report: nothing is claimed
        ("nerdctl compose", None),
        ("'unbalanced", None),
    ],
)
def test_the_program_a_runtime_runs(runtime: str, program: str | None) -> None:
    assert runtime_program(runtime) == program


def test_a_missing_compose_tool_or_engine_is_named_for_the_agent() -> None:
    assert (
        runtime_problem("podman-compose", "local", ())
        == "podman-compose is not installed on the machine of agent local"
    )
    assert (
        runtime_problem("podman-compose", "edge", ("podman-compose",))
        == "podman is not installed on the machine of agent edge"
    )
    assert (
        runtime_problem("docker compose", "edge", ("podman-compose", "podman", "docker"))
        == "docker compose is not installed on the machine of agent edge"
    )
    assert runtime_problem("podman-compose", "edge", ("podman-compose", "podman")) is None
    assert runtime_problem("docker compose", "edge", ("docker compose", "docker")) is None


def test_nothing_is_claimed_before_the_agent_has_said() -> None:
    assert runtime_problem("podman-compose", "edge", None) is None


def test_reported_runtimes_are_kept_to_known_names_in_order() -> None:
    assert known_runtimes(["docker", "evil; rm -rf /", "podman-compose", "docker"]) == (
        "podman-compose",
        "docker",
    )
