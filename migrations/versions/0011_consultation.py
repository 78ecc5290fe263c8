"""Online consultations: sessions, messages and uploads.

Revision ID: 0011_consultation
Revises: 0010_hospital
"""

import sqlalchemy as sa  # noqa: F401
from alembic import op  # noqa: F401

revision = "0011_consultation"
down_revision = "0010_hospital"
branch_labels = None
depends_on = None


def upgrade() -> None:
    pass


def downgrade() -> None:
    pass
