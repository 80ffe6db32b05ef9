"""The seed's story in a browser (issue 8): headless Chromium opens a page that imitates the amoCRM
lead card with the widget «Интеграция 1С» loaded against the real endpoint (create_app + waitress,
the real SlotFinder over the 1C emulator); picks 22.12.2021, sees the two doctors, picks Ефимова,
sees 8:15 first, picks 9:05, presses «Зарегистрировать запись к врачу в 1с»; the card is saved into
the amoCRM emulator, the nudge runs the real registration job, and 1C gets «Заявка» 00000000219.

The card page is served by a small server of the test on its own loopback port, so it is a
different origin from the endpoint, as amoCRM is: the browser really does the CORS preflight. Its
/api/v4/ is a proxy to the amoCRM emulator that adds the integration's token, standing in for the
user's amoCRM session.
"""

from __future__ import annotations

import json
import os
import shutil
import threading
from pathlib import Path

import pytest
import requests
from werkzeug.serving import WSGIRequestHandler, make_server
from werkzeug.wrappers import Request, Response

from amo1c_sync.config import load_settings
from amo1c_sync.store import Store, sqlite_url_for
from tests.support import wait_until
from amo1c_sync.web import create_app, serve

pytestmark = pytest.mark.browser

ROOT = Path(__file__).resolve().parents[2]
WIDGET = ROOT / "widget"
CARD = Path(__file__).with_name("card.html")
CHROMIUM = "/usr/bin/chromium"
CHROMEDRIVER = "/usr/bin/chromedriver"
JQUERY = Path("/usr/share/javascript/jquery/jquery.min.js")
TOKEN = "browser-test-long-lived-token"
SECRET = "browser-test-secret-7d1e"
EFIMOVA, ISHAEVA = "Ефимова Е.В.", "Ишаева М.И."
BUTTON = "Зарегистрировать запись к врачу в 1с"
CANCEL_BUTTON = "Отменить запись в 1С"
CANCEL_FLAG = "Отменить запись в 1С"


def _dom_changing() -> tuple[type[BaseException], ...]:
    """What reading the card may raise while the widget re-renders it: the element just read was
    replaced (stale), or is not there yet. A wait retries on these instead of failing."""
    from selenium.common.exceptions import NoSuchElementException, StaleElementReferenceException

    return StaleElementReferenceException, NoSuchElementException


def _alert_absent() -> tuple[type[BaseException], ...]:
    from selenium.common.exceptions import NoAlertPresentException

    return (NoAlertPresentException,)


def wait(predicate, message, timeout: float = 15, ignoring: tuple[type[BaseException], ...] = ()):
    """wait_until for the card: ``message`` is a function, read only if the wait fails."""
    return wait_until(predicate, timeout=timeout, message=message, ignoring=_dom_changing() + ignoring)


def _need(path: Path | str, what: str) -> None:
    if not Path(path).exists():
        msg = f"{what} missing ({path}); scripts/test-prereqs.sh installs it"
        if os.environ.get("CI"):
            pytest.fail(msg)
        pytest.skip(msg)


class _Quiet(WSGIRequestHandler):
    def log_request(self, *args, **kwargs) -> None:
        pass


# ---------------------------------------------------------------- the fake amoCRM card site


