"""The seed's story, played end to end on the emulators with the real daemon, narrated for a person:
slots for 22.12.2021 -> register Ефимова Е.В. at 9:05 -> «Заявка № 219» -> «Оказание услуг» 150 ->
the lead's budget and «Сумма1С» become 150."""

from __future__ import annotations

import signal
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass
from datetime import date
from decimal import Decimal
from pathlib import Path
from typing import Callable, TextIO

import requests

from amo1c_sync.config import load_settings
from amo1c_sync.domain.dates import format_time
from amo1c_sync.sandbox.daemon import launch_daemon
from amo1c_sync.sandbox.serve import Sandbox
from amo1c_sync.store import Store, sqlite_url_for

DAY = date(2021, 12, 22)
DOCTOR = "Ефимова Е.В."
TIME = "9:05"
AMOUNT = "150.00"


class StoryFailed(Exception):
    pass


@dataclass
class Narrator:
    out: TextIO

    def step(self, n: int, text: str) -> None:
        print(f"\n{n}. {text}", file=self.out, flush=True)

    def say(self, text: str) -> None:
        print(f"   {text}", file=self.out, flush=True)


def _wait(what: str, probe: Callable[[], object], timeout: float) -> object:
    deadline = time.monotonic() + timeout
    while True:
        value = probe()
        if value:
            return value
        if time.monotonic() > deadline:
            raise StoryFailed(f"gave up after {timeout:.0f}s waiting for {what}")
        time.sleep(0.2)


