"""Leadership moves while a «Заявка» create is in flight: two real daemons on one PostgreSQL, each
through its own TCP proxy. The leader sends the create (1C holds it 5 s before carrying it out);
its store connection is cut, so its lock goes and the standby takes over; the old leader's create
still lands in 1C. Ten times, alternating leaders: no lead may end with two «Заявки»."""

from __future__ import annotations

import random
import signal

import pytest
import requests
from sqlalchemy.exc import DBAPIError

from amo1c_sync.sandbox.amocrm_emulator import AmoCRMEmulator
from amo1c_sync.sandbox.onec_emulator import OneCEmulator
from amo1c_sync.store import Store
from amo1c_sync.store.instances import instances
from amo1c_sync.store.models import utcnow
from tests.support import wait_until
from tests.support.daemon import kill_quietly, start_daemon, stop
from tests.support.drill import Schedule
from tests.support.e2e import seed_lead, zayavki
from tests.support.pg import temporary_database
from tests.support.tcp_proxy import TcpProxy

pytestmark = pytest.mark.postgres

TOKEN = "two-leaders-long-lived-token-0123456789"
CREATE_PATH = "/odata/standard.odata/Document_Заявка"
HOLD_MS = 5000
TRIES = 10


def _ini(path, store_url, amo, onec):
    path.write_text(
        f"[store]\nurl = {store_url}\ntimeout = 2s\nlock_lease = 8s\n"
        "[sync]\nregistration_interval = 1s\npayments_interval = 1h\ndirectory_interval = 1h\n"
        "[logging]\nformat = json\nlevel = INFO\n"
        f"[amocrm]\nbase_url = {amo.url}\nlong_lived_token = {TOKEN}\n"
        f"[onec]\nbase_url = {onec.url}/odata/standard.odata\nusername = {onec.username}\n"
        f"password = {onec.password}\nread_timeout = 30s\n", encoding="utf-8")
    path.chmod(0o600)
    return path


class DuplicateZayavki(AssertionError):
    """The outcome under test (and only it: a broken rig must not pass as the expected failure)."""


def _alive(store) -> list[dict]:
    """The live instances, as `status` reads them; none before the daemons have migrated."""
    try:
        return [i for i in instances(store, utcnow()) if i["alive"]]
    except DBAPIError:
        return []


def _leader_pid(store) -> int | None:
    leader = next((i for i in _alive(store) if i["role"] == "leader"), None)
    return leader["pid"] if leader else None


def _log(onec) -> list[dict]:
    return requests.get(onec.url + "/_sandbox/requests", timeout=5).json()["log"]


def _create_after(onec, seq: int) -> dict | None:
    """The first «Заявка» create 1C received after request ``seq`` (the log keeps the last ones)."""
    return next((e for e in _log(onec) if e["seq"] > seq and e["method"] == "POST"
                 and e["path"] == CREATE_PATH), None)


def _answered(onec, seq: int) -> bool:
    return any(e["seq"] == seq and e["status"] is not None for e in _log(onec))


def _new_leader(store, old: int) -> int | None:
    pid = _leader_pid(store)
    return pid if pid not in (None, old) else None


def _one_try(onec, amo, store, proxies: dict[int, TcpProxy], slot) -> int:
    """One lead registered across a move of leadership; how many «Заявки» it got."""
    old = wait_until(lambda: _leader_pid(store), timeout=60, message="a leader")
    seen = max((e["seq"] for e in _log(onec)), default=0)
    requests.post(onec.url + "/_sandbox/faults", json={"count": 1, "delay_ms": HOLD_MS, "status": None,
                                                       "method": "POST", "path": CREATE_PATH},
                  timeout=5).raise_for_status()
    lead = seed_lead(amo, time=slot.time_text, doctor=slot.doctor, day=slot.date_text)
    held = wait_until(lambda: _create_after(onec, seen), timeout=60, message="the leader's create reaching 1C")
    proxies[old].cut()          # the old leader's store connections die, its lock with them
    proxies[old].freeze()       # and it cannot reconnect
    try:
        wait_until(lambda: _new_leader(store, old), timeout=60, message="the standby taking the lock")
        wait_until(lambda: zayavki(onec, lead), timeout=60, message="a «Заявка» for the lead")
        # the held create is answered (carried out) at the latest HOLD_MS after it arrived
        wait_until(lambda: _answered(onec, held["seq"]), timeout=60, message="the old leader's create carried out")
    finally:
        proxies[old].thaw()
    # whatever the new leader does next with this lead has had a cycle to happen
    wait_until(lambda: not _flagged(amo, lead), timeout=60, message="the lead's flag cleared")
    return len([z for z in zayavki(onec, lead) if not z["deletion_mark"]])


def _flagged(amo, lead_id) -> bool:
    card = requests.get(f"{amo.url}/_sandbox/leads/{lead_id}", timeout=5).json()
    return bool(card["fields"].get("Зарегистрировать в 1С"))


@pytest.mark.timeout(900)
def test_given_leadership_moves_during_a_create_when_ten_leads_are_registered_then_none_gets_two_zayavki(
        tmp_path, pg_url):
    with AmoCRMEmulator(long_lived_token=TOKEN) as amo, OneCEmulator() as onec, \
            temporary_database() as url, TcpProxy() as pa, TcpProxy() as pb:
        a = start_daemon(_ini(tmp_path / "a.ini", pa.url_for(url), amo, onec), tmp_path / "a.log", fake=False)
        b = start_daemon(_ini(tmp_path / "b.ini", pb.url_for(url), amo, onec), tmp_path / "b.log", fake=False)
        store = Store(url)
        proxies = {a.pid: pa, b.pid: pb}
        try:
            wait_until(lambda: len(_alive(store)) == 2, timeout=60, message="both daemons up")
            slots = Schedule.seed().plan(TRIES, 15, 5, random.Random(14))   # free, distinct appointments
            counts = [_one_try(onec, amo, store, proxies, slot) for slot in slots]
            print(f"«Заявки» per lead over {TRIES} moves of leadership: {counts}")
            assert a.poll() is None
            assert b.poll() is None
            assert stop(a, signal.SIGTERM, timeout=60) == 0
            assert stop(b, signal.SIGTERM, timeout=60) == 0
            assert min(counts) >= 1, counts
            if counts != [1] * TRIES:
                raise DuplicateZayavki(f"two «Заявки» in {sum(c > 1 for c in counts)} of {TRIES} tries: {counts}")
        finally:
            for p in (pa, pb):
                p.thaw()
            kill_quietly(a, b)
            store.dispose()