def _field_html(field: dict) -> str:
    from html import escape

    fid, name, ftype = field["id"], field["name"], field["type"]
    label = (f'<div class="linked-form__field__label" title="{escape(name)}"><span>{escape(name)}</span>'
             "</div>")
    if ftype == "select":
        items = ['<li data-value="" class="control--select--list--item"><span class="'
                 'control--select--list--item-inner" title="Выбрать">Выбрать</span></li>']
        for e in field["enums"] or []:
            v = escape(e["value"])
            items.append(f'<li data-value="{e["id"]}" class="control--select--list--item">'
                         f'<span class="control--select--list--item-inner" title="{v}">{v}</span></li>')
        value = ('<div class="control--select linked-form__select">'
                 f'<ul class="custom-scroll control--select--list">{"".join(items)}</ul>'
                 '<button class="control--select--button" type="button">'
                 '<span class="control--select--button-inner">Выбрать</span></button>'
                 f'<input type="hidden" class="control--select--input" name="CFV[{fid}]" value=""></div>')
    elif ftype == "checkbox":
        value = f'<input type="checkbox" class="control-checkbox" name="CFV[{fid}]" value="1">'
    elif ftype == "date":
        value = (f'<input type="text" class="linked-form__cf js-control-date" name="CFV[{fid}]" '
                 'placeholder="ДД.ММ.ГГГГ" value="">')
    else:
        value = f'<input type="text" class="linked-form__cf text-input" name="CFV[{fid}]" value="">'
    return (f'<div class="linked-form__field linked-form__field-{ftype}" data-id="{fid}">{label}'
            f'<div class="linked-form__field__value">{value}</div></div>')


class CardSite:
    """Serves the card page, the widget's files, jQuery, and /api/v4/ proxied to the emulator."""

    def __init__(self, amo_url: str, fields: list[dict]):
        self.amo_url = amo_url
        self.fields_html = "\n".join(_field_html(f) for f in fields)
        self.config: dict = {}
        self._server = make_server("127.0.0.1", 0, self.app, threaded=True, request_handler=_Quiet)
        self._server.daemon_threads = True
        self._thread = threading.Thread(target=self._server.serve_forever, daemon=True)
        self._thread.start()
        self.url = f"http://127.0.0.1:{self._server.server_port}"

    def close(self) -> None:
        self._server.shutdown()
        self._server.server_close()

    def app(self, environ, start_response):
        req = Request(environ)
        path = req.path
        if path == "/":
            html = CARD.read_text(encoding="utf-8").replace("{{FIELDS}}", self.fields_html).replace(
                "{{CONFIG}}", json.dumps(self.config, ensure_ascii=False))
            resp = Response(html, content_type="text/html; charset=utf-8")
        elif path == "/vendor/jquery.js":
            resp = Response(JQUERY.read_bytes(), content_type="application/javascript")
        elif path.startswith("/widget/"):
            f = (WIDGET / path[len("/widget/"):]).resolve()
            if WIDGET not in f.parents or not f.is_file():
                resp = Response("not found", status=404)
            else:
                ctype = "application/json" if f.suffix == ".json" else "application/javascript"
                resp = Response(f.read_bytes(), content_type=ctype + "; charset=utf-8")
        elif path.startswith("/api/v4/"):
            r = requests.request(req.method, self.amo_url + req.full_path.rstrip("?"),
                                 data=req.get_data(), timeout=10,
                                 headers={"Authorization": f"Bearer {TOKEN}",
                                          "Content-Type": req.headers.get("Content-Type", "application/json")})
            resp = Response(r.content, status=r.status_code,
                            content_type=r.headers.get("Content-Type", "application/json"))
        else:
            resp = Response("not found", status=404)
        return resp(environ, start_response)


class _CardRig:
    """The endpoint as the daemon serves it (the real SlotFinder, a nudge that runs the real job
    off the request thread, as Daemon.nudge does) and the card site, configured as the sandbox is:
    the cancel checkbox and the «Запись к врачу» pipeline's stages."""

    def __init__(self, amo, onec, store):
        from amo1c_sync.jobs import JobContext, run_job
        from amo1c_sync.onec import from_settings as onec_from_settings
        from amo1c_sync.services.slots import SlotFinder

        self.site = CardSite(amo.url, amo.fields())
        self.settings = settings = load_settings(None, overrides={
            "amocrm": {"base_url": amo.url, "long_lived_token": TOKEN, "rate_limit": "1000"},
            "onec": {"base_url": onec.url, "username": onec.username, "password": onec.password},
            "http": {"enabled": "yes", "secret": SECRET, "allowed_origin": self.site.url},
            "fields": {"cancel_flag": CANCEL_FLAG},
            "stages": {"registered": "Запись к врачу / Записан на приём",
                       "cancelled": "Запись к врачу / Отменена"},
        })
        self.context = lambda: JobContext(settings, store)
        self.run_job = run_job
        self.runs: list = []
        self.errors: list = []
        finder = SlotFinder.from_settings(settings, onec_from_settings(settings))
        self.endpoint = serve(create_app(settings, slot_finder=finder, store=store, nudge=self.nudge))

    def nudge(self, job: str) -> None:
        def work():
            try:
                self.runs.append(self.run_job(self.context(), job))
            except Exception as exc:  # noqa: BLE001 - reported by the test's assertions
                self.errors.append(exc)
        threading.Thread(target=work, daemon=True).start()

    def close(self) -> None:
        self.endpoint.close()
        self.site.close()


