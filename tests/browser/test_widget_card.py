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


def _dom_changing() -> tuple[type[BaseException], ...]:
    """What reading the card may raise while the widget re-renders it: the element just read was
    replaced (stale), or is not there yet. A wait retries on these instead of failing."""
    from selenium.common.exceptions import NoSuchElementException, StaleElementReferenceException

    return StaleElementReferenceException, NoSuchElementException


def wait(predicate, message, timeout: float = 15):
    """wait_until for the card: ``message`` is a function, read only if the wait fails."""
    return wait_until(predicate, timeout=timeout, message=message, ignoring=_dom_changing())


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

    from amo1c_sync.jobs import JobContext, run_job
    from amo1c_sync.services.slots import SlotFinder
    from amo1c_sync.onec import from_settings as onec_from_settings

    amo, onec, store = systems
    site = CardSite(amo.url, amo.fields())
    settings = load_settings(None, overrides={
        "amocrm": {"base_url": amo.url, "long_lived_token": TOKEN, "rate_limit": "1000"},
        "onec": {"base_url": onec.url, "username": onec.username, "password": onec.password},
        "http": {"enabled": "yes", "secret": SECRET, "allowed_origin": site.url},
    })
    finder = SlotFinder.from_settings(settings, onec_from_settings(settings))
    runs, errors = [], []

    def nudge(job: str) -> None:  # as Daemon.nudge: run the job now, off the request thread
        def work():
            try:
                runs.append(run_job(JobContext(settings, store), job))
            except Exception as exc:  # noqa: BLE001 - reported by the assertion below
                errors.append(exc)
        threading.Thread(target=work, daemon=True).start()

    endpoint = serve(create_app(settings, slot_finder=finder, store=store, nudge=nudge))
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
        endpoint.close()
        site.close()
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
