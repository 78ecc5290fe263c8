"""OAuth 2.0 / SMART clients, authorisation codes and refresh tokens.

Revision ID: 0006_oauth
Revises: 0005_signin
"""

import sqlalchemy as sa  # noqa: F401
from alembic import op  # noqa: F401

revision = "0006_oauth"
down_revision = "0005_signin"
branch_labels = None
depends_on = None


def upgrade() -> None:
    pass


def downgrade() -> None:
    pass
