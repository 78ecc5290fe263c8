"""The FHIR store: resources, versions, search indexes, export jobs.

Revision ID: 0001_fhir_store
"""

from alembic import op

revision = "0001_fhir_store"
down_revision = None
branch_labels = None
depends_on = None


def _tables():
    from yiyun.fhir.tables import metadata
    import yiyun.fhir.search.tables  # noqa: F401  (index tables share the metadata)

    return metadata


def upgrade() -> None:
    _tables().create_all(op.get_bind())


def downgrade() -> None:
    _tables().drop_all(op.get_bind())
