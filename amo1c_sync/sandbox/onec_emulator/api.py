"""The standard OData interface (v3) as 1C speaks it, routed with a werkzeug Map.

Served under ``/odata/standard.odata/`` and ``/<infobase>/odata/standard.odata/``, as a real
publication is. Cyrillic names arrive percent-encoded (UTF-8).

* Entity sets ``Catalog_…``, ``Document_…`` and tabular sections ``Document_…_<ТЧ>`` (read-only,
  rows carry the owner's ``Ref_Key`` and ``LineNumber``); tabular sections also appear as arrays
  inside the document.
* ``$format=json`` (or ``Accept: application/json``) gives JSON; without it reads answer Atom XML
  (:mod:`.atom`), as 1C does. Writes (POST/PATCH) take JSON only here (406 otherwise).
* ``$filter`` (:mod:`.filters`), ``$select`` and ``$expand`` (:mod:`.views`), ``$top``, ``$skip``,
  ``$orderby`` (``asc``/``desc``, several keys), ``$inlinecount=allpages`` — which makes 1C
  ignore ``$top`` and ``$skip`` («Использование параметра $inlinecount приводит к игнорированию
  параметров $skip и $top», the 1C OData docs 17.4.6.2, see :mod:`.schema`) — and ``Set/$count``,
  the bare number (17.4.6.1). Paging is client-driven (no ``odata.nextLink``).
* ``Set(guid'…')/X`` (a navigation property) answers the object the reference ``X_Key`` points to.
* The service root lists the entity sets: ``{"odata.metadata": …, "value": [{"name", "url"}]}``;
  ``$metadata``: :mod:`.metadata`.
* ``POST`` set -> 201 with the full object; ``PATCH`` set(guid'…') -> 200 with the full object
  (``Posted`` cannot be written: 400); ``DELETE`` -> 204;
  ``POST Document_X(guid'…')/Post?PostingModeOperational=false`` and ``/Unpost`` -> 200, empty body,
  with or without ``$format`` (the docs' URL for it has none, 17.4.13.1.7);
  posting a document marked for deletion -> 500 ``odata.error``.
* Errors: ``{"odata.error":{"code":"…","message":{"lang":"ru","value":"…"}}}``; codes used here:
  14 parse error (400), 6 not found (404), 13 unsupported operation (400), -1 internal (500).
* HTTP Basic, login and password in UTF-8 (Cyrillic logins work); 401 without or with wrong ones.
* Cold start: with ``cold_start_ms`` the first OData request, and the first after ``idle_after_s``
  seconds without one, is delayed that long.
"""

from __future__ import annotations

import base64
import json
import re
import threading
import time
import uuid
from decimal import Decimal, InvalidOperation
from typing import Any

from werkzeug.exceptions import HTTPException
from werkzeug.routing import Map, Rule
from werkzeug.wrappers import Request, Response

from amo1c_sync.sandbox.onec_emulator import atom, views
from amo1c_sync.sandbox.onec_emulator.errors import ODataError, json_response
from amo1c_sync.sandbox.onec_emulator.filters import (
    DATETIME_TEXT, _evaluate, _key_lookup, _norm_str, _order_key, _truth, parse_filter)
from amo1c_sync.sandbox.onec_emulator.metadata import metadata_response
from amo1c_sync.sandbox.onec_emulator.schema import EntityType
from amo1c_sync.sandbox.onec_emulator.state import OneCBase

ODATA_MARK = "/odata/standard.odata"


def _rules() -> list[Rule]:
    """Each route with and without the infobase's publication prefix."""
    routes = [("/", "service_root"), ("/$metadata", "metadata"), ("/<resource>", "resource"),
              ("/<resource>/<action>", "action")]
    out = []
    for suffix, endpoint in routes:
        out.append(Rule(ODATA_MARK + suffix, endpoint=endpoint, defaults={"publication": ""}))
        out.append(Rule("/<path:publication>" + ODATA_MARK + suffix, endpoint=endpoint))
    return out