# ---------------------------------------------------------------- fixtures


@pytest.fixture
def systems(tmp_path):
    from amo1c_sync.sandbox.amocrm_emulator import AmoCRMEmulator
    from amo1c_sync.sandbox.onec_emulator import OneCEmulator

    with AmoCRMEmulator(rate_limit=1000, long_lived_token=TOKEN) as amo, OneCEmulator() as onec:
        store = Store(sqlite_url_for(tmp_path / "state.db"))
        store.upgrade()
        yield amo, onec, store
        store.dispose()


@pytest.fixture
def browser(tmp_path):
    _need(CHROMIUM, "Debian's chromium")
    _need(CHROMEDRIVER, "Debian's chromium-driver")
    _need(JQUERY, "Debian's libjs-jquery")
    webdriver = pytest.importorskip("selenium.webdriver")
    from selenium.webdriver.chrome.service import Service

    os.environ.setdefault("SE_AVOID_STATS", "true")
    opts = webdriver.ChromeOptions()
    opts.binary_location = CHROMIUM
    for arg in ("--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
                "--disable-background-networking", "--disable-component-update", "--disable-sync",
                "--disable-dev-shm-usage", "--window-size=1100,800",
                f"--user-data-dir={tmp_path / 'chromium-profile'}"):
        opts.add_argument(arg)
    driver = webdriver.Chrome(service=Service(executable_path=CHROMEDRIVER), options=opts)
    driver.set_page_load_timeout(30)
    yield driver
    driver.quit()
    shutil.rmtree(tmp_path / "chromium-profile", ignore_errors=True)


# ---------------------------------------------------------------- the story


