"""one retry record for registrations and payment totals

Moves the failure bookkeeping (error, attempts, next_attempt_at) of failed registrations and
failed lead totals into ``retry_items``, then drops those columns. A registration that had given
up (no next attempt) arrives as ``given_up`` with no recorded version, so the first poll that sees
the lead tries it once more and records the version it failed at.

Revision ID: 0002
Revises: 0001
"""
from alembic import op
import sqlalchemy as sa
import amo1c_sync.store.models


revision = '0002'
down_revision = '0001'
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table('retry_items',
    sa.Column('kind', sa.String(length=20), nullable=False),
    sa.Column('lead_id', sa.BigInteger(), autoincrement=False, nullable=False),
    sa.Column('state', sa.String(length=20), nullable=False),
    sa.Column('error', sa.Text(), nullable=False),
    sa.Column('code', sa.String(length=100), nullable=True),
    sa.Column('attempts', sa.Integer(), nullable=False),
    sa.Column('next_attempt_at', amo1c_sync.store.models.UTCDateTime(timezone=True), nullable=True),
    sa.Column('version', sa.String(length=100), nullable=True),
    sa.Column('updated_at', amo1c_sync.store.models.UTCDateTime(timezone=True), nullable=False),
    sa.PrimaryKeyConstraint('kind', 'lead_id')
    )
    op.execute(
        "INSERT INTO retry_items (kind, lead_id, state, error, attempts, next_attempt_at, updated_at) "
        "SELECT 'registration', lead_id, "
        "CASE WHEN next_attempt_at IS NULL THEN 'given_up' ELSE 'retrying' END, "
        "COALESCE(error, ''), attempts, next_attempt_at, updated_at "
        "FROM registrations WHERE status = 'failed'")
    op.execute("UPDATE registrations SET error = NULL WHERE status = 'failed'")
    op.execute(
        "INSERT INTO retry_items (kind, lead_id, state, error, attempts, next_attempt_at, updated_at) "
        "SELECT 'payment', lead_id, 'retrying', COALESCE(error, ''), attempts, next_attempt_at, updated_at "
        "FROM lead_totals WHERE status = 'failed'")
    with op.batch_alter_table('registrations', schema=None) as batch_op:
        batch_op.drop_column('attempts')
        batch_op.drop_column('next_attempt_at')
    with op.batch_alter_table('lead_totals', schema=None) as batch_op:
        batch_op.drop_column('error')
        batch_op.drop_column('attempts')
        batch_op.drop_column('next_attempt_at')


def downgrade() -> None:
    utc = amo1c_sync.store.models.UTCDateTime(timezone=True)
    with op.batch_alter_table('lead_totals', schema=None) as batch_op:
        batch_op.add_column(sa.Column('next_attempt_at', utc, nullable=True))
        batch_op.add_column(sa.Column('attempts', sa.Integer(), nullable=False, server_default='0'))
        batch_op.add_column(sa.Column('error', sa.Text(), nullable=True))
    with op.batch_alter_table('registrations', schema=None) as batch_op:
        batch_op.add_column(sa.Column('next_attempt_at', utc, nullable=True))
        batch_op.add_column(sa.Column('attempts', sa.Integer(), nullable=False, server_default='0'))
    for table, kind in (('registrations', 'registration'), ('lead_totals', 'payment')):
        for column in ('error', 'attempts', 'next_attempt_at'):
            op.execute(f"UPDATE {table} SET {column} = (SELECT r.{column} FROM retry_items r "
                       f"WHERE r.kind = '{kind}' AND r.lead_id = {table}.lead_id) "
                       f"WHERE EXISTS (SELECT 1 FROM retry_items r WHERE r.kind = '{kind}' "
                       f"AND r.lead_id = {table}.lead_id)")
    op.drop_table('retry_items')
