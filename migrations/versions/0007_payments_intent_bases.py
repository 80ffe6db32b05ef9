"""payments: the push intent, each document's base «Заявка», and the known bases

``lead_totals.pushing_total`` is the total of a PATCH sent and not yet confirmed;
``onec_documents.base_ref`` and the table ``onec_bases`` keep each «Заявка» -> lead mapping with
the DataVersion it was read at. Existing documents get no base: the next scan re-evaluates them.

Revision ID: 0004_payments
Revises: 0004_lifecycle
"""
from alembic import op
import sqlalchemy as sa
import amo1c_sync.store.models


revision = '0004_payments'
down_revision = '0004_lifecycle'
branch_labels = None
depends_on = None

_utc = amo1c_sync.store.models.UTCDateTime(timezone=True)
_money = amo1c_sync.store.models.Money(length=40)


def upgrade() -> None:
    op.create_table('onec_bases',
    sa.Column('ref', sa.String(length=36), nullable=False),
    sa.Column('data_version', sa.String(length=100), nullable=False),
    sa.Column('lead_raw', sa.String(length=200), nullable=True),
    sa.Column('doc_date', _utc, nullable=True),
    sa.Column('updated_at', _utc, nullable=False),
    sa.PrimaryKeyConstraint('ref')
    )
    with op.batch_alter_table('lead_totals') as batch:
        batch.add_column(sa.Column('pushing_total', _money, nullable=True))
    with op.batch_alter_table('onec_documents') as batch:
        batch.add_column(sa.Column('base_ref', sa.String(length=36), nullable=True))
        batch.create_index('ix_onec_documents_base_ref', ['base_ref'], unique=False)
        batch.create_index('ix_onec_documents_doc_date', ['doc_date'], unique=False)


def downgrade() -> None:
    with op.batch_alter_table('onec_documents') as batch:
        batch.drop_index('ix_onec_documents_doc_date')
        batch.drop_index('ix_onec_documents_base_ref')
        batch.drop_column('base_ref')
    with op.batch_alter_table('lead_totals') as batch:
        batch.drop_column('pushing_total')
    op.drop_table('onec_bases')
