"""doctor options and daemon instances get their own tables

Moves the rows ``directory.doctor:<ref>`` (doctor -> «Врач» option id) and
``daemon.heartbeat.<host:pid>`` (JSON heartbeats) out of the generic ``cursors`` table; what is
left there is the two cursors. A heartbeat that does not parse is dropped (the daemon writes a
new one within seconds).

Revision ID: 0003
Revises: 0002
"""
import json
from datetime import datetime, timezone

from alembic import op
import sqlalchemy as sa
import amo1c_sync.store.models


revision = '0003'
down_revision = '0002'
branch_labels = None
depends_on = None

LINK_PREFIX = "directory.doctor:"
HEARTBEAT_PREFIX = "daemon.heartbeat."

_utc = amo1c_sync.store.models.UTCDateTime(timezone=True)
cursors = sa.table("cursors", sa.column("name", sa.String), sa.column("value", sa.String),
                   sa.column("updated_at", _utc))


def _at(text):
    try:
        at = datetime.fromisoformat(text)
    except (TypeError, ValueError):
        return None
    return at if at.tzinfo else at.replace(tzinfo=timezone.utc)


def upgrade() -> None:
    options = op.create_table('doctor_options',
    sa.Column('doctor_ref', sa.String(length=36), nullable=False),
    sa.Column('enum_id', sa.BigInteger(), nullable=False),
    sa.Column('updated_at', _utc, nullable=False),
    sa.PrimaryKeyConstraint('doctor_ref')
    )
    instances = op.create_table('daemon_instances',
    sa.Column('instance', sa.String(length=100), nullable=False),
    sa.Column('host', sa.String(length=60), nullable=False),
    sa.Column('pid', sa.Integer(), nullable=False),
    sa.Column('role', sa.String(length=20), nullable=False),
    sa.Column('since', _utc, nullable=True),
    sa.Column('seen_at', _utc, nullable=False),
    sa.PrimaryKeyConstraint('instance')
    )
    conn = op.get_bind()
    rows = conn.execute(sa.select(cursors.c.name, cursors.c.value, cursors.c.updated_at)).all()
    links, beats = [], []
    for name, value, updated_at in rows:
        if name.startswith(LINK_PREFIX) and (value or "").strip().isdigit():
            links.append({"doctor_ref": name[len(LINK_PREFIX):], "enum_id": int(value),
                          "updated_at": updated_at})
        elif name.startswith(HEARTBEAT_PREFIX):
            try:
                beat = json.loads(value)
                beats.append({"instance": name[len(HEARTBEAT_PREFIX):][:100], "host": str(beat["host"])[:60],
                              "pid": int(beat["pid"]), "role": str(beat["role"])[:20],
                              "since": _at(beat.get("since")), "seen_at": updated_at})
            except (ValueError, KeyError, TypeError):
                pass
    if links:
        op.bulk_insert(options, links)
    if beats:
        op.bulk_insert(instances, beats)
    conn.execute(cursors.delete().where(cursors.c.name.like(LINK_PREFIX + "%")
                                        | cursors.c.name.like(HEARTBEAT_PREFIX + "%")))


def downgrade() -> None:
    conn = op.get_bind()
    options = sa.table("doctor_options", sa.column("doctor_ref", sa.String), sa.column("enum_id", sa.BigInteger),
                       sa.column("updated_at", _utc))
    rows = [{"name": LINK_PREFIX + ref, "value": str(enum_id), "updated_at": at}
            for ref, enum_id, at in conn.execute(sa.select(options.c.doctor_ref, options.c.enum_id,
                                                           options.c.updated_at))]
    if rows:
        op.bulk_insert(cursors, rows)
    op.drop_table('daemon_instances')
    op.drop_table('doctor_options')
