"""Knowledge base: imported and edited entries, revision history, answer feedback.

Revision ID: 0002_knowledge
Revises: 0001_fhir_store
"""

from alembic import op

revision = "0002_knowledge"
down_revision = "0001_fhir_store"
branch_labels = None
depends_on = None


def _tables():
    from yiyun.knowledge.models import metadata

    return metadata


def upgrade() -> None:
    _tables().create_all(op.get_bind())


def downgrade() -> None:
    _tables().drop_all(op.get_bind())