class OData:
    """Authenticate (HTTP Basic), wake up from a cold start, then the handler for the route."""

    def __init__(self, base: OneCBase, *, username: str, password: str,
                 cold_start_ms: int = 0, idle_after_s: float = 300.0):
        self.base = base
        self.username, self.password = username, password
        self.cold_start_ms, self.idle_after_s = cold_start_ms, idle_after_s
        self._last_odata: float | None = None
        self._cold_lock = threading.Lock()
        self.url_map = Map(_rules(), strict_slashes=False, merge_slashes=False)

    def __call__(self, request: Request) -> Response:
        try:
            endpoint, args = self.url_map.bind_to_environ(request.environ).match()
        except HTTPException:
            return Response("Not Found", status=404, content_type="text/plain")
        if not self._authorized(request):
            return Response("", status=401, headers={"WWW-Authenticate": 'Basic realm="1C:Enterprise"'})
        self._cold_start()
        args = dict(args)
        publication = args.pop("publication")
        root = request.host_url + (publication + "/" if publication else "") + ODATA_MARK.lstrip("/") + "/"
        return getattr(self, f"_h_{endpoint}")(request, root, **args)

    def _authorized(self, request: Request) -> bool:
        header = request.headers.get("Authorization", "")
        if not header.startswith("Basic "):
            return False
        try:
            raw = base64.b64decode(header[6:], validate=True).decode("utf-8")
        except (ValueError, UnicodeDecodeError):
            return False
        user, _, password = raw.partition(":")
        return user == self.username and password == self.password

    def _cold_start(self) -> None:
        if not self.cold_start_ms:
            return
        with self._cold_lock:
            now = time.monotonic()
            cold = self._last_odata is None or now - self._last_odata > self.idle_after_s
            self._last_odata = now
        if cold:
            time.sleep(self.cold_start_ms / 1000.0)

    @staticmethod
    def _json(request: Request) -> bool:
        fmt = request.args.get("$format")
        if fmt is not None:
            return fmt.lower().split(";")[0] in ("json", "application/json")
        return "application/json" in request.headers.get("Accept", "")

    def _require_json(self, request: Request) -> None:
        if not self._json(request):
            raise ODataError(406, "14", "Эмулятор принимает запись только в JSON: укажите $format=json")

    # ------------------------------------------------------------------ routes
    def _h_service_root(self, request: Request, root: str) -> Response:
        if request.method != "GET":
            raise ODataError(400, "13", f"Метод {request.method} не поддерживается")
        if not self._json(request):
            return atom.service(root, self.base.all_sets())
        return json_response({"odata.metadata": root + "$metadata",
                              "value": [{"name": s, "url": s} for s in self.base.all_sets()]})

    def _h_metadata(self, request: Request, root: str) -> Response:
        return metadata_response(self.base)

    def _h_resource(self, request: Request, root: str, resource: str) -> Response:
        if request.method in ("POST", "PATCH", "MERGE", "PUT"):
            self._require_json(request)
        set_name, ref = _split_key(resource)
        etype, ts = self.base.resolve_set(set_name)
        with self.base.lock:
            if ts is not None:
                if request.method != "GET" or ref is not None:
                    raise ODataError(400, "13", "Cоздание и изменение строк табличной части напрямую не поддерживается")
                return self._query(request, root, set_name, self.base.ts_rows(etype, ts),
                                   self.base.ts_types(etype, ts))
            if ref is None:
                return self._collection(request, root, etype)
            return self._entity(request, root, etype, ref)

    def _h_action(self, request: Request, root: str, resource: str, action: str) -> Response:
        set_name, ref = _split_key(resource)
        etype, ts = self.base.resolve_set(set_name)
        if action == "$count" and ref is None and request.method == "GET":
            return self._count(request, etype, ts)
        if request.method == "GET" and ref is not None and ts is None:
            with self.base.lock:
                target, row = views.navigate(self.base, etype, ref, action)
                return self._one(request, root, target, row, views.Shape())
        if request.method != "POST" or ref is None or ts is not None or action not in ("Post", "Unpost"):
            raise ODataError(400, "13", f"Операция {action} не поддерживается")
        if etype.kind != "Document":
            raise ODataError(400, "13", f"Операция {action} не поддерживается для {set_name}")
        with self.base.lock:
            if action == "Post":
                self.base.post(set_name, ref)
            else:
                self.base.unpost(set_name, ref)
        return Response(b"", status=200)

    def _count(self, request: Request, etype: EntityType, ts: str | None) -> Response:
        """``Set/$count``: «только число элементов коллекции, отформатированное как обычное число»."""
        with self.base.lock:
            if ts is None:
                rows, types = list(self.base.data[etype.name].values()), etype.fields
            else:
                rows, types = self.base.ts_rows(etype, ts), self.base.ts_types(etype, ts)
            flt = request.args.get("$filter")
            if flt is not None:
                tree = parse_filter(flt, lambda name: name in types)
                rows = [r for r in rows if _truth(_evaluate(tree, r, types))]
            return Response(str(len(rows)), content_type="text/plain;charset=utf-8")

    def _one(self, request: Request, root: str, etype: EntityType, row: dict, shape: "views.Shape") -> Response:
        if not self._json(request):
            return atom.entry(root, etype.name, etype, views.entity(self.base, etype, row, shape))
        return json_response({"odata.metadata": f"{root}$metadata#{etype.name}/@Element",
                              **views.entity(self.base, etype, row, shape)})

    def _collection(self, request: Request, root: str, etype: EntityType) -> Response:
        if request.method == "GET":
            return self._query(request, root, etype.name, list(self.base.data[etype.name].values()),
                               etype.fields)
        if request.method == "POST":
            values, tabular = self._body(request, etype, creating=True)
            row = self.base.insert(etype.name, values, tabular=tabular)
            return json_response({"odata.metadata": f"{root}$metadata#{etype.name}/@Element",
                                  **views.entity(self.base, etype, row, views.Shape())}, 201)
        raise ODataError(400, "13", f"Метод {request.method} не поддерживается для {etype.name}")

    def _entity(self, request: Request, root: str, etype: EntityType, ref: str) -> Response:
        method, element = request.method, f"{root}$metadata#{etype.name}/@Element"
        row = self.base.find(etype.name, ref)
        if method == "GET":
            shape = views.parse_shape(request.args.get("$select"), request.args.get("$expand"), etype,
                                      etype.fields, single=True)
            return self._one(request, root, etype, row, shape)
        if method in ("PATCH", "MERGE"):
            values, tabular = self._body(request, etype, creating=False)
            self.base.pad(etype, values)
            row.update(values)
            for name, lines in tabular.items():
                row[name] = self.base.lines(ref, lines)
            self.base.touch(row)
            return json_response({"odata.metadata": element, **views.entity(self.base, etype, row, views.Shape())})
        if method == "DELETE":
            del self.base.data[etype.name][ref]
            return Response(b"", status=204)
        raise ODataError(400, "13", f"Метод {method} не поддерживается для {etype.name}")

    # ------------------------------------------------------------------ reading
    def _query(self, request: Request, root: str, set_name: str, rows: list[dict],
               types: dict[str, str]) -> Response:
        args = request.args
        etype = self.base.schema.get(set_name)
        flt = args.get("$filter")
        tree = parse_filter(flt, lambda name: name in types) if flt is not None else None
        shape = views.parse_shape(args.get("$select"), args.get("$expand"), etype, types)
        keys = _key_lookup(tree) if tree is not None else None
        if keys is not None:
            rows = [r for r in rows if _norm_str(str(r.get("Ref_Key") or "")) in keys]
        elif tree is not None:
            rows = [r for r in rows if _truth(_evaluate(tree, r, types))]
        rows = _ordered(rows, args.get("$orderby"), types)
        skip, top = _paging(args)
        count = len(rows) if args.get("$inlinecount") == "allpages" else None
        if count is None:  # with $inlinecount=allpages 1C ignores $skip and $top
            rows = rows[skip:] if top is None else rows[skip:skip + top]
        out = [self._row(etype, set_name, r, shape) for r in rows]
        if not self._json(request):
            return atom.feed(root, set_name, etype, out, count)
        body: dict[str, Any] = {"odata.metadata": f"{root}$metadata#{set_name}"}
        if count is not None:
            body["odata.count"] = str(count)
        body["value"] = out
        return json_response(body)

    def _row(self, etype: EntityType | None, set_name: str, row: dict, shape: "views.Shape") -> dict:
        if etype is not None:
            return views.entity(self.base, etype, row, shape)
        owner, ts = self.base.resolve_set(set_name)
        if ts is None:  # an entity set, yet no entity type was given for it
            raise ODataError(404, "-1", f"Не найден ресурс: {set_name}")
        line = views.section_row(owner, ts, row)
        return line if shape.top is None else {k: line[k] for k in shape.top if k in line}

    # ------------------------------------------------------------------ writing
    def _body(self, request: Request, etype: EntityType, *, creating: bool) -> tuple[dict, dict]:
        try:
            body = json.loads(request.get_data().decode("utf-8") or "{}", parse_float=Decimal)
        except (ValueError, UnicodeDecodeError) as exc:
            raise ODataError(400, "14", f"Ошибка разбора тела запроса: {exc}") from None
        if not isinstance(body, dict):
            raise ODataError(400, "14", "Ошибка разбора тела запроса: ожидался объект")
        values, tabular = {}, {}
        for name, value in body.items():
            if name.startswith("odata.") or name.endswith("@odata.bind") or name == "DataVersion":
                continue
            if name == "Posted":
                raise ODataError(400, "14", "Свойство Posted недоступно для записи: используйте Post/Unpost")
            if name == "Ref_Key" and not creating:
                continue
            if name in etype.tabular:
                tabular[name] = _section_lines(name, etype.tabular[name], value)
                continue
            if name not in etype.fields:
                raise ODataError(400, "14", f"Неизвестное свойство {name} у {etype.name}")
            values[name] = coerce(name, etype.fields[name], value)
        return values, tabular


