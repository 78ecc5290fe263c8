"""Hospital services: booking rules, schedules and queue numbers.

Revision ID: 0010_hospital
Revises: 0009_security_events
"""

import sqlalchemy as sa  # noqa: F401
from alembic import op  # noqa: F401

revision = "0010_hospital"
down_revision = "0009_security_events"
branch_labels = None
depends_on = None


def upgrade() -> None:
    pass


def downgrade() -> None:
    pass
