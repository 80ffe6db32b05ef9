"""Daemon instances and their heartbeats: which process is the leader, which are standbys."""

from __future__ import annotations

import os
import socket
from datetime import datetime, timedelta
from typing import TYPE_CHECKING, Any

from sqlalchemy import delete, select

from amo1c_sync.store.models import DaemonInstance, utcnow

if TYPE_CHECKING:
    from amo1c_sync.store.db import Store

HEARTBEAT_EVERY = 5.0      # seconds between heartbeats of a running daemon
HEARTBEAT_STALE = 30.0     # a heartbeat older than this is a dead (or hung) instance


def _iso(value: datetime | None) -> str | None:
    return value.isoformat(timespec="seconds") if value else None


def instance_id() -> str:
    return f"{socket.gethostname()[:60]}:{os.getpid()}"


def write_heartbeat(store: Store, role: str, *, since: datetime | None = None) -> None:
    now = utcnow()
    with store.session() as s:
        row = s.get(DaemonInstance, instance_id())
        if row is None:
            row = DaemonInstance(instance=instance_id(), host=socket.gethostname()[:60], pid=os.getpid())
            s.add(row)
        row.role, row.since, row.seen_at = role, since, now


def clear_heartbeat(store: Store, *, older_than: float | None = None) -> None:
    """Remove this instance's heartbeat, or (``older_than``) every heartbeat older than that."""
    with store.session() as s:
        if older_than is None:
            s.execute(delete(DaemonInstance).where(DaemonInstance.instance == instance_id()))
        else:
            cutoff = utcnow() - timedelta(seconds=older_than)
            s.execute(delete(DaemonInstance).where(DaemonInstance.seen_at < cutoff))


def clear_other_leaders(store: Store) -> None:
    """Called by a process that has just won the leader lock: any other 'leader' heartbeat is
    from a dead process."""
    with store.session() as s:
        s.execute(delete(DaemonInstance).where(DaemonInstance.instance != instance_id(),
                                               DaemonInstance.role == "leader"))


def instances(store: Store, now: datetime) -> list[dict[str, Any]]:
    """Every heartbeat, the leader first: pid, host, role, at, since, age_s, alive."""
    out = []
    with store.session() as s:
        rows = list(s.scalars(select(DaemonInstance)))
    for row in rows:
        age = (now - row.seen_at).total_seconds()
        item: dict[str, Any] = {"pid": row.pid, "host": row.host, "role": row.role, "at": _iso(row.seen_at),
                                "age_s": round(age, 1), "alive": age <= HEARTBEAT_STALE}
        if row.since is not None:
            item["since"] = _iso(row.since)
        out.append(item)
    out.sort(key=lambda v: (v.get("role") != "leader", v["age_s"]))
    return out