def test_given_the_seed_when_a_person_uses_the_widget_in_the_card_then_1c_gets_zayavka_219(
        systems, browser, tmp_path):
    from selenium.webdriver.common.by import By
    from selenium.webdriver.common.keys import Keys
    from selenium.webdriver.support.ui import Select

    amo, onec, store = systems
    card = _CardRig(amo, onec, store)
    site, endpoint, runs, errors = card.site, card.endpoint, card.runs, card.errors
    r = requests.post(amo.url + "/_sandbox/leads", json={"name": "Новый контакт по звонку"}, timeout=5)
    lead_id = r.json()["id"]
    site.config = {"lead_id": lead_id, "endpoint": endpoint.url, "secret": SECRET}
    d = browser
    try:
        d.get(site.url + "/")
        wait(lambda: d.find_element(By.TAG_NAME, "body").get_attribute("data-widget") == "ready",
             lambda: "the widget to start in the card")
        # it mounts once it has the field names from the service (GET /fields)
        wait(lambda: d.find_elements(By.CSS_SELECTOR, ".amo1c-status"),
             lambda: "the widget to mount with the service's field names")

        def options(css):  # may raise StaleElementReferenceException: the waits retry it
            return [o.text for o in Select(d.find_element(By.CSS_SELECTOR, css)).options][1:]

        def status():
            return d.find_element(By.CSS_SELECTOR, ".amo1c-status").text

        def locked(name):
            row = d.find_element(By.XPATH, f'//div[contains(@class,"linked-form__field")][.//span[text()="{name}"]]')
            control = row.find_element(By.CSS_SELECTOR, ".control--select")
            return ("amo1c-locked" in control.get_attribute("class")
                    and control.value_of_css_property("pointer-events") == "none")

        # «Врач» and «Время записи» are not editable by hand
        for name in ("Врач", "Время записи"):
            wait(lambda name=name: locked(name), lambda name=name: f"«{name}» to be locked")

        # pick 22.12.2021 in «Дата записи к врачу» -> the doctors working that day
        date_input = d.find_element(By.XPATH, '//div[contains(@class,"linked-form__field-date")]//input')
        date_input.send_keys("22.12.2021", Keys.TAB)
        wait(lambda: options(".amo1c-doctors") == [EFIMOVA, ISHAEVA],
             lambda: f"the two doctors (now {options('.amo1c-doctors')}, status {status()!r})")

        # pick Ефимова -> her free times, 8:15 first
        Select(d.find_element(By.CSS_SELECTOR, ".amo1c-doctors")).select_by_visible_text(EFIMOVA)
        times = wait(lambda: (t := options(".amo1c-times"))[:1] == ["8:15"] and t,
                     lambda: f"free times (now {options('.amo1c-times')[:3]}, status {status()!r})")
        assert times[:6] == ["8:15", "8:20", "8:25", "8:30", "8:35", "8:40"]
        assert "9:05" in times

        # pick 9:05; the card's fields show what the widget put there
        Select(d.find_element(By.CSS_SELECTOR, ".amo1c-times")).select_by_visible_text("9:05")

        def shown():
            return {el.find_element(By.XPATH, "ancestor::div[contains(@class,'linked-form__field')]")
                    .find_element(By.CSS_SELECTOR, ".linked-form__field__label").text: el.text
                    for el in d.find_elements(By.CSS_SELECTOR, ".control--select--button-inner")}

        wait(lambda: (c := shown()).get("Врач") == EFIMOVA and c.get("Время записи") in ("9:05", "09:05"),
             lambda: f"the card to show {EFIMOVA} at 9:05 (it shows {shown()})")

        # press the button: flag set, card saved (into the amoCRM emulator), daemon nudged
        button = d.find_element(By.XPATH, f'//button[text()="{BUTTON}"]')
        button.click()
        wait(lambda: runs or errors, lambda: f"the registration job to be nudged (status {status()!r})",
             timeout=20)
        saved = requests.get(f"{amo.url}/_sandbox/leads/{lead_id}", timeout=5).json()["fields"]
        assert saved["Дата записи к врачу"] == "22.12.2021"
        assert saved["Врач"] == EFIMOVA
        assert saved["Время записи"] in ("9:05", "09:05")
        assert not errors, errors
        d.save_screenshot(str(tmp_path / "card-after-click.png"))

        # 1C got «Заявка» 219 for this lead, and the card shows it
        def zayavki():
            r = requests.get(onec.url + "/_sandbox/zayavki", params={"lead": str(lead_id)}, timeout=5)
            return r.json()
        found = wait(zayavki, lambda: f"«Заявка» in 1C (job runs: {[(x.status, x.errors) for x in runs]})",
                     timeout=20)
        assert [z["number"] for z in found] == ["00000000219"]
        assert found[0]["doctor"] == EFIMOVA
        assert found[0]["start"] == "2021-12-22T09:05:00"
        wait(lambda: "Заявка № 219" in status(), lambda: f"the result in the card ({status()!r})", timeout=20)

        def number():
            return d.find_element(By.XPATH, '//div[contains(@class,"linked-form__field")]'
                                            '[.//span[text()="Заявка 1С"]]//input').get_attribute("value")

        def flag_set():
            return d.find_element(By.XPATH, '//div[contains(@class,"linked-form__field-checkbox")]'
                                            '//input').is_selected()

        wait(lambda: "219" in number(), lambda: f"«Заявка 1С» to show 219 (it shows {number()!r})")
        # the service cleared the flag; the card shows it
        wait(lambda: not flag_set(), lambda: "the card's flag to be cleared")
        assert not d.execute_script("return window.__errors"), d.execute_script("return window.__errors")
    finally:
        d.save_screenshot(str(tmp_path / "card.png"))
        card.close()
    assert (tmp_path / "card.png").stat().st_size > 1000


