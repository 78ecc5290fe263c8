"""The FHIR store: resources, versions, typed search indexes, bulk export jobs.

Revision ID: 0001_fhir_store
"""

import sqlalchemy as sa
from alembic import op

revision = "0001_fhir_store"
down_revision = None
branch_labels = None
depends_on = None


# PostgreSQL plans a search well only if it knows that a code implies its system and its
# parameter: without these, equal-code counts are underestimated tens of times and a
# common code is fetched whole instead of merged page by page.
EXTENDED_STATISTICS = {
    "st_fhir_idx_token": "ON tenant, res_type, param, system, code FROM fhir_idx_token",
    "st_fhir_idx_reference": "ON tenant, res_type, param, target_type FROM fhir_idx_reference",
}


def upgrade() -> None:
    op.create_table('fhir_export_job',
    sa.Column('job_id', sa.String(length=64), nullable=False),
    sa.Column('tenant', sa.String(length=64), nullable=False),
    sa.Column('status', sa.String(length=16), nullable=False),
    sa.Column('request_url', sa.String(length=2048), nullable=False),
    sa.Column('params', sa.LargeBinary(), nullable=False),
    sa.Column('transaction_ts', sa.BigInteger(), nullable=False),
    sa.Column('progress', sa.String(length=128), nullable=True),
    sa.Column('manifest', sa.LargeBinary(), nullable=True),
    sa.Column('error', sa.String(length=2048), nullable=True),
    sa.Column('created_ts', sa.BigInteger(), nullable=False),
    sa.PrimaryKeyConstraint('job_id')
    )
    op.create_table('fhir_idx_composite',
    sa.Column('rid', sa.BigInteger().with_variant(sa.Integer(), 'sqlite'), nullable=False),
    sa.Column('tenant', sa.String(length=64), nullable=False),
    sa.Column('res_type', sa.String(length=64), nullable=False),
    sa.Column('param', sa.String(length=100), nullable=False),
    sa.Column('a_sys', sa.String(length=512).with_variant(sa.String(length=512, collation='C'), 'postgresql'), nullable=True),
    sa.Column('a_val', sa.String(length=255).with_variant(sa.String(length=255, collation='C'), 'postgresql'), nullable=True),
    sa.Column('a_lo', sa.Float(precision=53), nullable=True),
    sa.Column('a_hi', sa.Float(precision=53), nullable=True),
    sa.Column('b_sys', sa.String(length=512).with_variant(sa.String(length=512, collation='C'), 'postgresql'), nullable=True),
    sa.Column('b_val', sa.String(length=255).with_variant(sa.String(length=255, collation='C'), 'postgresql'), nullable=True),
    sa.Column('b_lo', sa.Float(precision=53), nullable=True),
    sa.Column('b_hi', sa.Float(precision=53), nullable=True),
    sa.Column('c_sys', sa.String(length=512).with_variant(sa.String(length=512, collation='C'), 'postgresql'), nullable=True),
    sa.Column('c_val', sa.String(length=255).with_variant(sa.String(length=255, collation='C'), 'postgresql'), nullable=True),
    sa.Column('c_lo', sa.Float(precision=53), nullable=True),
    sa.Column('c_hi', sa.Float(precision=53), nullable=True)
    )
    op.create_index('ix_fhir_idx_composite_q0', 'fhir_idx_composite', ['tenant', 'res_type', 'param', 'a_val'], unique=False)
    op.create_index('ix_fhir_idx_composite_rid', 'fhir_idx_composite', ['rid', 'param'], unique=False)
    op.create_table('fhir_idx_date',
    sa.Column('rid', sa.BigInteger().with_variant(sa.Integer(), 'sqlite'), nullable=False),
    sa.Column('tenant', sa.String(length=64), nullable=False),
    sa.Column('res_type', sa.String(length=64), nullable=False),
    sa.Column('param', sa.String(length=100), nullable=False),
    sa.Column('low', sa.Float(precision=53), nullable=False),
    sa.Column('high', sa.Float(precision=53), nullable=False)
    )
    op.create_index('ix_fhir_idx_date_q0', 'fhir_idx_date', ['tenant', 'res_type', 'param', 'low', 'rid'], unique=False)
    op.create_index('ix_fhir_idx_date_q1', 'fhir_idx_date', ['tenant', 'res_type', 'param', 'high', 'rid'], unique=False)
    op.create_index('ix_fhir_idx_date_rid', 'fhir_idx_date', ['rid', 'param'], unique=False)
    op.create_table('fhir_idx_number',
    sa.Column('rid', sa.BigInteger().with_variant(sa.Integer(), 'sqlite'), nullable=False),
    sa.Column('tenant', sa.String(length=64), nullable=False),
    sa.Column('res_type', sa.String(length=64), nullable=False),
    sa.Column('param', sa.String(length=100), nullable=False),
    sa.Column('low', sa.Float(precision=53), nullable=False),
    sa.Column('high', sa.Float(precision=53), nullable=False)
    )
    op.create_index('ix_fhir_idx_number_q0', 'fhir_idx_number', ['tenant', 'res_type', 'param', 'low'], unique=False)
    op.create_index('ix_fhir_idx_number_rid', 'fhir_idx_number', ['rid', 'param'], unique=False)
    op.create_table('fhir_idx_quantity',
    sa.Column('rid', sa.BigInteger().with_variant(sa.Integer(), 'sqlite'), nullable=False),
    sa.Column('tenant', sa.String(length=64), nullable=False),
    sa.Column('res_type', sa.String(length=64), nullable=False),
    sa.Column('param', sa.String(length=100), nullable=False),
    sa.Column('system', sa.String(length=512).with_variant(sa.String(length=512, collation='C'), 'postgresql'), nullable=True),
    sa.Column('code', sa.String(length=255).with_variant(sa.String(length=255, collation='C'), 'postgresql'), nullable=True),
    sa.Column('unit', sa.String(length=255).with_variant(sa.String(length=255, collation='C'), 'postgresql'), nullable=True),
    sa.Column('low', sa.Float(precision=53), nullable=False),
    sa.Column('high', sa.Float(precision=53), nullable=False)
    )
    op.create_index('ix_fhir_idx_quantity_q0', 'fhir_idx_quantity', ['tenant', 'res_type', 'param', 'code', 'low'], unique=False)
    op.create_index('ix_fhir_idx_quantity_q1', 'fhir_idx_quantity', ['tenant', 'res_type', 'param', 'low'], unique=False)
    op.create_index('ix_fhir_idx_quantity_rid', 'fhir_idx_quantity', ['rid', 'param'], unique=False)
    op.create_table('fhir_idx_reference',
    sa.Column('rid', sa.BigInteger().with_variant(sa.Integer(), 'sqlite'), nullable=False),
    sa.Column('tenant', sa.String(length=64), nullable=False),
    sa.Column('res_type', sa.String(length=64), nullable=False),
    sa.Column('param', sa.String(length=100), nullable=False),
    sa.Column('target_type', sa.String(length=64), nullable=True),
    sa.Column('target_id', sa.String(length=64).with_variant(sa.String(length=64, collation='C'), 'postgresql'), nullable=True),
    sa.Column('url', sa.String(length=512).with_variant(sa.String(length=512, collation='C'), 'postgresql'), nullable=True)
    )
    op.create_index('ix_fhir_idx_reference_q0', 'fhir_idx_reference', ['tenant', 'res_type', 'param', 'target_id', 'target_type', 'rid'], unique=False)
    op.create_index('ix_fhir_idx_reference_q1', 'fhir_idx_reference', ['tenant', 'res_type', 'param', 'url'], unique=False)
    op.create_index('ix_fhir_idx_reference_rid', 'fhir_idx_reference', ['rid', 'param'], unique=False)
    op.create_table('fhir_idx_string',
    sa.Column('rid', sa.BigInteger().with_variant(sa.Integer(), 'sqlite'), nullable=False),
    sa.Column('tenant', sa.String(length=64), nullable=False),
    sa.Column('res_type', sa.String(length=64), nullable=False),
    sa.Column('param', sa.String(length=100), nullable=False),
    sa.Column('value', sa.String(length=255).with_variant(sa.String(length=255, collation='C'), 'postgresql'), nullable=False),
    sa.Column('exact', sa.String(length=255).with_variant(sa.String(length=255, collation='C'), 'postgresql'), nullable=False)
    )
    op.create_index('ix_fhir_idx_string_q0', 'fhir_idx_string', ['tenant', 'res_type', 'param', 'value', 'rid'], unique=False)
    op.create_index('ix_fhir_idx_string_rid', 'fhir_idx_string', ['rid', 'param'], unique=False)
    op.create_table('fhir_idx_token',
    sa.Column('rid', sa.BigInteger().with_variant(sa.Integer(), 'sqlite'), nullable=False),
    sa.Column('tenant', sa.String(length=64), nullable=False),
    sa.Column('res_type', sa.String(length=64), nullable=False),
    sa.Column('param', sa.String(length=100), nullable=False),
    sa.Column('system', sa.String(length=512).with_variant(sa.String(length=512, collation='C'), 'postgresql'), nullable=True),
    sa.Column('code', sa.String(length=255).with_variant(sa.String(length=255, collation='C'), 'postgresql'), nullable=True),
    sa.Column('text', sa.String(length=255).with_variant(sa.String(length=255, collation='C'), 'postgresql'), nullable=True)
    )
    op.create_index('ix_fhir_idx_token_q0', 'fhir_idx_token', ['tenant', 'res_type', 'param', 'code', 'system', 'rid'], unique=False)
    op.create_index('ix_fhir_idx_token_rid', 'fhir_idx_token', ['rid', 'param'], unique=False)
    op.create_table('fhir_idx_uri',
    sa.Column('rid', sa.BigInteger().with_variant(sa.Integer(), 'sqlite'), nullable=False),
    sa.Column('tenant', sa.String(length=64), nullable=False),
    sa.Column('res_type', sa.String(length=64), nullable=False),
    sa.Column('param', sa.String(length=100), nullable=False),
    sa.Column('value', sa.String(length=512).with_variant(sa.String(length=512, collation='C'), 'postgresql'), nullable=False)
    )
    op.create_index('ix_fhir_idx_uri_q0', 'fhir_idx_uri', ['tenant', 'res_type', 'param', 'value'], unique=False)
    op.create_index('ix_fhir_idx_uri_rid', 'fhir_idx_uri', ['rid', 'param'], unique=False)
    op.create_table('fhir_resource',
    sa.Column('rid', sa.BigInteger().with_variant(sa.Integer(), 'sqlite'), autoincrement=True, nullable=False),
    sa.Column('tenant', sa.String(length=64), nullable=False),
    sa.Column('res_type', sa.String(length=64), nullable=False),
    sa.Column('res_id', sa.String(length=64), nullable=False),
    sa.Column('version_id', sa.Integer(), nullable=False),
    sa.Column('ts', sa.BigInteger(), nullable=False),
    sa.Column('deleted', sa.Boolean(), nullable=False),
    sa.Column('content', sa.LargeBinary(), nullable=False),
    sa.PrimaryKeyConstraint('rid'),
    sa.UniqueConstraint('tenant', 'res_type', 'res_id', name='uq_fhir_resource_identity')
    )
    op.create_index('ix_fhir_resource_type_rid', 'fhir_resource', ['tenant', 'res_type', 'rid'], unique=False)
    op.create_table('fhir_resource_version',
    sa.Column('rid', sa.BigInteger().with_variant(sa.Integer(), 'sqlite'), nullable=False),
    sa.Column('version_id', sa.Integer(), nullable=False),
    sa.Column('tenant', sa.String(length=64), nullable=False),
    sa.Column('res_type', sa.String(length=64), nullable=False),
    sa.Column('res_id', sa.String(length=64), nullable=False),
    sa.Column('ts', sa.BigInteger(), nullable=False),
    sa.Column('deleted', sa.Boolean(), nullable=False),
    sa.Column('method', sa.String(length=8), nullable=False),
    sa.Column('content', sa.LargeBinary(), nullable=False),
    sa.PrimaryKeyConstraint('rid', 'version_id')
    )
    op.create_index('ix_fhir_version_tenant_ts', 'fhir_resource_version', ['tenant', 'ts'], unique=False)
    op.create_index('ix_fhir_version_type_ts', 'fhir_resource_version', ['tenant', 'res_type', 'ts'], unique=False)
    if op.get_bind().dialect.name == "postgresql":
        for name, target in EXTENDED_STATISTICS.items():
            op.execute(f"CREATE STATISTICS {name} (dependencies, mcv) {target}")


