"""Releases: components, immutable digest-pinned releases, OCI registries and layouts."""
