"""The control API under ``/_sandbox/`` (no auth; stable — tests, the story and drills drive it).

* ``GET /_sandbox/zayavki[?lead=<id>]`` -> ``[{"ref","number","client","doctor","start","end",
  "lead","posted","deletion_mark","client_ref"}]`` (client/doctor as names; start/end as ISO local datetimes,
  end null when empty; lead "" when empty).
* ``POST /_sandbox/zayavki`` ``{"lead": null|id, "doctor": name, "start": "2021-12-22T09:05:00",
  "end"?: …, "client"?: name, "posted"?: true}`` -> 201 ``{"ref","number"}`` (a «Заявка» made by hand).
* ``PATCH /_sandbox/zayavki/<ref>`` with any of ``{"start": "2021-12-23T15:30:00", "doctor":
  "Ишаева М.И.", "state": "Не пришел", "lead": "30000093"}`` (``state`` only where the base has the
  status attribute, ``[onec_names] zayavka_state``; the list then shows ``"state"`` too; ``lead``
  fills in, corrects or relinks «Номер AmoCRM», ``""`` empties it) -> 200, the «Заявка» as
  listed: an administrator moving the visit or fixing the lead number in the form.
  ``POST /_sandbox/zayavki/<ref>/delete`` (deletion mark, unposting a posted one), ``/unpost``,
  ``/post``. Each is one write: one new DataVersion.
* ``POST /_sandbox/services`` ``{"lead": id, "amount": "150.00", "date"?: iso}`` (or
  ``"zayavka_ref": ref``, or ``"zayavka_ref": null`` for no base) -> 201 ``{"ref","number"}``: an
  «Оказание услуг» на основании that «Заявка» (the newest non-deleted one of the lead) with one
  line «Номенклатура AmoCRM», quantity 1, price = sum = amount; posted.
* ``POST /_sandbox/services/<ref>/post`` (optional ``{"amount": …}`` changes the sum first),
  ``/unpost``, ``/delete`` (deletion mark; a posted document is unposted, as 1C does);
  ``GET /_sandbox/services`` lists them. ``PATCH /_sandbox/services/<ref>`` ``{"date": iso}`` moves
  the document's date; ``DELETE /_sandbox/services/<ref>`` deletes it outright (as OData DELETE).
* ``POST /_sandbox/schedules`` ``{"date": iso, "month": "2021-12-01", "posted": true,
  "lines": [{"doctor","date","start":"08:15","end":"13:00"}]}`` -> 201 ``{"ref","number"}``.
* ``GET /_sandbox/clients`` -> ``[{"ref","code","name","deletion_mark","phones"}]`` (phones as
  their presentations); ``POST /_sandbox/clients`` ``{"name", "phones"?: ["+7 (911) 123-45-67"],
  "deletion_mark"?: false}`` -> 201 ``{"ref","code"}``: a client entered by hand in 1C, its phones in
  the contact information (:mod:`.clients`).
* ``POST /_sandbox/faults``, ``GET /_sandbox/requests``: see :mod:`amo1c_sync.sandbox.base`.
"""

from __future__ import annotations

from datetime import date, datetime
from decimal import InvalidOperation
from typing import Callable

from werkzeug.routing import Rule
from werkzeug.wrappers import Request, Response

from amo1c_sync.sandbox.base import LoopbackEmulator, json_response
from amo1c_sync.sandbox.onec_emulator import clients
from amo1c_sync.sandbox.onec_emulator.errors import ODataError
from amo1c_sync.sandbox.onec_emulator.state import OneCBase


