"""Settings the trust work needs first: a tenant says whether it is a demo, and whether script
steps may run without a sandbox.

Revision ID: 0007
Revises: 0006

- `tenancy.tenants.demo`: set only through the administrative connection (`stella demo seed`);
  the desktop keeps its one-click person switch only where the database says it is a demo.
- `workflow.settings.allow_unsandboxed`: an admin's explicit choice to let the local executor run
  script steps where no sandbox is available (off unless an admin turns it on; shown in the desk).
"""

from alembic import op

revision = "0007"
down_revision = "0006"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.execute(
        """
ALTER TABLE tenancy.tenants ADD COLUMN demo boolean NOT NULL DEFAULT false;
ALTER TABLE workflow.settings ADD COLUMN allow_unsandboxed boolean NOT NULL DEFAULT false;
"""
    )


def downgrade() -> None:
    op.execute(
        "ALTER TABLE workflow.settings DROP COLUMN allow_unsandboxed;"
        " ALTER TABLE tenancy.tenants DROP COLUMN demo;"
    )
