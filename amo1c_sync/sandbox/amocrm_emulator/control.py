"""The control API under ``/_sandbox/`` (stable; tests, benchmarks and drills drive it).

* ``POST /_sandbox/leads`` ``{"name", "price"?, "fields": {"<field name>": value as typed}}`` ->
  201 ``{"id"}``. Values are what a person types: ``"22.12.2021"`` (or ``"2021-12-22"``) for a date,
  the option text for a select (an option not in the list is ADDED to the field, as the clinic's
  widget/directory sync would), ``true`` for a checkbox, ``"1500.50"`` or a number for numeric,
  ``null`` clears. ``PATCH /_sandbox/leads/<id>`` same shape; ``GET /_sandbox/leads/<id>`` ->
  ``{"id","name","price","updated_at","deleted","fields":{name: value},"notes":[text,...]}``
  (dates shown as ``DD.MM.YYYY``, numeric as a string), plus ``"pipeline"``, ``"status"`` (names)
  and their ids; ``"status": "<stage name>"`` (or ``"Pipeline / Stage"``) in a POST or PATCH puts
  the lead there (a stage of the main pipeline «Запись к врачу» first; a new lead without one is in
  «Новая заявка»); ``GET /_sandbox/leads`` lists them;
  ``DELETE /_sandbox/leads/<id>`` deletes the lead (the API then treats it as unknown).
* ``GET /_sandbox/fields`` -> the lead fields with their options.
* A lead's contacts (``"contact"``, ``"contacts"`` in the bodies above; the lead view adds
  ``"contact"``, the main one, and ``"contacts"``) and ``/_sandbox/contacts``: see :mod:`.contacts`.
* ``POST /_sandbox/faults``, ``GET /_sandbox/requests``: see :mod:`amo1c_sync.sandbox.base`
  (``max_per_second`` counts ``/api/`` requests).
* ``POST /_sandbox/tokens/expire`` expires every access token; ``GET /_sandbox/tokens`` ->
  ``{"refresh_reuse_count","refresh_count","code_exchanges","active_refresh_tokens"}``;
  ``POST /_sandbox/tokens/long_lived`` -> ``{"token"}``.
* ``POST /_sandbox/oauth/code`` -> ``{"code","client_id","client_secret","redirect_uri"}`` (a fresh
  authorization code for the preset OAuth client).
* ``POST /_sandbox/block`` ``{"seconds": S}`` blocks the API (403) as if abused; ``DELETE`` lifts it.
"""

from __future__ import annotations

from typing import Callable

from werkzeug.routing import Rule
from werkzeug.wrappers import Request, Response

from amo1c_sync.sandbox.amocrm_emulator.api import RateLimiter
from amo1c_sync.sandbox.amocrm_emulator.contacts import ContactBook
from amo1c_sync.sandbox.amocrm_emulator.oauth import Tokens
from amo1c_sync.sandbox.amocrm_emulator.problems import Problem
from amo1c_sync.sandbox.amocrm_emulator.state import LeadBook
from amo1c_sync.sandbox.base import LoopbackEmulator, json_response


class AmoControl:
    """The emulated account's ``/_sandbox/`` control API: seed, faults, inspection."""

    def __init__(self, book: LeadBook, tokens: Tokens, limiter: RateLimiter, *,
                 contacts: ContactBook | None = None):
        self.book, self.tokens, self.limiter = book, tokens, limiter
        self.contacts = contacts if contacts is not None else ContactBook(book)

    def rules(self) -> list[tuple[Rule, Callable[..., Response]]]:
        def rule(path: str, endpoint: str, methods: list[str]) -> tuple[Rule, Callable[..., Response]]:
            return Rule(path, endpoint=endpoint, methods=methods), self._guarded(getattr(self, f"_c_{endpoint}"))
        return [
            rule("/_sandbox/leads", "leads", ["GET", "POST"]),
            rule("/_sandbox/leads/<int:lid>", "lead", ["GET", "PATCH", "DELETE"]),
            rule("/_sandbox/fields", "fields", ["GET"]),
            rule("/_sandbox/contacts", "contacts", ["POST"]),
            rule("/_sandbox/contacts/<int:cid>", "contact", ["GET", "PATCH"]),
            rule("/_sandbox/tokens", "tokens", ["GET"]),
            rule("/_sandbox/tokens/expire", "tokens_expire", ["POST"]),
            rule("/_sandbox/tokens/long_lived", "long_lived", ["POST"]),
            rule("/_sandbox/oauth/code", "code", ["POST"]),
            rule("/_sandbox/block", "block", ["POST", "DELETE"]),
        ]

    @staticmethod
    def _guarded(fn: Callable[..., Response]) -> Callable[..., Response]:
        def call(request: Request, **kw) -> Response:
            try:
                return fn(request, **kw)
            except Problem as p:
                return json_response(p.body, p.status)
        return call

    def _c_leads(self, request: Request) -> Response:
        if request.method == "GET":
            return json_response([{**lead, **self.contacts.lead_view(lead["id"])}
                                  for lead in self.book.human_list()])
        body = LoopbackEmulator.control_body(request)
        with self.book.lock:
            lid = self.book.create_lead(str(body.get("name") or ""), body.get("fields") or {},
                                        price=body.get("price"), status=body.get("status"))
            self.contacts.attach(lid, body)
        return json_response({"id": lid}, 201)

    def _c_lead(self, request: Request, lid: int) -> Response:
        if request.method == "GET":
            return json_response({**self.book.lead(lid), **self.contacts.lead_view(lid)})
        if request.method == "DELETE":
            self.book.delete_lead(lid)
            return Response(status=204)
        body = LoopbackEmulator.control_body(request)
        with self.book.lock:
            self.book.update_lead(lid, body.get("fields") or {}, name=body.get("name"), price=body.get("price"),
                                  status=body.get("status"))
            self.contacts.attach(lid, body)
        return json_response({**self.book.lead(lid), **self.contacts.lead_view(lid)})

    def _c_contacts(self, request: Request) -> Response:
        body = LoopbackEmulator.control_body(request)
        cid = self.contacts.create(str(body.get("name") or ""), body.get("phones") or (), body.get("fields"))
        return json_response({"id": cid}, 201)

    def _c_contact(self, request: Request, cid: int) -> Response:
        with self.contacts.lock:
            if request.method == "PATCH":
                self.contacts.human_update(cid, LoopbackEmulator.control_body(request))
            return json_response(self.contacts.human_view(self.contacts.contact_or_404(cid)))

    def _c_fields(self, request: Request) -> Response:
        return json_response(self.book.fields())

    def _c_tokens(self, request: Request) -> Response:
        return json_response(self.tokens.stats())

    def _c_tokens_expire(self, request: Request) -> Response:
        self.tokens.expire_all()
        return json_response(self.tokens.stats())

    def _c_long_lived(self, request: Request) -> Response:
        return json_response({"token": self.tokens.long_lived()}, 201)

    def _c_code(self, request: Request) -> Response:
        return json_response(self.tokens.new_code(), 201)

    def _c_block(self, request: Request) -> Response:
        if request.method == "DELETE":
            self.limiter.unblock()
        else:
            body = LoopbackEmulator.control_body(request)
            self.limiter.block(float(body.get("seconds", self.limiter.block_seconds)))
        return json_response({"blocked": self.limiter.blocked})