def play(out: TextIO = sys.stdout, *, keep: bool = False, workdir: str | None = None,
         step_timeout: float = 90.0) -> int:
    """Returns the exit code: 0 when every step happened as the seed tells it."""
    tell = Narrator(out)
    tmp = tempfile.TemporaryDirectory(prefix="amo1c-sandbox-") if workdir is None else None
    work = Path(workdir or tmp.name)
    work.mkdir(parents=True, exist_ok=True)
    daemon: subprocess.Popen | None = None
    log_path = work / "daemon.log"
    sb = Sandbox().start()
    try:
        store_url = sqlite_url_for(work / "state.db")
        ini = sb.write_config(work / "sync.ini", store_url)
        print("amo1c-sync sandbox: the clinic's story (22.12.2021, «Ефимова Е.В.», 9:05, 150 ₽)",
              file=out)
        print(f"   amoCRM emulator  {sb.amo.url}\n   1C emulator      {sb.onec_odata_url}\n"
              f"   config           {ini}\n   state store      {work / 'state.db'}", file=out)

        settings = load_settings(ini)
        store = Store(store_url)
        store.upgrade()

        tell.step(1, "The administrator authorises the integration (amo1c-sync auth --code …)")
        state = sb.authorise(settings, store)
        tell.say(f"token stored (generation {state['generation']}, expires in "
                 f"{state['expires_in_s'] // 3600} h); refresh tokens are single-use and rotated")

        from amo1c_sync import onec as onec_gateway
        from amo1c_sync.services.slots import SlotFinder

        finder = SlotFinder.from_settings(settings, onec_gateway.from_settings(settings))
        tell.step(2, f"«Дата записи к врачу» = {DAY:%d.%m.%Y}: who works that day?")
        doctors = finder.doctors(DAY)
        tell.say("doctors: " + ", ".join(doctors))
        if DOCTOR not in doctors:
            raise StoryFailed(f"{DOCTOR} is not among the doctors of {DAY:%d.%m.%Y}")
        times = [format_time(t) for t in finder.free_times(DAY, DOCTOR)]
        tell.say(f"free times of {DOCTOR}: " + ", ".join(times[:6]) + f" … ({len(times)} in all)")
        if TIME not in times:
            raise StoryFailed(f"{TIME} is not free for {DOCTOR}")

        tell.step(3, "The daemon starts (amo1c-sync run)")
        daemon = launch_daemon(ini, log_path)
        tell.say(f"pid {daemon.pid}, log {log_path}")

        tell.step(4, f"A lead is filled in: {DAY:%d.%m.%Y}, {DOCTOR}, {TIME}, «ФИО клиента» empty; "
                     "the button «Зарегистрировать запись к врачу в 1с» is pressed")
        fields = settings.fields
        lead_id = requests.post(f"{sb.amo.url}/_sandbox/leads", timeout=10, json={
            "name": "Новый контакт по звонку с +7 (911) 123-45-67",
            "fields": {fields.date: DAY.strftime("%d.%m.%Y"), fields.doctor: DOCTOR,
                       fields.time: TIME}}).json()["id"]
        requests.patch(f"{sb.amo.url}/_sandbox/leads/{lead_id}", timeout=10,
                       json={"fields": {fields.flag: True}}).raise_for_status()
        tell.say(f"lead #{lead_id}, flag set")

        def zayavka():
            if daemon.poll() is not None:
                raise StoryFailed(f"the daemon exited with {daemon.returncode}; see {log_path}")
            rows = requests.get(f"{sb.onec.url}/_sandbox/zayavki", params={"lead": lead_id},
                                timeout=10).json()
            return rows[0] if rows and rows[0].get("posted") else None

        z = _wait("the «Заявка» in 1C", zayavka, step_timeout)
        tell.say(f"1C: «Заявка» № {z['number']} — client «{z['client']}», doctor «{z['doctor']}», "
                 f"{z['start'].replace('T', ' ')}, «Номер AmoCRM» = {z['lead']}, posted")

        def lead():
            return requests.get(f"{sb.amo.url}/_sandbox/leads/{lead_id}", timeout=10).json()

        def written_back():
            card = lead()
            return card if card["notes"] and not card["fields"].get(fields.flag) else None

        card = _wait("the note on the lead", written_back, step_timeout)
        tell.say(f"amoCRM: note «{card['notes'][-1]}»; flag cleared; "
                 f"«{fields.zayavka_number}» = {card['fields'].get(fields.zayavka_number)}")
        finder.invalidate()
        still_free = TIME in [format_time(t) for t in finder.free_times(DAY, DOCTOR)]
        tell.say(f"{TIME} is {'STILL free (wrong!)' if still_free else 'no longer free'} for {DOCTOR}")
        if still_free:
            raise StoryFailed(f"{TIME} is still free after the registration")

        tell.step(5, f"In 1C, «Оказание услуг» на основании «Заявки» № {z['number']} for "
                     f"{AMOUNT.replace('.', ',')} is posted")
        svc = requests.post(f"{sb.onec.url}/_sandbox/services", timeout=10,
                            json={"lead": lead_id, "amount": AMOUNT}).json()
        tell.say(f"1C: «Оказание услуг» № {svc['number']} posted")

        def paid():
            c = lead()
            value = c["fields"].get(fields.sum)
            return c if value not in (None, "") and Decimal(str(value)) == Decimal(AMOUNT) else None

        card = _wait("the sum on the lead", paid, step_timeout)
        tell.say(f"amoCRM: Бюджет {card['price']} ₽, {fields.sum} {card['fields'][fields.sum]}")
        if card["price"] != 150:
            raise StoryFailed(f"the budget is {card['price']}, not 150")

        if keep:
            tell.step(6, "Everything keeps running (--keep). Ctrl-C stops it.")
            tell.say(f"try: amo1c-sync --config {ini} status | trace {lead_id} | slots 22.12.2021")
            try:
                while daemon.poll() is None:
                    time.sleep(1)
            except KeyboardInterrupt:
                pass
        tell.step(6, "The daemon is stopped (SIGTERM)")
        daemon.send_signal(signal.SIGTERM)
        code = daemon.wait(timeout=60)
        daemon = None
        tell.say(f"exit code {code}")
        if code != 0:
            raise StoryFailed(f"the daemon exited with {code} on SIGTERM")
        print("\nThe story happened as the clinic told it.", file=out)
        return 0
    except StoryFailed as exc:
        print(f"\nSTORY FAILED: {exc}", file=out)
        if log_path.exists():
            print("last daemon log lines:\n" + "\n".join(log_path.read_text().splitlines()[-15:]), file=out)
        return 1
    finally:
        if daemon is not None and daemon.poll() is None:
            daemon.kill()
            daemon.wait(timeout=10)
        sb.stop()
        if tmp is not None:
            tmp.cleanup()
