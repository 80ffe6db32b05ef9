"""`amo1c-sync run` (the real CLI and jobs, both emulators) on a PostgreSQL store reached through a
TCP proxy that freezes: while PostgreSQL does not answer the daemon says so in its log, and once it
answers again the daemon goes on by itself and pushes the total that changed meanwhile."""

from __future__ import annotations

import signal
import time
from decimal import Decimal

import pytest
import requests

from amo1c_sync.sandbox.amocrm_emulator import AmoCRMEmulator
from amo1c_sync.sandbox.onec_emulator import OneCEmulator
from tests.support import wait_until
from tests.support.daemon import kill_quietly, start_daemon, stop
from tests.support.pg import temporary_database
from tests.support.tcp_proxy import TcpProxy

pytestmark = pytest.mark.postgres

TOKEN = "sick-pg-long-lived-token-0123456789"


def _price(amo, lead):
    card = requests.get(f"{amo.url}/_sandbox/leads/{lead}", timeout=5).json()
    return Decimal(str(card.get("price") or 0))


def test_given_postgresql_freezes_when_it_answers_again_then_the_daemon_resumes_and_pushes(tmp_path, pg_url):
    with AmoCRMEmulator(long_lived_token=TOKEN) as amo, OneCEmulator() as onec, \
            temporary_database() as url, TcpProxy() as proxy:
        ini = tmp_path / "sync.ini"
        ini.write_text(
            f"[store]\nurl = {proxy.url_for(url)}\ntimeout = 2s\nlock_lease = 8s\n"
            "[sync]\nregistration_interval = 1s\npayments_interval = 1s\ndirectory_interval = 1h\n"
            "[logging]\nformat = json\nlevel = INFO\n"
            f"[amocrm]\nbase_url = {amo.url}\nlong_lived_token = {TOKEN}\n"
            f"[onec]\nbase_url = {onec.url}/odata/standard.odata\nusername = {onec.username}\n"
            f"password = {onec.password}\n", encoding="utf-8")
        ini.chmod(0o600)
        log_path = tmp_path / "daemon.log"
        proc = start_daemon(ini, log_path, fake=False)
        try:
            lead = requests.post(f"{amo.url}/_sandbox/leads", json={"name": "Звонок", "fields": {
                "Дата записи к врачу": "22.12.2021", "Врач": "Ефимова Е.В.", "Время записи": "9:05",
                "Зарегистрировать в 1С": True}}, timeout=5).json()["id"]
            wait_until(lambda: requests.get(f"{onec.url}/_sandbox/zayavki", params={"lead": lead},
                                            timeout=5).json(), timeout=60, message="the «Заявка» in 1C")
            requests.post(f"{onec.url}/_sandbox/services", json={"lead": lead, "amount": "150.00"},
                          timeout=5).raise_for_status()
            wait_until(lambda: _price(amo, lead) == 150, timeout=60, message="the first total pushed")

            proxy.freeze()
            requests.post(f"{onec.url}/_sandbox/services", json={"lead": lead, "amount": "100.00"},
                          timeout=5).raise_for_status()
            wait_until(lambda: '"store.unavailable"' in log_path.read_text(), timeout=60,
                       message="the daemon logging that the store does not answer")
            assert '"store.not_answering"' in log_path.read_text()
            assert _price(amo, lead) == 150   # nothing pushed without the store
            thawed = time.monotonic()
            proxy.thaw()

            wait_until(lambda: _price(amo, lead) == 250, timeout=90, message="the new total pushed")
            print(f"pushed {time.monotonic() - thawed:.1f} s after PostgreSQL answered again")
            assert proc.poll() is None
            assert stop(proc, signal.SIGTERM, timeout=60) == 0
        finally:
            proxy.thaw()
            kill_quietly(proc)
            if proc.returncode not in (0, None):
                print(log_path.read_text()[-5000:])
