"""cursors.value becomes TEXT: the registration's events cursor keeps the event ids of its overlap
and the leads still open (jobs/flagged.py), more than 200 characters

Revision ID: 0004_events
Revises: 0003
"""
import sqlalchemy as sa
from alembic import op

revision = '0004_events'
down_revision = '0003'
branch_labels = None
depends_on = None


def upgrade() -> None:
    with op.batch_alter_table("cursors") as batch:
        batch.alter_column("value", existing_type=sa.String(length=200), type_=sa.Text(),
                           existing_nullable=False)


def downgrade() -> None:
    op.execute("DELETE FROM cursors WHERE name = 'registration.events'")
    with op.batch_alter_table("cursors") as batch:
        batch.alter_column("value", existing_type=sa.Text(), type_=sa.String(length=200),
                           existing_nullable=False)
