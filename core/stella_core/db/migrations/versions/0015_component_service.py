"""Components carry their compose service: a fragment with everything but `image` (issue 11 §4).

Revision ID: 0015
Revises: 0014

`release.components.service` (jsonb, NULL when the component has none). People's writes are
governed as the table's other columns are: the existing grants and the tenant policies (release
managers and admins write). The service checks the fragment in full (`releases.compose`) and the
lockfile renderer checks it again; the constraint keeps a raw write from storing what can never
be a fragment at all: a non-object, an `image` or `build` key (the release pins the image by
digest), or more than 64 KiB.
"""

from alembic import op

revision = "0015"
down_revision = "0014"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.execute(
        """
ALTER TABLE release.components ADD COLUMN service jsonb;
ALTER TABLE release.components ADD CONSTRAINT components_service_fragment CHECK (
  service IS NULL OR (
    jsonb_typeof(service) = 'object'
    AND NOT service ? 'image'
    AND NOT service ? 'build'
    AND octet_length(service::text) <= 65536
  )
);
"""
    )


def downgrade() -> None:
    op.execute(
        """
ALTER TABLE release.components DROP CONSTRAINT components_service_fragment;
ALTER TABLE release.components DROP COLUMN service;
"""
    )
