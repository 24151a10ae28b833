"""Agents: the gRPC gateway, the enrollment CA and the `stella-agent` daemon (a later issue)."""
