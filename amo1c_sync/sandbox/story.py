"""The seed's story, played end to end on the emulators with the real daemon, narrated for a person:
slots for 22.12.2021 -> register Ефимова Е.В. at 9:05 -> «Заявка № 219» -> «Оказание услуг» 150 ->
the lead's budget and «Сумма1С» become 150. The lead's contact carries the caller's phone
«+7 (911) 123-45-67», so the «Заявка»'s client is the patient with that phone (F8), not the
default client. Then the visit's life: the clinic moves it in 1C (23.12.2021 15:30, Ишаева М.И.)
and the lead shows the new time; a second lead is registered and cancelled from the card, and its
«Заявка» is marked for deletion in 1C.

The daemon child never outlives the story: it is asked to die with its parent (PR_SET_PDEATHSIG,
so even a SIGKILL of the parent ends it), and a SIGTERM or SIGHUP to the parent (a closed
terminal) stops it the way Ctrl-C does."""

from __future__ import annotations

import ctypes
import re
import signal
import subprocess
import sys
import tempfile
import threading
import time
from dataclasses import dataclass
from datetime import date, datetime
from decimal import Decimal
from pathlib import Path
from typing import Any, Callable, TextIO, TypeVar

import requests

from amo1c_sync.config import load_settings
from amo1c_sync.domain.dates import format_time
from amo1c_sync.sandbox.daemon import launch_daemon
from amo1c_sync.sandbox.serve import Sandbox
from amo1c_sync.store import Store, sqlite_url_for

T = TypeVar("T")

DAY = date(2021, 12, 22)
DOCTOR = "Ефимова Е.В."
TIME = "9:05"
PHONE = "+7 (911) 123-45-67"  # the caller's number, on the lead's contact
AMOUNT = "150.00"
MOVED_TO, MOVED_DOCTOR = datetime(2021, 12, 23, 15, 30), "Ишаева М.И."
SECOND_TIME = "10:00"
_PR_SET_PDEATHSIG = 1


class StoryFailed(Exception):
    """A step of the story did not come out as the clinic expects."""


class _Stopped(Exception):
    """SIGTERM or SIGHUP reached the story: clean up as after Ctrl-C."""


def _die_with_parent() -> None:  # pragma: no cover - runs in the child between fork and exec
    try:
        ctypes.CDLL(None, use_errno=True).prctl(_PR_SET_PDEATHSIG, signal.SIGTERM)
    except (OSError, AttributeError):
        pass  # not Linux: the signal handlers below still stop the child


def _on_stop_signals() -> Callable[[], None]:
    """SIGTERM/SIGHUP raise _Stopped in the story's thread; returns what puts the old handlers back."""
    if threading.current_thread() is not threading.main_thread():
        return lambda: None

    def stop(signum, _frame):
        raise _Stopped(signal.Signals(signum).name)

    old = {sig: signal.signal(sig, stop) for sig in (signal.SIGTERM, signal.SIGHUP)}

    def restore() -> None:
        for sig, handler in old.items():
            signal.signal(sig, handler)

    return restore


def number(text: str) -> str:
    """A 1C number as the clinic writes it: «00000000219» -> «219»."""
    return text.lstrip("0") or "0"


def when(iso: str) -> str:
    """«2021-12-22T09:05:00» -> «22.12.2021 9:05»."""
    at = datetime.fromisoformat(iso)
    return f"{at:%d.%m.%Y} {format_time(at.time())}"


def roubles(value) -> str:
    """150, «150», «150.00» -> «150 ₽» (kopecks only when there are some: «250,50 ₽»)."""
    amount = Decimal(str(value))
    if amount == amount.to_integral_value():
        return f"{int(amount)} ₽"
    return f"{amount.quantize(Decimal('0.01'))} ₽".replace(".", ",")


@dataclass
class Narrator:
    """Prints the numbered steps of the story."""

    out: TextIO

    def step(self, n: int, text: str) -> None:
        print(f"\n{n}. {text}", file=self.out, flush=True)

    def say(self, text: str) -> None:
        print(f"   {text}", file=self.out, flush=True)


def _wait(what: str, probe: Callable[[], T | None], timeout: float) -> T:
    deadline = time.monotonic() + timeout
    while True:
        value = probe()
        if value:
            return value
        if time.monotonic() > deadline:
            raise StoryFailed(f"gave up after {timeout:.0f}s waiting for {what}")
        time.sleep(0.2)


