"""Stella Release Desk core: releases, tenancy, evidence; used by the CLI and desktop."""

__version__ = "0.1.0"
