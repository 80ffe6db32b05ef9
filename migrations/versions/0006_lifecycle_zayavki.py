"""lifecycle_zayavki: per «Заявка», the state last mirrored to its lead; lifecycle_card_cancels:
the cancels pressed on the card that are under way (F7)

Revision ID: 0004_lifecycle
Revises: 0004_registration
"""
from alembic import op
import sqlalchemy as sa
import amo1c_sync.store.models


revision = '0004_lifecycle'
down_revision = '0004_registration'
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table('lifecycle_zayavki',
    sa.Column('ref', sa.String(length=36), nullable=False),
    sa.Column('data_version', sa.String(length=100), nullable=False),
    sa.Column('number', sa.String(length=50), nullable=False),
    sa.Column('lead_id', sa.BigInteger(), nullable=True),
    sa.Column('mirrored', sa.JSON(), nullable=True),
    sa.Column('passed', sa.JSON(), nullable=False),
    sa.Column('done', sa.JSON(), nullable=False),
    sa.Column('pending', sa.JSON(), nullable=True),
    sa.Column('skip_reason', sa.Text(), nullable=True),
    sa.Column('updated_at', amo1c_sync.store.models.UTCDateTime(timezone=True), nullable=False),
    sa.PrimaryKeyConstraint('ref')
    )
    op.create_index('ix_lifecycle_zayavki_lead_id', 'lifecycle_zayavki', ['lead_id'], unique=False)
    op.create_table('lifecycle_card_cancels',
    sa.Column('lead_id', sa.BigInteger(), autoincrement=False, nullable=False),
    sa.Column('zayavka_ref', sa.String(length=36), nullable=True),
    sa.Column('number', sa.String(length=50), nullable=True),
    sa.Column('note', sa.Text(), nullable=True),
    sa.Column('updated_at', amo1c_sync.store.models.UTCDateTime(timezone=True), nullable=False),
    sa.PrimaryKeyConstraint('lead_id')
    )


def downgrade() -> None:
    op.drop_table('lifecycle_card_cancels')
    op.drop_index('ix_lifecycle_zayavki_lead_id', table_name='lifecycle_zayavki')
    op.drop_table('lifecycle_zayavki')
