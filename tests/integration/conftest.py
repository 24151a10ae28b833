"""Real docker-registry fixtures (session-scoped: one process per auth mode per run)."""

from __future__ import annotations

import secrets
from collections.abc import Iterator

import pytest

from tests.support.registry import RewritingProxy, RunningRegistry, free_port, start_registry


def _password() -> str:
    # Distinctive and random so a leak is easy to grep for in reprs and messages.
    return "pw-" + secrets.token_urlsafe(18)


@pytest.fixture(scope="session")
def registry(tmp_path_factory: pytest.TempPathFactory) -> Iterator[RunningRegistry]:
    """docker-registry without auth; yields RunningRegistry (.url, .stop())."""
    running = start_registry(tmp_path_factory.mktemp("registry"))
    yield running
    running.stop()


@pytest.fixture(scope="session")
def registry_basic(tmp_path_factory: pytest.TempPathFactory) -> Iterator[RunningRegistry]:
    """docker-registry with htpasswd Basic auth; .username/.password/.auth are set."""
    running = start_registry(
        tmp_path_factory.mktemp("registry-basic"),
        auth="basic",
        username="release-bot",
        password=_password(),
    )
    yield running
    running.stop()


@pytest.fixture(scope="session")
def registry_token(tmp_path_factory: pytest.TempPathFactory) -> Iterator[RunningRegistry]:
    """docker-registry with token auth and our ES256 token server (.token_server.hits)."""
    running = start_registry(
        tmp_path_factory.mktemp("registry-token"),
        auth="token",
        username="deployer",
        password=_password(),
    )
    yield running
    running.stop()


@pytest.fixture(scope="session")
def registry_tls(tmp_path_factory: pytest.TempPathFactory) -> Iterator[RunningRegistry]:
    """docker-registry over HTTPS with a self-signed certificate (.ca_cert)."""
    running = start_registry(tmp_path_factory.mktemp("registry-tls"), tls=True)
    yield running
    running.stop()


@pytest.fixture
def rewriting_proxy(registry: RunningRegistry) -> Iterator[RewritingProxy]:
    """A loopback proxy in front of `registry` whose answers a test can alter."""
    proxy = RewritingProxy(registry.url)
    yield proxy
    proxy.stop()


@pytest.fixture
def closed_port_url() -> str:
    """A loopback URL where nothing listens (the port is bound, then released)."""
    return f"http://127.0.0.1:{free_port()}"