class _Story:
    """The story's steps, each a short method; ``play`` runs them and always cleans up."""

    def __init__(self, out: TextIO, work: Path, step_timeout: float):
        self.out, self.work, self.timeout = out, work, step_timeout
        self.tell = Narrator(out)
        self.daemon: subprocess.Popen[bytes] | None = None
        self.log_path = work / "daemon.log"
        self.sb = Sandbox().start()

    def prepare(self) -> None:
        store_url = sqlite_url_for(self.work / "state.db")
        self.ini = self.sb.write_config(self.work / "sync.ini", store_url)
        print(f"amo1c-sync sandbox: the clinic's story ({DAY:%d.%m.%Y} {TIME}, «{DOCTOR}», "
              f"{roubles(AMOUNT)})", file=self.out)
        print(f"   amoCRM emulator  {self.sb.amo.url}\n   1C emulator      {self.sb.onec_odata_url}\n"
              f"   config           {self.ini}\n   state store      {self.work / 'state.db'}", file=self.out)
        self.settings = load_settings(self.ini)
        self.fields = self.settings.fields
        self.store = Store(store_url)
        self.store.upgrade()

    def authorise(self) -> None:
        self.tell.step(1, "The administrator authorises the integration (amo1c-sync auth --code …)")
        state = self.sb.authorise(self.settings, self.store)
        self.tell.say(f"token stored (generation {state['generation']}, expires in "
                      f"{state['expires_in_s'] // 3600} h); refresh tokens are single-use and rotated")

    def free_times(self) -> None:
        from amo1c_sync import onec as onec_gateway
        from amo1c_sync.services.slots import SlotFinder

        self.finder = SlotFinder.from_settings(self.settings, onec_gateway.from_settings(self.settings))
        self.tell.step(2, f"«Дата записи к врачу» = {DAY:%d.%m.%Y}: who works that day?")
        doctors = self.finder.doctors(DAY)
        self.tell.say("doctors: " + ", ".join(doctors))
        if DOCTOR not in doctors:
            raise StoryFailed(f"{DOCTOR} is not among the doctors of {DAY:%d.%m.%Y}")
        times = self._free_times()
        self.tell.say(f"free times of {DOCTOR}: " + ", ".join(times[:6]) + f" … ({len(times)} in all)")
        if TIME not in times:
            raise StoryFailed(f"{TIME} is not free for {DOCTOR}")

    def _free_times(self) -> list[str]:
        answer = self.finder.free_times(DAY, DOCTOR)
        if not isinstance(answer, list):  # UnknownDoctor or NotWorking
            raise StoryFailed(f"{DOCTOR} has no free times on {DAY:%d.%m.%Y}: {answer}")
        return [format_time(t) for t in answer]

    def _running(self) -> subprocess.Popen[bytes]:
        if self.daemon is None:
            raise StoryFailed("the daemon is not running")
        return self.daemon

    def start_daemon(self) -> None:
        self.tell.step(3, "The daemon starts (amo1c-sync run)")
        self.daemon = launch_daemon(self.ini, self.log_path,
                                    preexec_fn=_die_with_parent if sys.platform.startswith("linux") else None)
        self.tell.say(f"pid {self.daemon.pid}, log {self.log_path}")

    def register(self) -> None:
        f, amo = self.fields, self.sb.amo.url
        self.tell.step(4, f"A lead is filled in: {DAY:%d.%m.%Y}, {DOCTOR}, {TIME}, «ФИО клиента» empty; "
                          "the button «Зарегистрировать запись к врачу в 1с» is pressed")
        self.lead_id = requests.post(f"{amo}/_sandbox/leads", timeout=10, json={
            "name": "Новый контакт по звонку с +7 (911) 123-45-67",
            "contact": {"name": PHONE, "phones": [PHONE]},  # a call's contact, named by its number
            "fields": {f.date: DAY.strftime("%d.%m.%Y"), f.doctor: DOCTOR, f.time: TIME}}).json()["id"]
        requests.patch(f"{amo}/_sandbox/leads/{self.lead_id}", timeout=10,
                       json={"fields": {f.flag: True}}).raise_for_status()
        self.tell.say(f"lead #{self.lead_id}, flag set")
        z = self.zayavka = _wait("the «Заявка» in 1C", self._posted_zayavka, self.timeout)
        self.tell.say(f"1C: «Заявка» № {number(z['number'])} — client «{z['client']}», doctor "
                      f"«{z['doctor']}», {when(z['start'])}, «Номер AmoCRM» = {z['lead']}, posted")
        self._client_has_the_phone(z)
        card = _wait("the note on the lead", self._written_back, self.timeout)
        self.tell.say(f"amoCRM: note «{card['notes'][-1]}»; flag cleared; "
                      f"«{f.zayavka_number}» = {card['fields'].get(f.zayavka_number)}")
        self.finder.invalidate()
        still_free = TIME in self._free_times()
        self.tell.say(f"{TIME} is {'STILL free (wrong!)' if still_free else 'no longer free'} for {DOCTOR}")
        if still_free:
            raise StoryFailed(f"{TIME} is still free after the registration")

    def _client_has_the_phone(self, z: Any) -> None:
        """F8: the caller's phone reached 1C with the «Заявка»'s client (its contact information)."""
        listed = requests.get(f"{self.sb.onec.url}/_sandbox/clients", timeout=10).json()
        phones: list[str] = next((c["phones"] for c in listed if c["ref"] == z.get("client_ref")), [])
        if not any(re.sub(r"\D", "", p)[-10:] == re.sub(r"\D", "", PHONE)[-10:] for p in phones):
            raise StoryFailed(f"the client «{z['client']}» of the «Заявка» has no phone {PHONE} in 1C ({phones})")

    def _posted_zayavka(self):
        if self.daemon.poll() is not None:
            raise StoryFailed(f"the daemon exited with {self.daemon.returncode}; see {self.log_path}")
        rows = requests.get(f"{self.sb.onec.url}/_sandbox/zayavki", params={"lead": self.lead_id},
                            timeout=10).json()
        return rows[0] if rows and rows[0].get("posted") else None

    def _lead(self) -> dict:
        return requests.get(f"{self.sb.amo.url}/_sandbox/leads/{self.lead_id}", timeout=10).json()

    def _written_back(self):
        card = self._lead()
        return card if card["notes"] and not card["fields"].get(self.fields.flag) else None

    def pay(self) -> None:
        self.tell.step(5, f"The client pays {roubles(AMOUNT)}: in 1C, «Оказание услуг» на основании "
                          f"«Заявки» № {number(self.zayavka['number'])} is posted")
        svc = requests.post(f"{self.sb.onec.url}/_sandbox/services", timeout=10,
                            json={"lead": self.lead_id, "amount": AMOUNT}).json()
        self.tell.say(f"1C: «Оказание услуг» № {number(svc['number'])} for {roubles(AMOUNT)} posted (paid)")

        def paid():
            c = self._lead()
            value = c["fields"].get(self.fields.sum)
            return c if value not in (None, "") and Decimal(str(value)) == Decimal(AMOUNT) else None

        card = _wait("the sum on the lead", paid, self.timeout)
        self.tell.say(f"amoCRM: the lead shows it paid: Бюджет {roubles(card['price'])}, "
                      f"«{self.fields.sum}» {roubles(card['fields'][self.fields.sum])}")
        if card["price"] != 150:
            raise StoryFailed(f"the budget is {card['price']}, not 150")

    def move(self) -> None:
        f = self.fields
        # the lifecycle follows the «Заявка» once it has seen it (it moved the lead to «Оплачено»)
        _wait("the lead in «Оплачено»", lambda: self._lead().get("status") == "Оплачено", self.timeout)
        self.tell.step(6, f"The clinic moves the visit in 1C: «Заявка» № {number(self.zayavka['number'])} "
                          f"-> {MOVED_TO:%d.%m.%Y} {format_time(MOVED_TO.time())}, {MOVED_DOCTOR}")
        requests.patch(f"{self.sb.onec.url}/_sandbox/zayavki/{self.zayavka['ref']}", timeout=10,
                       json={"start": MOVED_TO.isoformat(), "doctor": MOVED_DOCTOR}).raise_for_status()
        shown = f"{MOVED_TO:%d.%m.%Y}"

        def moved():
            c = self._lead()
            return c if (c["fields"].get(f.date), c["fields"].get(f.time)) == (shown, "15:30") else None

        card = _wait("the new time on the lead", moved, self.timeout)
        self.tell.say(f"amoCRM: {f.date} {card['fields'][f.date]}, {f.doctor} {card['fields'][f.doctor]}, "
                      f"{f.time} {card['fields'][f.time]}; note «{card['notes'][-1]}»")

    def cancel_from_card(self) -> None:
        f, amo = self.fields, self.sb.amo.url
        self.tell.step(7, f"A second lead is registered ({DAY:%d.%m.%Y}, {DOCTOR}, {SECOND_TIME}), then the "
                          f"button «{f.cancel_flag}» is pressed on its card")
        lead_id = requests.post(f"{amo}/_sandbox/leads", timeout=10, json={
            "name": "Повторный визит", "fields": {f.date: DAY.strftime("%d.%m.%Y"), f.doctor: DOCTOR,
                                                  f.time: SECOND_TIME, f.flag: True}}).json()["id"]

        def zayavka(marked: bool):
            rows = requests.get(f"{self.sb.onec.url}/_sandbox/zayavki", params={"lead": lead_id}, timeout=10).json()
            return rows[0] if rows and rows[0]["posted"] != marked and rows[0]["deletion_mark"] == marked else None

        z = _wait("the second «Заявка»", lambda: zayavka(False), self.timeout)
        _wait("the note on the second lead", lambda: requests.get(
            f"{amo}/_sandbox/leads/{lead_id}", timeout=10).json()["notes"], self.timeout)
        self.tell.say(f"lead #{lead_id}: «Заявка» № {number(z['number'])} posted")
        requests.patch(f"{amo}/_sandbox/leads/{lead_id}", timeout=10,
                       json={"fields": {f.cancel_flag: True}}).raise_for_status()
        _wait("the deletion mark in 1C", lambda: zayavka(True), self.timeout)
        self.tell.say(f"1C: «Заявка» № {number(z['number'])} marked for deletion")

        def cancelled():
            c = requests.get(f"{amo}/_sandbox/leads/{lead_id}", timeout=10).json()
            return c if c["status"] == "Отменена" and not c["fields"].get(f.cancel_flag) else None

        card = _wait("the cancelled lead", cancelled, self.timeout)
        self.tell.say(f"amoCRM: note «{card['notes'][-1]}»; flag cleared; stage «{card['status']}»")

    def keep_running(self) -> None:
        self.tell.step(8, "Everything keeps running (--keep). Ctrl-C stops it (so does closing the "
                          "terminal); then the daemon is stopped and the temporary directory removed.")
        self.tell.say(f"try: amo1c-sync --config {self.ini} status | trace {self.lead_id} | "
                      f"slots {DAY:%d.%m.%Y}")
        self.tell.say(f"daemon pid {self._running().pid}")
        try:
            while self._running().poll() is None:
                time.sleep(1)
        except (KeyboardInterrupt, _Stopped):
            pass

    def stop_daemon(self) -> None:
        self.tell.step(8, "The daemon is stopped (SIGTERM)")
        self._running().send_signal(signal.SIGTERM)
        code = self._running().wait(timeout=60)
        self.daemon = None
        self.tell.say(f"exit code {code}")
        if code != 0:
            raise StoryFailed(f"the daemon exited with {code} on SIGTERM")

    def close(self) -> None:
        if self.daemon is not None and self.daemon.poll() is None:
            self.daemon.kill()
            self.daemon.wait(timeout=10)
        self.sb.stop()


