"""Care relationships, guardianship and break-glass grants.

Revision ID: 0007_sharing
Revises: 0006_oauth
"""

import sqlalchemy as sa  # noqa: F401
from alembic import op  # noqa: F401

revision = "0007_sharing"
down_revision = "0006_oauth"
branch_labels = None
depends_on = None


def upgrade() -> None:
    pass


def downgrade() -> None:
    pass
