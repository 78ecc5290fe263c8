"""Web sessions, second factors, one-time codes and sign-in attempts.

Revision ID: 0005_signin
Revises: 0004_identity
"""

import sqlalchemy as sa  # noqa: F401
from alembic import op  # noqa: F401

revision = "0005_signin"
down_revision = "0004_identity"
branch_labels = None
depends_on = None


def upgrade() -> None:
    pass


def downgrade() -> None:
    pass
