"""sd_notify, the lock file, request metrics: the daemon's small parts."""

from __future__ import annotations

import os

import requests

from amo1c_sync import metrics
from amo1c_sync.leader import FileLock
from amo1c_sync.store.db import advisory_lock_key as lock_key
from amo1c_sync.sdnotify import Notifier, watchdog_interval


def test_given_no_notify_socket_then_notifying_is_a_no_op(monkeypatch):
    monkeypatch.delenv("NOTIFY_SOCKET", raising=False)
    assert Notifier().ready() is False


def test_given_watchdog_usec_then_the_ping_interval_is_half_of_it(monkeypatch):
    monkeypatch.setenv("WATCHDOG_USEC", "60000000")
    monkeypatch.setenv("WATCHDOG_PID", str(os.getpid()))
    assert watchdog_interval() == 30
    monkeypatch.setenv("WATCHDOG_PID", "1")
    assert watchdog_interval() is None
    monkeypatch.delenv("WATCHDOG_USEC")
    assert watchdog_interval() is None


def test_given_the_lock_file_removed_then_leadership_is_reported_lost(tmp_path):
    lock = FileLock(tmp_path / "x.lock")
    assert lock.try_acquire()
    (tmp_path / "x.lock").unlink()
    assert lock.still_held() is False


def test_given_the_lock_names_when_keyed_then_the_keys_are_the_released_ones_and_one_derivation_serves_both():
    """A changed key would let an old and a new daemon both lead during an upgrade; the leader
    module and Store.exclusive take their keys from the one function."""
    import amo1c_sync.leader as leader

    pinned = {"amo1c-sync.leader": -7302225382066811879, "amo1c-sync.migrate": 8815983806893754438,
              "amocrm-token": 8870785231583955774}
    assert {name: lock_key(name) for name in pinned} == pinned
    assert leader.advisory_lock_key is lock_key


def test_given_an_object_without_a_transport_then_it_is_not_instrumented():
    class Gw:
        def __init__(self):
            self._http = requests.Session()   # a private session is not searched for

    assert metrics.instrument_gateway(Gw(), "amocrm") is False
    assert metrics.instrument_gateway(object(), "x") is False


def test_given_the_real_gateways_then_their_transports_get_the_metrics_hook():
    from amo1c_sync.amocrm import AmoCRM
    from amo1c_sync.onec import OneC

    onec = OneC("http://127.0.0.1:9/base/odata/standard.odata", "u", "p")
    amo = AmoCRM("http://127.0.0.1:9", token_manager=None)
    assert onec.transport.on_response is None
    assert amo.transport.on_response is None
    assert metrics.instrument_gateway(onec, "1c")
    assert metrics.instrument_gateway(amo, "amocrm")
    assert onec.transport.on_response is not None
    assert amo.transport.on_response is not None