def _split_key(resource: str) -> tuple[str, str | None]:
    """``Set`` or ``Set(guid'…')`` / ``Set(Ref_Key=guid'…')`` -> (set name, ref or None)."""
    m = re.match(r"^([^()]+)(?:\((.*)\))?$", resource)
    if not m:
        raise ODataError(400, "14", f"Ошибка разбора URL: {resource}")
    set_name, key = m.group(1), m.group(2)
    if key is None:
        return set_name, None
    km = re.match(r"^(?:Ref_Key=)?guid'([^']*)'$", key)
    if not km:
        raise ODataError(400, "14", f"Неверный ключ объекта: ({key})")
    try:
        return set_name, str(uuid.UUID(km.group(1)))
    except ValueError:
        raise ODataError(400, "14", f"Неверный литерал типа Guid: {km.group(1)}") from None


def _ordered(rows: list[dict], orderby: str | None, types: dict[str, str]) -> list[dict]:
    if not orderby:
        return rows
    keys = []
    for item in orderby.split(","):
        parts = item.split()
        if not parts or len(parts) > 2 or parts[0] not in types or \
                (len(parts) == 2 and parts[1] not in ("asc", "desc")):
            raise ODataError(400, "14", f"Ошибка разбора $orderby: {item.strip()}")
        keys.append((parts[0], len(parts) == 2 and parts[1] == "desc"))
    for field_name, desc in reversed(keys):
        kind = types[field_name]
        rows = sorted(rows, key=lambda r: _order_key(kind, r.get(field_name)), reverse=desc)
    return rows


