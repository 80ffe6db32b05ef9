"""The 1C emulator: the base, the OData interface and the control API on one loopback server."""

from __future__ import annotations

from werkzeug.wrappers import Request, Response

from amo1c_sync.onec.names import OneCNames
from amo1c_sync.sandbox import seed as seed_data
from amo1c_sync.sandbox.base import LoopbackEmulator
from amo1c_sync.sandbox.onec_emulator.api import ODATA_MARK, OData
from amo1c_sync.sandbox.onec_emulator.control import OneCControl
from amo1c_sync.sandbox.onec_emulator.errors import ODataError, odata_error_response
from amo1c_sync.sandbox.onec_emulator.schema import number_prefix_from_env
from amo1c_sync.sandbox.onec_emulator.state import OneCBase


class OneCEmulator(LoopbackEmulator):
    """``with OneCEmulator() as emu: OneC(emu.odata_url, emu.username, emu.password)``.

    ``url`` is the publication root (``http://127.0.0.1:PORT``); the OData service is at
    ``url + "/odata/standard.odata/"`` (``odata_url``). ``emu.base`` is the base's data.
    """

    thread_name = "onec-emulator"
    window_prefix = "/"

    def __init__(self, host: str = "127.0.0.1", port: int = 0, *, username: str = "Администратор",
                 password: str = "пароль-песочницы", seed: bool = True, base_ref_mode: str = "composite",
                 next_zayavka_number: int = seed_data.NEXT_ZAYAVKA_NUMBER, names: OneCNames | None = None,
                 timezone: str = "Europe/Moscow", cold_start_ms: int = 0, idle_after_s: float = 300.0,
                 seed_defaults: bool = True, number_prefix: str | None = None):
        names = names or OneCNames()
        if names.base_ref_mode != base_ref_mode:
            names = OneCNames(**{**{f: getattr(names, f) for f in OneCNames.field_names()},
                                 "base_ref_mode": base_ref_mode})
        super().__init__(host, port)
        self.username, self.password = username, password
        if number_prefix is None:  # the sandbox's format unless told: AMO1C_SANDBOX_NUMBER_PREFIX
            number_prefix = number_prefix_from_env()
        self.base = OneCBase(names, timezone=timezone, next_zayavka_number=next_zayavka_number, seed=seed,
                             seed_defaults=seed_defaults, number_prefix=number_prefix)
        self.odata = OData(self.base, username=username, password=password,
                           cold_start_ms=cold_start_ms, idle_after_s=idle_after_s)
        self.control = OneCControl(self.base)

    @property
    def odata_url(self) -> str:
        return f"{self.url}{ODATA_MARK}/"

    # ------------------------------------------------------------------ server parts
    def handle(self, request: Request, environ) -> Response:
        try:
            return self.odata(request)
        except ODataError as err:
            return odata_error_response(err)
        except Exception as exc:  # noqa: BLE001 - an emulator bug must look like 1C's internal error, not hang
            return odata_error_response(ODataError(500, "-1", f"Внутренняя ошибка эмулятора: {exc!r}"))

    def control_rules(self):
        return self.control.rules()

    def fault_response(self, status: int) -> Response:
        """5xx from the web server in front of 1C (an Apache page); 4xx as 1C's own odata.error;
        a 2xx with a small HTML body (what a proxy in front of 1C may add)."""
        if status < 300:
            return Response("<html><body>OK</body></html>", status=status, content_type="text/html")
        if status >= 500:
            return Response(f"<html><body><h1>{status}</h1>Apache</body></html>", status=status,
                            content_type="text/html")
        return odata_error_response(ODataError(status, "-1", "Injected fault"))

    # ------------------------------------------------------------------ the base, in process
    @property
    def names(self) -> OneCNames:
        return self.base.names

    @property
    def number_prefix(self) -> str:
        return self.base.number_prefix

    def number(self, counter: int, set_name: str | None = None) -> str:
        """The ``Number`` this base gives a document's ``counter`` (``00000000219``, ``МС00-000219``)."""
        etype = self.base.schema[set_name or self.base.names.zayavka]
        return etype.format_number(counter, self.base.number_prefix)

    @property
    def base_ref_mode(self) -> str:
        return self.base.base_ref_mode

    @property
    def schema(self):
        return self.base.schema

    @property
    def tz(self):
        return self.base.tz

    def now(self):
        return self.base.now()

    def load_seed(self) -> None:
        self.base.load_seed()

    def add_catalog_item(self, *args, **kwargs) -> dict:
        return self.base.add_catalog_item(*args, **kwargs)

    def add_schedule(self, *args, **kwargs) -> dict:
        return self.base.add_schedule(*args, **kwargs)

    def add_zayavka(self, **kwargs) -> dict:
        return self.base.add_zayavka(**kwargs)

    def zayavki(self, lead: str | None = None) -> list[dict]:
        return self.base.zayavki(lead)

    def add_service(self, **kwargs) -> dict:
        return self.base.add_service(**kwargs)

    def service_action(self, ref: str, action: str, amount=None) -> dict:
        return self.base.service_action(ref, action, amount)

    def services(self) -> list[dict]:
        return self.base.services()

    def clients(self) -> list[dict]:
        return self.base.clients()

    def rows(self, set_name: str) -> list[dict]:
        return self.base.rows(set_name)
