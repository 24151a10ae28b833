"""Exceptions to the schedule gate: an emergency change outside the deployment windows.

Revision ID: 0006
Revises: 0005

An admin's signed, expiring exception could waive only the predecessor gate; it may now waive
the schedule gate too (the freeze gate has its own per-freeze `allow` list).
"""

from alembic import op

revision = "0006"
down_revision = "0005"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.execute(
        "ALTER TABLE promotion.exceptions DROP CONSTRAINT exceptions_gate_check,"
        " ADD CONSTRAINT exceptions_gate_check CHECK (gate IN ('predecessor', 'schedule'))"
    )


def downgrade() -> None:
    op.execute(
        "ALTER TABLE promotion.exceptions DROP CONSTRAINT exceptions_gate_check,"
        " ADD CONSTRAINT exceptions_gate_check CHECK (gate IN ('predecessor'))"
    )
