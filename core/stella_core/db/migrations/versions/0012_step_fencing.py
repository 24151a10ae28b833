"""A step's lease carries a fencing token and where its holder runs.

Revision ID: 0012
Revises: 0011

- `lease_generation` grows with every claim; a heartbeat or an outcome is written only under the
  generation that claimed the step, so an attempt whose lease was taken over changes nothing.
- `lease_host` names the holder's host (its boot, PID namespace and user): a worker that can
  see the earlier attempt's processes kills them before it starts; another host waits until the
  expired lease's grace has passed (see workflows/fencing.py).

The columns belong to `workflow.step_runs`, whose writes stay the orchestrator's (0008): the
table-wide INSERT/UPDATE grants and the restrictive policies cover new columns as they are.
"""

from alembic import op

revision = "0012"
down_revision = "0011"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.execute(
        """
ALTER TABLE workflow.step_runs
  ADD COLUMN lease_generation bigint NOT NULL DEFAULT 0,
  ADD COLUMN lease_host text;
"""
    )


def downgrade() -> None:
    op.execute(
        "ALTER TABLE workflow.step_runs DROP COLUMN lease_generation, DROP COLUMN lease_host"
    )