def test_given_a_wrong_secret_in_the_widget_settings_when_a_date_is_picked_then_the_card_says_so(
        systems, browser):
    from selenium.webdriver.common.by import By
    from selenium.webdriver.common.keys import Keys

    from amo1c_sync.services.slots import SlotFinder
    from amo1c_sync.onec import from_settings as onec_from_settings

    amo, onec, store = systems
    site = CardSite(amo.url, amo.fields())
    settings = load_settings(None, overrides={
        "onec": {"base_url": onec.url, "username": onec.username, "password": onec.password},
        "http": {"enabled": "yes", "secret": SECRET, "allowed_origin": site.url},
    })
    finder = SlotFinder.from_settings(settings, onec_from_settings(settings))
    endpoint = serve(create_app(settings, slot_finder=finder, store=store))
    site.config = {"lead_id": amo.create_lead("Сделка"), "endpoint": endpoint.url, "secret": "not-it"}
    d = browser
    try:
        d.get(site.url + "/")
        wait(lambda: d.find_element(By.TAG_NAME, "body").get_attribute("data-widget") == "ready",
             lambda: "the widget to start in the card")
        # it mounts once it has the field names from the service (GET /fields)
        wait(lambda: d.find_elements(By.CSS_SELECTOR, ".amo1c-status"),
             lambda: "the widget to mount with the service's field names")
        d.find_element(By.XPATH, '//div[contains(@class,"linked-form__field-date")]//input').send_keys(
            "22.12.2021", Keys.TAB)

        def status():
            return d.find_element(By.CSS_SELECTOR, ".amo1c-status")

        wait(lambda: "секрет" in status().text, lambda: f"the auth error ({status().text!r})")
        wait(lambda: "amo1c-error" in status().get_attribute("class"),
             lambda: f"the status to be marked an error ({status().get_attribute('class')!r})")
    finally:
        endpoint.close()
        site.close()


# ---------------------------------------------------------------- cancel from the card


class _CancelStory:
    """A lead registered in 1C as the daemon does it (the first test shows the widget's part of
    that), its card open in the browser, and what a person and the two systems see."""

    def __init__(self, card: _CardRig, amo, onec, driver):
        f = card.settings.fields
        self.card, self.amo, self.onec, self.d = card, amo, onec, driver
        self.lead_id = requests.post(amo.url + "/_sandbox/leads", timeout=5, json={
            "name": "Повторный визит", "fields": {f.date: "22.12.2021", f.doctor: EFIMOVA, f.time: "9:05",
                                                  f.flag: True}}).json()["id"]
        first = card.run_job(card.context(), "registration")
        rows = wait(self.zayavki, lambda: f"«Заявка» in 1C (the job: {first.status} {first.errors})")
        assert [(z["number"], z["posted"], z["deletion_mark"]) for z in rows] == [("00000000219", True, False)]
        assert not self.lead()["fields"].get(f.flag)

    def zayavki(self) -> list[dict]:
        return requests.get(self.onec.url + "/_sandbox/zayavki", params={"lead": str(self.lead_id)},
                            timeout=5).json()

    def lead(self) -> dict:
        return requests.get(f"{self.amo.url}/_sandbox/leads/{self.lead_id}", timeout=5).json()

    def jobs(self) -> str:
        return f"jobs: {[(x.status, x.errors) for x in self.card.runs]}, {self.card.errors}"

    def open_card(self) -> None:
        from selenium.webdriver.common.by import By

        self.card.site.config = {"lead_id": self.lead_id, "endpoint": self.card.endpoint.url, "secret": SECRET}
        self.d.get(self.card.site.url + "/")
        wait(lambda: self.d.find_element(By.TAG_NAME, "body").get_attribute("data-widget") == "ready",
             lambda: "the widget to start in the card")
        wait(self.cancel_button, lambda: f"the button «{CANCEL_BUTTON}» in the card")

    def cancel_button(self):
        from selenium.webdriver.common.by import By

        return self.d.find_element(By.XPATH, f'//button[text()="{CANCEL_BUTTON}"]')

    def press_cancel(self) -> None:
        """What a person does: press the button, then «OK» in the confirmation."""
        wait(lambda: self.cancel_button().is_enabled(), lambda: "the cancel button to be enabled")
        self.cancel_button().click()
        wait(lambda: self.d.switch_to.alert, lambda: "the widget to ask for a confirmation",
             ignoring=_alert_absent()).accept()

    def status(self):
        from selenium.webdriver.common.by import By

        return self.d.find_element(By.CSS_SELECTOR, ".amo1c-status")

    def says(self, text: str) -> None:
        """The card shows ``text`` as a success once the service has answered, buttons enabled again."""
        wait(lambda: text in self.status().text and self.cancel_button().is_enabled(),
             lambda: f"«{text}» in the card (it says {self.status().text!r}; {self.jobs()})", timeout=20)
        assert "amo1c-ok" in self.status().get_attribute("class"), self.status().text
        assert not self.d.execute_script("return window.__errors"), self.d.execute_script("return window.__errors")

    def cancel_flag_shown(self) -> bool:
        from selenium.webdriver.common.by import By

        return self.d.find_element(By.XPATH, '//div[contains(@class,"linked-form__field")]'
                                             f'[.//span[text()="{CANCEL_FLAG}"]]//input').is_selected()


