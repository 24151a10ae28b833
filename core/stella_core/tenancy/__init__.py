"""Tenancy: tenants, people (login roles), product roles, the audit log."""