def _paging(args) -> tuple[int, int | None]:
    try:
        skip = int(args.get("$skip", 0))
        top = int(args["$top"]) if "$top" in args else None
        if skip < 0 or (top is not None and top < 0):
            raise ValueError
    except ValueError:
        raise ODataError(400, "14", "Ошибка разбора $top/$skip: ожидалось неотрицательное целое") from None
    return skip, top


def _section_lines(name: str, cols: dict[str, str], value: Any) -> list[dict]:
    if not isinstance(value, list):
        raise ODataError(400, "14", f"Табличная часть {name} должна быть массивом")
    lines = []
    for line in value:
        if not isinstance(line, dict):
            raise ODataError(400, "14", f"Строка табличной части {name} должна быть объектом")
        lines.append({k: coerce(k, cols.get(k), v) for k, v in line.items()
                      if k not in ("Ref_Key", "LineNumber")})
    return lines


def coerce(name: str, kind: str | None, value: Any) -> Any:
    """A property's value from a request body, as 1C stores it, or a 400."""
    bad = ODataError(400, "14", f"Неверное значение свойства {name}: {value!r}")
    if kind is None:
        raise ODataError(400, "14", f"Неизвестное свойство {name}")
    if kind == "guid":
        try:
            return str(uuid.UUID(str(value)))
        except ValueError:
            raise bad from None
    if kind == "datetime":
        if not isinstance(value, str) or not DATETIME_TEXT.match(value):
            raise bad
        return value if len(value) == 19 else value + ":00"
    if kind == "bool":
        if not isinstance(value, bool):
            raise bad
        return value
    if kind == "number":
        if isinstance(value, bool):
            raise bad
        try:
            return Decimal(str(value))
        except InvalidOperation:
            raise bad from None
    if not isinstance(value, str):
        raise bad
    return value
