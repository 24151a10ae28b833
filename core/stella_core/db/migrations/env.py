"""Alembic environment: one environment for every module schema; runs as the owner role."""

from __future__ import annotations

from alembic import context
from sqlalchemy import text

from stella_core.db.schema_sql import META_SCHEMA, OWNER_ROLE

connection = context.config.attributes["connection"]
# Objects created by migrations belong to the NOLOGIN owner, never to a person or the admin.
connection.execute(text(f"SET ROLE {OWNER_ROLE}"))
context.configure(
    connection=connection,
    version_table_schema=META_SCHEMA,
    transaction_per_migration=False,
)
with context.begin_transaction():
    context.run_migrations()
connection.execute(text("RESET ROLE"))
