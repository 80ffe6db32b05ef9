"""The amoCRM emulator: the account's state, the API and the control API on one loopback server."""

from __future__ import annotations

from typing import Iterable

from werkzeug.wrappers import Request, Response

from amo1c_sync.sandbox.amocrm_emulator.api import AmoAPI, RateLimiter
from amo1c_sync.sandbox.amocrm_emulator.contacts import DEFAULT_CONTACT_FIELDS, ContactBook
from amo1c_sync.sandbox.amocrm_emulator.control import AmoControl
from amo1c_sync.sandbox.amocrm_emulator.oauth import Tokens
from amo1c_sync.sandbox.amocrm_emulator.problems import (
    HTML_403, HTML_429, Problem, html, problem_response)
from amo1c_sync.sandbox.amocrm_emulator.state import DEFAULT_LEAD_FIELDS, LeadBook
from amo1c_sync.sandbox.base import LoopbackEmulator


class AmoCRMEmulator(LoopbackEmulator):
    """``with AmoCRMEmulator() as emu: emu.url`` or ``start()`` / ``stop()``; ``emu.book`` is
    the account's data, ``emu.tokens`` its OAuth state, ``emu.limiter`` its rate limit."""

    thread_name = "amocrm-emulator"
    window_prefix = "/api/"

    def __init__(self, host: str = "127.0.0.1", port: int = 0, *, rate_limit: float = 7,
                 block_after: int = 30, block_window: float = 10.0, block_seconds: float = 60.0,
                 timezone: str = "Europe/Moscow", access_token_ttl: int = 86400,
                 refresh_token_ttl: int = 90 * 86400,
                 client_id: str = "amo1c-sandbox-client",
                 client_secret: str = "amo1c-sandbox-secret",
                 redirect_uri: str = "https://127.0.0.1/amo1c-sync/oauth",
                 long_lived_token: str | None = None,
                 lead_fields: Iterable[tuple[str, str, Iterable[str]]] = DEFAULT_LEAD_FIELDS,
                 contact_fields: Iterable[tuple[str, str, str | None, Iterable[str]]] = DEFAULT_CONTACT_FIELDS,
                 subdomain: str = "clinic", account_id: int = 29000001):
        super().__init__(host, port)
        self.subdomain, self.account_id = subdomain, account_id
        self.book = LeadBook(timezone=timezone, account_id=account_id, lead_fields=lead_fields)
        self.tokens = Tokens(client_id=client_id, client_secret=client_secret, redirect_uri=redirect_uri,
                             access_token_ttl=access_token_ttl, refresh_token_ttl=refresh_token_ttl,
                             long_lived_token=long_lived_token, account_id=account_id)
        self.limiter = RateLimiter(rate_limit, block_after, block_window, block_seconds)
        self.contacts = ContactBook(self.book, contact_fields)
        self.api = AmoAPI(self.book, self.tokens, self.limiter, subdomain=subdomain, contacts=self.contacts)
        self.control = AmoControl(self.book, self.tokens, self.limiter, contacts=self.contacts)

    # ------------------------------------------------------------------ server parts
    def handle(self, request: Request, environ) -> Response:
        return self.api(request)

    def control_rules(self):
        return self.control.rules()

    def fault_response(self, status: int) -> Response:
        if status == 429:
            return html(HTML_429, 429)
        if status == 403:
            return html(HTML_403, 403)
        if status >= 500:
            return html(f"<html><body><h1>{status}</h1>nginx</body></html>", status)
        return problem_response(status, Problem(status, "Injected fault").body)

    # ------------------------------------------------------------------ settings
    @property
    def tz(self):
        return self.book.tz

    @tz.setter
    def tz(self, zone) -> None:
        self.book.tz = zone
        self.book.timezone_name = zone.key

    @property
    def timezone_name(self) -> str:
        return self.book.timezone_name

    @property
    def rate_limit(self) -> float:
        return self.limiter.rate_limit

    @property
    def client_id(self) -> str:
        return self.tokens.client_id

    @property
    def client_secret(self) -> str:
        return self.tokens.client_secret

    @property
    def redirect_uri(self) -> str:
        return self.tokens.redirect_uri

    # ------------------------------------------------------------------ in-process shortcuts
    def add_field(self, name: str, ftype: str, options: Iterable[str] = ()) -> int:
        return self.book.add_field(name, ftype, options)

    def field_id(self, name: str) -> int:
        return self.book.field_by_name(name)["id"]

    def fields(self) -> list[dict]:
        return self.book.fields()

    def create_lead(self, name: str = "", fields: dict | None = None, price: int | None = None) -> int:
        return self.book.create_lead(name, fields, price)

    def update_lead(self, lead_id: int, fields: dict | None = None, *, name: str | None = None,
                    price: int | None = None) -> None:
        self.book.update_lead(lead_id, fields, name=name, price=price)

    def delete_lead(self, lead_id: int) -> None:
        self.book.delete_lead(lead_id)

    def lead(self, lead_id: int) -> dict:
        return self.book.lead(lead_id)

    def token_stats(self) -> dict:
        return self.tokens.stats()

    def expire_tokens(self) -> None:
        self.tokens.expire_all()

    def new_auth_code(self) -> dict:
        return self.tokens.new_code()

    def issue_long_lived_token(self) -> str:
        return self.tokens.long_lived()

    def block(self, seconds: float) -> None:
        self.limiter.block(seconds)

    def unblock(self) -> None:
        self.limiter.unblock()
