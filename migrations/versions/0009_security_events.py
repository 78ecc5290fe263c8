"""Security events raised by abuse signals.

Revision ID: 0009_security_events
Revises: 0008_verification
"""

import sqlalchemy as sa  # noqa: F401
from alembic import op  # noqa: F401

revision = "0009_security_events"
down_revision = "0008_verification"
branch_labels = None
depends_on = None


def upgrade() -> None:
    pass


def downgrade() -> None:
    pass