@pytest.fixture
def cancel_story(systems, browser, tmp_path):
    amo, onec, store = systems
    card = _CardRig(amo, onec, store)
    try:
        story = _CancelStory(card, amo, onec, browser)
        story.open_card()
        yield story
    finally:
        browser.save_screenshot(str(tmp_path / "card-cancel.png"))
        card.close()


def test_given_a_registered_lead_when_the_cancel_button_is_pressed_then_its_zayavka_is_marked_for_deletion_and_the_card_says_so(  # noqa: E501
        cancel_story):
    s = cancel_story
    s.press_cancel()

    # 1C: that «Заявка» is marked for deletion (not a new one, not another one)
    def marked():
        rows = s.zayavki()
        return rows if rows and rows[0]["deletion_mark"] else None

    rows = wait(marked, lambda: f"the deletion mark in 1C ({s.zayavki()}; {s.jobs()}; card: "
                                f"{s.status().text!r})", timeout=20)
    assert [(z["number"], z["deletion_mark"]) for z in rows] == [("00000000219", True)]

    # amoCRM: the note, the flag cleared, the stage «Отменена»
    def cancelled():
        lead = s.lead()
        return lead if lead["status"] == "Отменена" and not lead["fields"].get(CANCEL_FLAG) else None

    lead = wait(cancelled, lambda: f"the lead cancelled (it is {s.lead()}; {s.jobs()})", timeout=20)
    assert lead["notes"].count("Запись отменена: Заявка № 219") == 1
    assert not s.card.errors, s.card.errors

    # the card: the result for the person, and its checkbox cleared
    s.says("Запись отменена: Заявка № 219")
    wait(lambda: not s.cancel_flag_shown(), lambda: "the card's cancel checkbox to be cleared")


def test_given_a_lead_cancelled_from_the_card_when_the_button_is_pressed_again_then_1c_is_unchanged_and_the_card_says_it_was_already(  # noqa: E501
        cancel_story):
    s = cancel_story
    s.press_cancel()
    s.says("Запись отменена: Заявка № 219")
    before = s.zayavki()

    s.press_cancel()
    s.says("Запись уже отменена: Заявка № 219")
    assert s.zayavki() == before
    lead = s.lead()
    assert lead["notes"].count("Запись отменена: Заявка № 219") == 1
    assert (lead["status"], lead["fields"].get(CANCEL_FLAG)) in (("Отменена", None), ("Отменена", False))
    assert not s.card.errors, s.card.errors
