"""Real-name verification of patients and practitioner registration.

Revision ID: 0008_verification
Revises: 0007_sharing
"""

import sqlalchemy as sa  # noqa: F401
from alembic import op  # noqa: F401

revision = "0008_verification"
down_revision = "0007_sharing"
branch_labels = None
depends_on = None


def upgrade() -> None:
    pass


def downgrade() -> None:
    pass
