"""`amo1c-sync run` (the real CLI, the real jobs) against both emulators: the seed's story.
A lead flagged in amoCRM becomes «Заявка» № 219 in 1C; a posted «Оказание услуг» of 150 becomes the
lead's budget and «Сумма1С»; `check`, `status --json` and `trace --json` tell the tale."""

from __future__ import annotations

import json
import signal
from decimal import Decimal

import pytest
import requests

from amo1c_sync.domain.registration import display_number
from amo1c_sync.store import Store, sqlite_url_for
from tests.support import wait_until

from tests.support.daemon import cli, kill_quietly, start_daemon, stop, write_ini

TOKEN = "story-long-lived-token-0123456789"



@pytest.fixture
def systems():
    from amo1c_sync.sandbox.amocrm_emulator import AmoCRMEmulator
    from amo1c_sync.sandbox.onec_emulator import OneCEmulator

    amo = AmoCRMEmulator(long_lived_token=TOKEN).start()
    onec = OneCEmulator().start()
    try:
        yield amo, onec
    finally:
        amo.stop()
        onec.stop()


def _free_port() -> int:
    import socket

    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def _ini(tmp_path, amo, onec, url, *, http_port: int | None = None):
    extra = (
        "[amocrm]\n"
        f"base_url = {amo.url}\n"
        f"long_lived_token = {TOKEN}\n"
        "[onec]\n"
        f"base_url = {onec.url}/odata/standard.odata\n"
        f"username = {onec.username}\n"
        f"password = {onec.password}\n"
    )
    if http_port:
        extra += f"[http]\nenabled = yes\nport = {http_port}\nsecret = widget-secret-123\n"
    ini = write_ini(tmp_path / "sync.ini", url, interval="1s", extra=extra)
    ini.chmod(0o600)
    return ini


def test_given_both_emulators_when_the_daemon_runs_then_the_seed_story_happens(systems, tmp_path):
    amo, onec = systems
    url = sqlite_url_for(tmp_path / "state.db")
    port = _free_port()
    ini = _ini(tmp_path, amo, onec, url, http_port=port)
    web = f"http://127.0.0.1:{port}"

    checked = cli(ini, "check")
    assert checked.returncode == 0, checked.stdout + checked.stderr
    assert "FAIL" not in checked.stdout
    assert checked.stdout.count("OK") >= 5

    proc = start_daemon(ini, tmp_path / "daemon.log", fake=False)
    store = Store(url)
    try:
        # the receptionist fills the lead card and presses «Зарегистрировать запись к врачу в 1С»
        lead = requests.post(f"{amo.url}/_sandbox/leads", json={"name": "Новый контакт по звонку", "fields": {
            "Дата записи к врачу": "22.12.2021", "Врач": "Ефимова Е.В.", "Время записи": "9:05",
            "Зарегистрировать в 1С": True}}, timeout=5).json()["id"]

        def zayavki():
            return requests.get(f"{onec.url}/_sandbox/zayavki", params={"lead": lead}, timeout=5).json()

        (z,) = wait_until(zayavki, timeout=30, message="«Заявка» for the lead in 1C")
        assert z["doctor"] == "Ефимова Е.В."
        assert z["start"] == "2021-12-22T09:05:00"
        assert display_number(z["number"]) == display_number(onec.number(219))
        assert z["client"] == "Клиент из AmoCRM"

        # the clinic posts «Оказание услуг» of 150 on the basis of that «Заявка»
        r = requests.post(f"{onec.url}/_sandbox/services", json={"lead": lead, "amount": "150.00"}, timeout=5)
        assert r.status_code == 201, r.text

        def lead_card():
            card = requests.get(f"{amo.url}/_sandbox/leads/{lead}", timeout=5).json()
            return card if Decimal(str(card.get("price") or 0)) == 150 else None

        card = wait_until(lead_card, timeout=40, message="the lead's budget = 150")
        assert Decimal(card["fields"]["Сумма1С"]) == 150
        assert not card["fields"].get("Зарегистрировать в 1С")

        # the optional HTTP endpoint of the daemon: health, metrics, and /register nudging the job
        health = wait_until(lambda: requests.get(f"{web}/healthz", timeout=5), timeout=10,
                            message="/healthz 200")
        assert health.json()["status"] == "ok", health.text
        # the run that pushed the total may still be finishing: poll
        metrics_text = wait_until(lambda: (lambda t: t if 'item="pushed",job="payments"' in t else None)(
            requests.get(f"{web}/metrics", timeout=5).text), timeout=10, message="metrics of the pushing run")
        assert 'amo1c_job_runs_total{job="registration",status="ok"}' in metrics_text
        assert 'amo1c_job_items_total{item="pushed",job="payments"}' in metrics_text
        assert 'amo1c_requests_total{method="GET",status="200",system="1c"}' in metrics_text
        assert 'amo1c_requests_total{method="PATCH",status="200",system="amocrm"}' in metrics_text
        assert "amo1c_leader 1.0" in metrics_text
        reg = requests.post(f"{web}/register", params={"lead_id": lead},
                            headers={"X-Amo1c-Secret": "widget-secret-123"}, timeout=5)
        assert reg.status_code == 202, reg.text
        assert reg.json()["nudged"] is True, reg.text

        st = json.loads(cli(ini, "status", "--json").stdout)
        assert st["leader"]["pid"] == proc.pid
        assert {j for j, v in st["jobs"].items() if v["last_run"]} >= {"registration", "payments"}

        tr = json.loads(cli(ini, "trace", str(lead), "--json").stdout)
        systems_written = {e["system"] for e in tr["journal"]}
        assert {"1c", "amocrm"} <= systems_written, tr["journal"]
        assert tr["registration"]["status"] == "done"
        assert tr["payment_total"]["pushed_total"] in ("150", "150.00")

        assert stop(proc, signal.SIGTERM, timeout=30) == 0
        after = json.loads(cli(ini, "status", "--json").stdout)
        assert after["role"] == "not running"
        assert {j: v["last_run"]["status"] for j, v in after["jobs"].items() if v["last_run"]
                and v["last_run"]["status"] not in ("ok", "partial", "interrupted")} == {}
    finally:
        kill_quietly(proc)
        store.dispose()
        if proc.returncode not in (0, None):
            print((tmp_path / "daemon.log").read_text()[-5000:])


def test_given_a_wrong_1c_password_when_checked_then_the_line_says_so_and_exit_is_1(systems, tmp_path):
    amo, onec = systems
    ini = _ini(tmp_path, amo, onec, sqlite_url_for(tmp_path / "state.db"))
    ini.write_text(ini.read_text().replace(f"password = {onec.password}", "password = wrong"), encoding="utf-8")
    r = cli(ini, "check")
    assert r.returncode == 1
    lines = r.stdout.splitlines()
    assert any(line.startswith("OK   amoCRM") for line in lines), r.stdout
    fail = [line for line in lines if line.startswith("FAIL")]
    assert len(fail) == 1, r.stdout
    assert "1C" in fail[0], r.stdout
