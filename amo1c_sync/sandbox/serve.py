"""Both emulators on loopback, and a sync.ini that points the real daemon at them."""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

from amo1c_sync.sandbox.amocrm_emulator import AmoCRMEmulator
from amo1c_sync.sandbox.amocrm_emulator.contacts import PREDEFINED_CONTACT_FIELDS
from amo1c_sync.sandbox.onec_emulator import OneCEmulator


@dataclass
class Sandbox:
    """``with Sandbox() as sb:`` starts both emulators; ``write_config(path, store_url)`` writes a
    sync.ini for them."""

    amo_port: int = 0
    onec_port: int = 0
    amo_rate_limit: float = 7.0
    # a new clinic's systems: no lead fields of the integration in amoCRM, and no «Клиент из
    # AmoCRM» / «Номенклатура AmoCRM» in 1C — what `setup amocrm` and `setup 1c` are for
    fresh: bool = False

    def __post_init__(self):
        kwargs = {"lead_fields": (), "contact_fields": PREDEFINED_CONTACT_FIELDS} if self.fresh else {}
        self.amo = AmoCRMEmulator(port=self.amo_port, rate_limit=self.amo_rate_limit, **kwargs)
        self.onec = OneCEmulator(port=self.onec_port, seed_defaults=not self.fresh)

    def start(self) -> "Sandbox":
        self.amo.start()
        self.onec.start()
        return self

    def stop(self) -> None:
        self.amo.stop()
        self.onec.stop()

    def __enter__(self) -> "Sandbox":
        return self.start()

    def __exit__(self, *exc) -> None:
        self.stop()

    @property
    def onec_odata_url(self) -> str:
        return f"{self.onec.url}/odata/standard.odata"

    def urls(self) -> dict[str, str]:
        return {"amocrm": self.amo.url, "onec": self.onec_odata_url,
                "amocrm_control": f"{self.amo.url}/_sandbox/", "onec_control": f"{self.onec.url}/_sandbox/"}

    def credentials(self) -> dict[str, str]:
        """What a person copies into sync.ini: the integration's keys as amoCRM's «Ключи и доступы»
        tab shows them, and the 1C user (the emulators' own test values, nothing real)."""
        return {"client_id": self.amo.client_id, "client_secret": self.amo.client_secret,
                "redirect_uri": self.amo.redirect_uri, "onec_username": self.onec.username,
                "onec_password": self.onec.password,
                "auth_code_from": f"{self.amo.url}/_sandbox/oauth/code (POST)"}

    def config_text(self, store_url: str, *, registration_interval: str = "2s",
                    payments_interval: str = "2s", directory_interval: str = "1h",
                    http_port: int | None = None, http_secret: str = "sandbox-widget-secret") -> str:
        http = (f"[http]\nenabled = yes\nport = {http_port}\nsecret = {http_secret}\n"
                f"allowed_origin = {self.amo.url}\n") if http_port else ""
        return (
            "# Written by `amo1c-sync sandbox`: points at the emulators on loopback.\n"
            "[amocrm]\n"
            f"base_url = {self.amo.url}\n"
            f"client_id = {self.amo.client_id}\n"
            f"client_secret = {self.amo.client_secret}\n"
            f"redirect_uri = {self.amo.redirect_uri}\n"
            f"rate_limit = {self.amo_rate_limit:g}\n"
            "[onec]\n"
            f"base_url = {self.onec_odata_url}\n"
            f"username = {self.onec.username}\n"
            f"password = {self.onec.password}\n"
            "read_timeout = 10s\n"
            "[sync]\n"
            f"registration_interval = {registration_interval}\n"
            f"payments_interval = {payments_interval}\n"
            f"directory_interval = {directory_interval}\n"
            "retry_backoff_base = 2s\n"
            "retry_backoff_max = 30s\n"
            f"lifecycle_interval = {registration_interval}\n"
            "# the seed's appointments are in December 2021: the lifecycle's window reaches back to them\n"
            "lookback = 2500d\n"
            "hot_window = 2500d\n"
            "[fields]\n"
            "cancel_flag = Отменить запись в 1С\n"
            "[stages]\n"
            "registered = Запись к врачу / Записан на приём\n"
            "cancelled = Запись к врачу / Отменена\n"
            "no_show = Запись к врачу / Не пришёл\n"
            "paid = Запись к врачу / Оплачено\n"
            "[store]\n"
            f"url = {store_url}\n"
            f"{http}"
        )

    def write_config(self, path: str | Path, store_url: str, **kwargs) -> Path:
        path = Path(path)
        path.parent.mkdir(parents=True, exist_ok=True)
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
        with os.fdopen(fd, "w", encoding="utf-8") as fh:
            fh.write(self.config_text(store_url, **kwargs))
        os.chmod(path, 0o600)
        return path

    def authorise(self, settings, store) -> dict:
        """What the administrator does once with `amo1c-sync auth --code`: a fresh code from the
        integration's settings, exchanged for the first token pair."""
        from amo1c_sync.amocrm import token_manager_from_settings

        code = self.amo.new_auth_code()["code"]
        return token_manager_from_settings(settings, store).exchange_code(code)
