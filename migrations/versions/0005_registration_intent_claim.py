"""registrations: the intent of a create in flight and the per-lead claim

``create_sent_at``: a «Заявка» create was sent and its answer not yet recorded (a later attempt
waits for it to show up in 1C before creating again). ``claimed_by`` / ``claimed_until``: the
process registering the lead now (one at a time, even while leadership moves).

Revision ID: 0004_registration
Revises: 0004_events
"""
from alembic import op
import sqlalchemy as sa
import amo1c_sync.store.models


revision = '0004_registration'
down_revision = '0004_events'
branch_labels = None
depends_on = None

_utc = amo1c_sync.store.models.UTCDateTime(timezone=True)


def upgrade() -> None:
    with op.batch_alter_table('registrations') as batch:
        batch.add_column(sa.Column('create_sent_at', _utc, nullable=True))
        batch.add_column(sa.Column('claimed_by', sa.String(length=100), nullable=True))
        batch.add_column(sa.Column('claimed_until', _utc, nullable=True))


def downgrade() -> None:
    with op.batch_alter_table('registrations') as batch:
        batch.drop_column('claimed_until')
        batch.drop_column('claimed_by')
        batch.drop_column('create_sent_at')