def downgrade() -> None:
    if op.get_bind().dialect.name == "postgresql":
        for name in EXTENDED_STATISTICS:
            op.execute(f"DROP STATISTICS IF EXISTS {name}")
    op.drop_index('ix_fhir_version_type_ts', table_name='fhir_resource_version')
    op.drop_index('ix_fhir_version_tenant_ts', table_name='fhir_resource_version')
    op.drop_table('fhir_resource_version')
    op.drop_index('ix_fhir_resource_type_rid', table_name='fhir_resource')
    op.drop_table('fhir_resource')
    op.drop_index('ix_fhir_idx_uri_rid', table_name='fhir_idx_uri')
    op.drop_index('ix_fhir_idx_uri_q0', table_name='fhir_idx_uri')
    op.drop_table('fhir_idx_uri')
    op.drop_index('ix_fhir_idx_token_rid', table_name='fhir_idx_token')
    op.drop_index('ix_fhir_idx_token_q0', table_name='fhir_idx_token')
    op.drop_table('fhir_idx_token')
    op.drop_index('ix_fhir_idx_string_rid', table_name='fhir_idx_string')
    op.drop_index('ix_fhir_idx_string_q0', table_name='fhir_idx_string')
    op.drop_table('fhir_idx_string')
    op.drop_index('ix_fhir_idx_reference_rid', table_name='fhir_idx_reference')
    op.drop_index('ix_fhir_idx_reference_q1', table_name='fhir_idx_reference')
    op.drop_index('ix_fhir_idx_reference_q0', table_name='fhir_idx_reference')
    op.drop_table('fhir_idx_reference')
    op.drop_index('ix_fhir_idx_quantity_rid', table_name='fhir_idx_quantity')
    op.drop_index('ix_fhir_idx_quantity_q1', table_name='fhir_idx_quantity')
    op.drop_index('ix_fhir_idx_quantity_q0', table_name='fhir_idx_quantity')
    op.drop_table('fhir_idx_quantity')
    op.drop_index('ix_fhir_idx_number_rid', table_name='fhir_idx_number')
    op.drop_index('ix_fhir_idx_number_q0', table_name='fhir_idx_number')
    op.drop_table('fhir_idx_number')
    op.drop_index('ix_fhir_idx_date_rid', table_name='fhir_idx_date')
    op.drop_index('ix_fhir_idx_date_q1', table_name='fhir_idx_date')
    op.drop_index('ix_fhir_idx_date_q0', table_name='fhir_idx_date')
    op.drop_table('fhir_idx_date')
    op.drop_index('ix_fhir_idx_composite_rid', table_name='fhir_idx_composite')
    op.drop_index('ix_fhir_idx_composite_q0', table_name='fhir_idx_composite')
    op.drop_table('fhir_idx_composite')
    op.drop_table('fhir_export_job')
