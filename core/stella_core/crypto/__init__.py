"""Shared cryptography: secrets at rest (and, later, signing keys)."""
