"""Benchmarks use the same real services as the integration tests."""

from tests.integration.conftest import registry  # noqa: F401  (re-exported fixture)