def play(out: TextIO = sys.stdout, *, keep: bool = False, workdir: str | None = None,
         step_timeout: float = 90.0) -> int:
    """Returns the exit code: 0 when every step happened as the seed tells it."""
    tmp = None
    if workdir is None:
        tmp = tempfile.TemporaryDirectory(prefix="amo1c-sandbox-")
        workdir = tmp.name
    work = Path(workdir)
    work.mkdir(parents=True, exist_ok=True)
    story = _Story(out, work, step_timeout)
    restore = _on_stop_signals()
    try:
        story.prepare()
        for step in (story.authorise, story.free_times, story.start_daemon, story.register, story.pay,
                     story.move, story.cancel_from_card):
            step()
        if keep:
            story.keep_running()
        story.stop_daemon()
        print("\nThe story happened as the clinic told it.", file=out)
        if tmp is not None:
            print(f"(the temporary directory {work} is removed now; `amo1c-sync sandbox --keep` "
                  "keeps everything running to look around)", file=out)
        return 0
    except _Stopped as exc:
        print(f"\nstopped by {exc}", file=out)
        return 130
    except StoryFailed as exc:
        print(f"\nSTORY FAILED: {exc}", file=out)
        if story.log_path.exists():
            print("last daemon log lines:\n" + "\n".join(story.log_path.read_text().splitlines()[-15:]),
                  file=out)
        return 1
    finally:
        story.close()
        restore()
        if tmp is not None:
            tmp.cleanup()
