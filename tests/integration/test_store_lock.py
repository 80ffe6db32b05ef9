import subprocess
import sys
import threading
import time

import pytest
from sqlalchemy import select

from amo1c_sync.store.models import Cursor


def _increment(store, name="counter"):
    """A read-modify-write that loses updates unless exclusive() really serialises."""
    with store.exclusive("test-lock") as s:
        row = s.get(Cursor, name)
        value = int(row.value) if row else 0
        time.sleep(0.002)  # widen the race window; not synchronisation
        if row:
            row.value = str(value + 1)
        else:
            s.add(Cursor(name=name, value=str(value + 1)))


def _value(store, name="counter"):
    with store.session() as s:
        return int(s.scalar(select(Cursor.value).where(Cursor.name == name)))


def test_given_two_threads_when_both_run_exclusive_increments_then_none_is_lost(store):
    _increment(store)  # create the row first
    threads = [threading.Thread(target=lambda: [_increment(store) for _ in range(15)]) for _ in range(2)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout=60)
    assert _value(store) == 31


CHILD = """
import sys, time
from amo1c_sync.store import Store
from amo1c_sync.store.models import Cursor
store = Store(sys.argv[1])
for _ in range(15):
    with store.exclusive("test-lock") as s:
        row = s.get(Cursor, "counter")
        v = int(row.value)
        time.sleep(0.002)
        row.value = str(v + 1)
"""


def test_given_two_processes_when_both_run_exclusive_increments_then_none_is_lost(store):
    _increment(store)
    procs = [subprocess.Popen([sys.executable, "-c", CHILD, store.url]) for _ in range(2)]
    assert [p.wait(timeout=120) for p in procs] == [0, 0]
    assert _value(store) == 31


@pytest.mark.postgres
def test_given_store_exclusive_held_when_the_leader_lock_asks_for_the_same_name_then_it_waits_its_turn(pg_url):
    """Store.exclusive (a transaction lock) and the leader's session lock share PostgreSQL's key
    space: the same name must be the same lock, whichever module derived the key."""
    from amo1c_sync.leader import PgAdvisoryLock
    from amo1c_sync.store import Store

    store = Store(pg_url)
    other = PgAdvisoryLock(pg_url, "amo1c-sync.migrate")
    try:
        with store.exclusive("amo1c-sync.migrate"):
            assert other.try_acquire() is False
        assert other.try_acquire() is True
    finally:
        other.release()
        store.dispose()