class OneCControl:
    """The emulated base's ``/_sandbox/`` control API: seed, faults, what a person does in 1C."""

    def __init__(self, base: OneCBase):
        self.base = base

    def rules(self) -> list[tuple[Rule, Callable[..., Response]]]:
        def rule(path: str, endpoint: str, methods: list[str]) -> tuple[Rule, Callable[..., Response]]:
            return Rule(path, endpoint=endpoint, methods=methods), self._guarded(getattr(self, f"_c_{endpoint}"))
        return [
            rule("/_sandbox/zayavki", "zayavki", ["GET", "POST"]),
            rule("/_sandbox/zayavki/<uuid:ref>", "zayavka", ["PATCH"]),
            rule("/_sandbox/zayavki/<uuid:ref>/<any(post, unpost, delete):action>", "zayavka_action", ["POST"]),
            rule("/_sandbox/services", "services", ["GET", "POST"]),
            rule("/_sandbox/services/<uuid:ref>", "service", ["PATCH", "DELETE"]),
            rule("/_sandbox/services/<uuid:ref>/<any(post, unpost, delete):action>", "service_action", ["POST"]),
            rule("/_sandbox/schedules", "schedules", ["POST"]),
            rule("/_sandbox/clients", "clients", ["GET", "POST"]),
        ]

    @staticmethod
    def _guarded(fn: Callable[..., Response]) -> Callable[..., Response]:
        def call(request: Request, **kw) -> Response:
            try:
                return fn(request, **kw)
            except ODataError as err:
                return json_response({"error": err.message}, err.status)
            except InvalidOperation as exc:
                return json_response({"error": f"not a number: {exc}"}, 400)
        return call

    def _c_zayavki(self, request: Request) -> Response:
        if request.method == "GET":
            return json_response(self.base.zayavki(request.args.get("lead")))
        body = LoopbackEmulator.control_body(request)
        row = self.base.add_zayavka(lead=body.get("lead"), doctor=body["doctor"],
                                    start=datetime.fromisoformat(body["start"]),
                                    end=datetime.fromisoformat(body["end"]) if body.get("end") else None,
                                    client=body.get("client"), posted=body.get("posted", True))
        return json_response({"ref": row["Ref_Key"], "number": row["Number"]}, 201)

    def _zayavka_view(self, ref: str) -> dict:
        return next(z for z in self.base.zayavki() if z["ref"] == ref)

    def _c_zayavka(self, request: Request, ref) -> Response:
        body = LoopbackEmulator.control_body(request)
        try:
            start = datetime.fromisoformat(body["start"]) if body.get("start") else None
        except ValueError:
            return json_response({"error": f"start: not an ISO date and time: {body['start']!r}"}, 400)
        lead = body.get("lead")
        self.base.change_zayavka(str(ref), start=start, doctor=body.get("doctor"), state=body.get("state"),
                                 lead=None if "lead" not in body else ("" if lead is None else str(lead)))
        return json_response(self._zayavka_view(str(ref)))

    def _c_zayavka_action(self, request: Request, ref, action: str) -> Response:
        self.base.zayavka_action(str(ref), action)
        return json_response(self._zayavka_view(str(ref)))

    def _c_services(self, request: Request) -> Response:
        if request.method == "GET":
            return json_response(self.base.services())
        body = LoopbackEmulator.control_body(request)
        if "zayavka_ref" in body:
            zref = body["zayavka_ref"]
        elif "lead" in body:
            found = [z for z in self.base.zayavki(str(body["lead"])) if not z["deletion_mark"]]
            if not found:
                return json_response({"error": f"no «Заявка» for lead {body['lead']}"}, 404)
            zref = found[-1]["ref"]
        else:
            return json_response({"error": "give lead or zayavka_ref"}, 400)
        when = datetime.fromisoformat(body["date"]) if body.get("date") else None
        row = self.base.add_service(zayavka_ref=zref, amount=body.get("amount", "0"), date_=when,
                                    post=body.get("post", True))
        return json_response({"ref": row["Ref_Key"], "number": row["Number"]}, 201)

    def _c_service(self, request: Request, ref) -> Response:
        if request.method == "DELETE":
            self.base.remove(self.base.names.services, str(ref))
            return Response(status=204)
        body = LoopbackEmulator.control_body(request)
        try:
            when = datetime.fromisoformat(str(body["date"]))
        except (KeyError, ValueError):
            return json_response({"error": 'give {"date": "2021-12-22T10:00:00"}'}, 400)
        row = self.base.change_service(str(ref), date_=when)
        return json_response({"ref": row["Ref_Key"], "number": row["Number"], "date": row["Date"],
                              "posted": row["Posted"], "deletion_mark": row["DeletionMark"]})

    def _c_service_action(self, request: Request, ref, action: str) -> Response:
        body = LoopbackEmulator.control_body(request)
        row = self.base.service_action(str(ref), action, body.get("amount"))
        return json_response({"ref": row["Ref_Key"], "number": row["Number"], "posted": row["Posted"],
                              "deletion_mark": row["DeletionMark"]})

    def _c_schedules(self, request: Request) -> Response:
        body = LoopbackEmulator.control_body(request)
        lines = []
        with self.base.lock:
            for line in body.get("lines", []):
                lines.append((self.base.by_name(self.base.names.doctors, line["doctor"]),
                              date.fromisoformat(line["date"][:10]),
                              datetime.strptime(line["start"], "%H:%M").time(),
                              datetime.strptime(line["end"], "%H:%M").time()))
        doc_date = datetime.fromisoformat(body["date"]) if body.get("date") else self.base.now()
        month = date.fromisoformat(body["month"][:10]) if body.get("month") else doc_date.date()
        row = self.base.add_schedule(lines, month=month, doc_date=doc_date, posted=body.get("posted", True))
        return json_response({"ref": row["Ref_Key"], "number": row["Number"]}, 201)

    def _c_clients(self, request: Request) -> Response:
        if request.method == "GET":
            return json_response(clients.client_views(self.base))
        body = LoopbackEmulator.control_body(request)
        phones = body.get("phones") or []
        if not str(body.get("name") or "").strip() or not isinstance(phones, list):
            return json_response({"error": 'give {"name": "…", "phones": ["…"]}'}, 400)
        row = clients.add_client(self.base, str(body["name"]), [str(p) for p in phones],
                                 deletion_mark=bool(body.get("deletion_mark", False)))
        return json_response({"ref": row["Ref_Key"], "code": row["Code"]}, 201)
