"""A PostgreSQL that stops answering, behind a real TCP proxy on loopback: store operations fail
within their limit with a clear error and a log line instead of hanging, the store works again
once PostgreSQL answers, and a standby takes the leader lock within seconds of the leader's path
freezing or dying, with the old leader fenced first."""

from __future__ import annotations

import threading
import time

import pytest
from sqlalchemy import text
from sqlalchemy.exc import OperationalError
from structlog.testing import capture_logs

from amo1c_sync.leader import PgAdvisoryLock
from amo1c_sync.store import Store
from tests.support import wait_until

from tests.support.tcp_proxy import TcpProxy

pytestmark = pytest.mark.postgres


@pytest.fixture
def proxy():
    with TcpProxy() as p:
        yield p


def _select_one(store) -> int:
    with store.session() as s:
        return s.execute(text("SELECT 1")).scalar_one()


def _in_thread(func):
    """Run ``func`` in a thread; the returned dict gets 'result' or 'error' when it ends."""
    box: dict = {}

    def run():
        try:
            box["result"] = func()
        except Exception as exc:  # noqa: BLE001
            box["error"] = exc
    threading.Thread(target=run, daemon=True).start()
    return box


def test_given_a_frozen_postgresql_when_a_store_operation_runs_then_it_fails_within_its_limit_and_logs(
        pg_url, proxy):
    store = Store(proxy.url_for(pg_url), timeout=2)
    try:
        with store.session() as s:
            s.execute(text("SELECT 1"))
            assert s.execute(text("SHOW statement_timeout")).scalar_one() == "2s"
            assert s.execute(text("SHOW lock_timeout")).scalar_one() == "2s"
            proxy.freeze()
            with capture_logs() as logs:
                box = _in_thread(lambda: s.execute(text("SELECT 2")).scalar_one())
                wait_until(lambda: box, timeout=30, message="the frozen statement to give up")
            s.rollback()
        assert isinstance(box.get("error"), OperationalError), box
        assert "PostgreSQL did not answer within 4 s" in str(box["error"])
        assert any(e["event"] == "store.not_answering" and e["log_level"] == "error" for e in logs), logs

        # a new operation while still frozen fails too (the broken connection is not reused)
        box = _in_thread(lambda: _select_one(store))
        wait_until(lambda: box, timeout=30, message="the next operation to give up")
        assert isinstance(box.get("error"), OperationalError), box

        proxy.thaw()
        assert _select_one(store) == 1
    finally:
        proxy.thaw()
        store.dispose()


def _race_for_the_lock(proxy, pg_url, name: str, break_path) -> dict[str, float]:
    leader = PgAdvisoryLock(proxy.url_for(pg_url), name=name, lease=6)
    standby = PgAdvisoryLock(pg_url, name=name, lease=6)
    try:
        assert leader.try_acquire()
        assert not standby.try_acquire()
        started = time.monotonic()
        break_path()
        seen: dict[str, float] = {}

        def progress():
            if "fenced" not in seen and not leader.still_held():
                seen["fenced"] = time.monotonic() - started
            if "acquired" not in seen and standby.try_acquire():
                seen["acquired"] = time.monotonic() - started
            return len(seen) == 2
        wait_until(progress, timeout=60, interval=0.1, message="the leader fenced and the standby leading")
        print(f"{name}: leader fenced after {seen['fenced']:.2f} s, standby leader after {seen['acquired']:.2f} s")
        return seen
    finally:
        proxy.thaw()
        standby.release()
        leader.release()


def test_given_the_leaders_path_freezes_when_a_standby_tries_then_it_leads_within_seconds_after_the_leader_stopped(
        pg_url, proxy):
    seen = _race_for_the_lock(proxy, pg_url, "test-freeze", proxy.freeze)
    # the server ends the silent session only after the lease; the leader gives up long before
    assert seen["fenced"] < seen["acquired"]


def test_given_the_leaders_path_is_cut_when_a_standby_tries_then_it_leads_at_once(pg_url, proxy):
    seen = _race_for_the_lock(proxy, pg_url, "test-cut", proxy.cut)
    assert set(seen) == {"fenced", "acquired"}


def test_given_a_lock_connection_when_opened_then_the_server_ends_it_soon_after_its_client_is_gone(pg_url):
    lock = PgAdvisoryLock(pg_url, name="test-settings", lease=15)
    try:
        assert lock.try_acquire()
        shown = {name: lock._conn.execute(f"SHOW {name}").fetchone()[0]
                 for name in ("tcp_keepalives_idle", "tcp_keepalives_interval", "tcp_keepalives_count",
                              "tcp_user_timeout", "idle_session_timeout")}
    finally:
        lock.release()
    assert shown == {"tcp_keepalives_idle": "7", "tcp_keepalives_interval": "2",
                     "tcp_keepalives_count": "3", "tcp_user_timeout": "15000",
                     "idle_session_timeout": "15s"}
