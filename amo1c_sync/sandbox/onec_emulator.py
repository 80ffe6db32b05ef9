"""A 1C:Enterprise 8.3 standard OData interface emulator: a real HTTP server on loopback.

Served under ``/odata/standard.odata/`` (and ``/<infobase>/odata/standard.odata/``, as a real
publication is), OData v3 as 1C speaks it (SPEC section 4):

* Entity sets ``Catalog_…``, ``Document_…`` and tabular sections ``Document_…_<ТЧ>`` (read-only,
  rows carry the owner's ``Ref_Key`` and ``LineNumber``); tabular sections also appear as arrays
  inside the document. Names come from :class:`amo1c_sync.onec.names.OneCNames`, so a renamed base
  can be emulated too. Cyrillic names arrive percent-encoded (UTF-8).
* ``$format=json`` (or ``Accept: application/json``) is required. Without it real 1C answers Atom
  XML; this emulator answers **406** with an ``odata.error`` body instead. Why: nothing in
  amo1c-sync reads Atom, and a half-done Atom feed would be *less* faithful than an explicit
  refusal, which makes a request that forgot ``$format=json`` fail loudly in tests rather than
  silently getting another format.
* A real ``$filter`` parser: ``eq ne gt ge lt le and or not``, parentheses, ``substringof``,
  ``startswith``, ``endswith``, ``tolower``, ``toupper``; literals ``guid'…'``,
  ``datetime'…'``, ``'strings'`` with ``''`` escapes, ``true``/``false``/``null``, numbers.
  String comparison is case-insensitive and ignores trailing spaces, as 1C's DBMS collations do.
  A parse error or an unknown property -> 400 ``odata.error`` code 14.
* The service root (``$format=json``) lists the entity sets as 1C does:
  ``{"odata.metadata": …, "value": [{"name": "Catalog_…", "url": "Catalog_…"}, …]}``;
  ``$metadata`` is CSDL (XML) with an ``EntityType`` (its ``Property`` list) per object and per
  tabular section, a ``…_RowType`` ``ComplexType`` per section, and the ``EntitySet`` list.
* ``$select``, ``$top``, ``$skip``, ``$orderby`` (``asc``/``desc``, several keys),
  ``$inlinecount=allpages``. Paging is client-driven (no ``odata.nextLink``).
* ``POST`` set -> 201 with the full object; ``PATCH`` set(guid'…') -> 200 with the full object
  (``Posted`` cannot be written: 400); ``DELETE`` -> 204;
  ``POST Document_X(guid'…')/Post?PostingModeOperational=false`` and ``/Unpost`` -> 200, empty body;
  posting a document marked for deletion -> 500 ``odata.error``.
* ``DataVersion`` (opaque) changes on every write (create, patch, post, unpost, deletion mark);
  ``Number``/``Code`` are zero-padded from a per-type counter (documents 11 characters, catalogs
  9); time-only values are ``0001-01-01T09:05:00``; the empty date is ``0001-01-01T00:00:00``; the
  empty reference is ``00000000-0000-0000-0000-000000000000``.
* Composite references (``base_ref_mode="composite"``): ``ДокументОснование`` (the GUID as a
  string, "" when undefined) + ``ДокументОснование_Type`` (``StandardODATA.Document_Заявка``, or
  ``StandardODATA.Undefined``); ``base_ref_mode="single"``: ``ДокументОснование_Key`` only.
* Errors: ``{"odata.error":{"code":"…","message":{"lang":"ru","value":"…"}}}``; codes used here:
  14 parse error (400), 6 not found (404), 13 unsupported operation (400), -1 internal (500).
* HTTP Basic, login and password in UTF-8 (Cyrillic logins work); 401 without or with wrong ones.
* Cold start: with ``cold_start_ms`` the first OData request, and the first after ``idle_after_s``
  seconds without one, is delayed that long.

Control API under ``/_sandbox/`` (no auth; stable — tests, the story and drills drive it):

* ``GET /_sandbox/zayavki[?lead=<id>]`` -> ``[{"ref","number","client","doctor","start","end",
  "lead","posted","deletion_mark"}]`` (client/doctor as names; start/end as ISO local datetimes,
  end null when empty; lead "" when empty).
* ``POST /_sandbox/zayavki`` ``{"lead": null|id, "doctor": name, "start": "2021-12-22T09:05:00",
  "end"?: …, "client"?: name, "posted"?: true}`` -> 201 ``{"ref","number"}`` (a «Заявка» made by hand).
* ``POST /_sandbox/services`` ``{"lead": id, "amount": "150.00", "date"?: iso}`` (or
  ``"zayavka_ref": ref``, or ``"zayavka_ref": null`` for no base) -> 201 ``{"ref","number"}``: an
  «Оказание услуг» на основании that «Заявка» (the newest non-deleted one of the lead) with one
  line «Номенклатура AmoCRM», quantity 1, price = sum = amount; posted.
* ``POST /_sandbox/services/<ref>/post`` (optional ``{"amount": …}`` changes the sum first),
  ``/unpost``, ``/delete`` (deletion mark; a posted document is unposted, as 1C does);
  ``GET /_sandbox/services`` lists them.
* ``POST /_sandbox/schedules`` ``{"date": iso, "month": "2021-12-01", "posted": true,
  "lines": [{"doctor","date","start":"08:15","end":"13:00"}]}`` -> 201 ``{"ref","number"}``.
* ``GET /_sandbox/clients`` -> ``[{"ref","code","name","deletion_mark"}]``.
* ``POST /_sandbox/faults`` ``{"count":N,"status":500,"delay_ms":0,"drop":false,
  "path_prefix":"/odata","method":null}``; ``GET`` lists, ``DELETE`` clears. Faults apply to every
  non-``/_sandbox/`` request before authentication.
* ``GET /_sandbox/requests`` -> ``{"counts": {"GET /odata/standard.odata/Catalog_Клиенты": n},
  "total", "by_status", "targets": [{"method","target","bytes"}]}`` (the last 2,000 raw request
  targets, percent-encoded as sent); ``DELETE`` resets.
"""

from __future__ import annotations

import base64
import collections
import json
import re
import struct
import time
import uuid
from datetime import date, datetime
from decimal import Decimal, InvalidOperation
from html import escape
from typing import Any, Callable
from zoneinfo import ZoneInfo

from werkzeug.wrappers import Request, Response

from amo1c_sync.sandbox.base import DROPPED, LoopbackEmulator
from amo1c_sync.onec.names import OneCNames
from amo1c_sync.sandbox import seed as seed_data

EMPTY_REF = "00000000-0000-0000-0000-000000000000"
EMPTY_DATE = "0001-01-01T00:00:00"
ODATA_MARK = "/odata/standard.odata"
_DT = re.compile(r"^\d{4}-\d{2}-\d{2}T\d{2}:\d{2}(:\d{2})?$")


class ODataError(Exception):
    def __init__(self, status: int, code: str, message: str):
        super().__init__(message)
        self.status, self.code, self.message = status, code, message


def _parse_error(message: str) -> ODataError:
    return ODataError(400, "14", message)


# =============================================================================================
# $filter: tokenizer, recursive-descent parser, evaluator
# =============================================================================================
_TOKEN = re.compile(r"""
    (?P<ws>\s+)
  | (?P<typed>(?:guid|datetime|datetimeoffset|time)'(?:[^']*)')
  | (?P<str>'(?:[^']|'')*')
  | (?P<num>-?\d+(?:\.\d+)?(?:[eE][+-]?\d+)?[mMdDfFlL]?)
  | (?P<ident>[^\W\d]\w*)
  | (?P<punct>[(),])
""", re.VERBOSE)
_RELOPS = {"eq", "ne", "gt", "ge", "lt", "le"}
_FUNCS = {"substringof": 2, "startswith": 2, "endswith": 2, "tolower": 1, "toupper": 1, "trim": 1,
          "length": 1}


def tokenize(text: str) -> list[tuple[str, Any]]:
    out: list[tuple[str, Any]] = []
    pos = 0
    while pos < len(text):
        m = _TOKEN.match(text, pos)
        if not m:
            raise _parse_error(f"Ошибка разбора выражения $filter в позиции {pos + 1}: «{text[pos:pos + 20]}»")
        pos = m.end()
        kind = m.lastgroup
        value = m.group(kind)
        if kind == "ws":
            continue
        if kind == "typed":
            prefix, _, rest = value.partition("'")
            raw = rest[:-1]
            if prefix == "guid":
                try:
                    out.append(("lit", ("guid", str(uuid.UUID(raw)))))
                except ValueError:
                    raise _parse_error(f"Неверный литерал типа Guid: {value}")
            elif prefix == "datetime":
                if not _DT.match(raw):
                    raise _parse_error(f"Неверный литерал типа DateTime: {value}")
                try:
                    norm = raw if len(raw) == 19 else raw + ":00"
                    if not norm.startswith("0001-01-01"):
                        datetime.fromisoformat(norm)
                except ValueError:
                    raise _parse_error(f"Неверный литерал типа DateTime: {value}")
                out.append(("lit", ("datetime", norm)))
            else:
                raise _parse_error(f"Неподдерживаемый литерал: {value}")
        elif kind == "str":
            out.append(("lit", ("string", value[1:-1].replace("''", "'"))))
        elif kind == "num":
            try:
                out.append(("lit", ("number", Decimal(value.rstrip("mMdDfFlL")))))
            except InvalidOperation:
                raise _parse_error(f"Неверное число: {value}")
        elif kind == "ident":
            if value in ("true", "false"):
                out.append(("lit", ("bool", value == "true")))
            elif value == "null":
                out.append(("lit", ("null", None)))
            elif value in _RELOPS or value in ("and", "or", "not"):
                out.append(("kw", value))
            else:
                out.append(("ident", value))
        else:
            out.append(("punct", value))
    return out


class _Parser:
    def __init__(self, tokens: list[tuple[str, Any]], known: Callable[[str], bool]):
        self.t, self.i, self.known = tokens, 0, known

    def peek(self) -> tuple[str, Any] | None:
        return self.t[self.i] if self.i < len(self.t) else None

    def take(self, kind: str, value: Any = None) -> Any:
        tok = self.peek()
        if tok is None or tok[0] != kind or (value is not None and tok[1] != value):
            got = "конец выражения" if tok is None else repr(tok[1])
            raise _parse_error(f"Ошибка разбора выражения $filter: ожидалось {value or kind}, получено {got}")
        self.i += 1
        return tok[1]

    def parse(self):
        if not self.t:
            raise _parse_error("Пустое выражение $filter")
        node = self.or_()
        if self.peek() is not None:
            raise _parse_error(f"Ошибка разбора выражения $filter: лишний токен {self.peek()[1]!r}")
        return node

    def or_(self):
        node = self.and_()
        while self.peek() == ("kw", "or"):
            self.i += 1
            node = ("or", node, self.and_())
        return node

    def and_(self):
        node = self.not_()
        while self.peek() == ("kw", "and"):
            self.i += 1
            node = ("and", node, self.not_())
        return node

    def not_(self):
        if self.peek() == ("kw", "not"):
            self.i += 1
            return ("not", self.not_())
        return self.cmp()

    def cmp(self):
        left = self.primary()
        tok = self.peek()
        if tok and tok[0] == "kw" and tok[1] in _RELOPS:
            self.i += 1
            return ("cmp", tok[1], left, self.primary())
        return left

    def primary(self):
        tok = self.peek()
        if tok is None:
            raise _parse_error("Ошибка разбора выражения $filter: неожиданный конец выражения")
        kind, value = tok
        if kind == "punct" and value == "(":
            self.i += 1
            node = self.or_()
            self.take("punct", ")")
            return node
        if kind == "lit":
            self.i += 1
            return ("lit", value)
        if kind == "ident":
            self.i += 1
            if self.peek() == ("punct", "("):
                if value not in _FUNCS:
                    raise _parse_error(f"Неизвестная функция: {value}")
                self.i += 1
                args = [self.or_()]
                while self.peek() == ("punct", ","):
                    self.i += 1
                    args.append(self.or_())
                self.take("punct", ")")
                if len(args) != _FUNCS[value]:
                    raise _parse_error(f"Неверное число параметров функции {value}")
                return ("func", value, args)
            if not self.known(value):
                raise _parse_error(f"Неизвестное поле в выражении $filter: {value}")
            return ("field", value)
        raise _parse_error(f"Ошибка разбора выражения $filter: неожиданный токен {value!r}")


def parse_filter(text: str, known: Callable[[str], bool] = lambda name: True):
    return _Parser(tokenize(text), known).parse()


def _norm_str(value: str) -> str:
    return value.rstrip(" ").casefold()


def _key_lookup(node) -> set[str] | None:
    """The keys of a filter made only of ``Ref_Key eq guid'…'`` joined by ``or`` (the shape of a
    batched lookup), so that it is answered by key instead of evaluating every term on every row.
    None for any other filter."""
    if node[0] == "or":
        left, right = _key_lookup(node[1]), _key_lookup(node[2])
        return None if left is None or right is None else left | right
    if node[0] == "cmp" and node[1] == "eq":
        field, lit = (node[2], node[3]) if node[3][0] == "lit" else (node[3], node[2])
        if field == ("field", "Ref_Key") and lit[0] == "lit" and lit[1][0] == "guid" and lit[1][1]:
            return {_norm_str(str(lit[1][1]))}
    return None


def _evaluate(node, row: dict, types: dict[str, str]):
    """-> (kind, value) with kind in string/guid/datetime/number/bool/null."""
    op = node[0]
    if op == "lit":
        return node[1]
    if op == "field":
        name = node[1]
        kind = types.get(name, "string")
        value = row.get(name)
        if kind == "number" and value is not None:
            value = Decimal(str(value))
        return (kind, value)
    if op == "and":
        return ("bool", _truth(_evaluate(node[1], row, types)) and _truth(_evaluate(node[2], row, types)))
    if op == "or":
        return ("bool", _truth(_evaluate(node[1], row, types)) or _truth(_evaluate(node[2], row, types)))
    if op == "not":
        return ("bool", not _truth(_evaluate(node[1], row, types)))
    if op == "cmp":
        return ("bool", _compare(node[1], _evaluate(node[2], row, types), _evaluate(node[3], row, types)))
    if op == "func":
        name, args = node[1], [_evaluate(a, row, types) for a in node[2]]
        texts = []
        for kind, value in args:
            if kind not in ("string", "guid"):
                raise _parse_error(f"Функция {name} ожидает строку")
            texts.append(value or "")
        if name == "substringof":
            return ("bool", _norm_str(texts[0]) in texts[1].casefold())
        if name == "startswith":
            return ("bool", texts[0].casefold().startswith(texts[1].casefold()))
        if name == "endswith":
            return ("bool", _norm_str(texts[0]).endswith(_norm_str(texts[1])))
        if name == "tolower":
            return ("string", texts[0].lower())
        if name == "toupper":
            return ("string", texts[0].upper())
        if name == "trim":
            return ("string", texts[0].strip())
        if name == "length":
            return ("number", Decimal(len(texts[0])))
    raise _parse_error(f"Неподдерживаемое выражение: {op}")


def _truth(v) -> bool:
    kind, value = v
    if kind != "bool":
        raise _parse_error("Ожидалось логическое выражение")
    return bool(value)


def _compare(op: str, a, b) -> bool:
    (ka, va), (kb, vb) = a, b
    if ka == "null" or kb == "null" or va is None or vb is None:
        if op == "eq":
            return va is None and vb is None
        if op == "ne":
            return not (va is None and vb is None)
        return False
    kinds = {ka, kb}
    if kinds <= {"string", "guid"}:
        x, y = _norm_str(str(va)), _norm_str(str(vb))
    elif kinds == {"datetime"}:
        x, y = va, vb  # fixed-width ISO text sorts as time does
    elif kinds == {"number"}:
        x, y = va, vb
    elif kinds == {"bool"}:
        x, y = bool(va), bool(vb)
    else:
        raise _parse_error(f"Несовместимые типы в сравнении: {ka} и {kb}")
    return {"eq": x == y, "ne": x != y, "gt": x > y, "ge": x >= y, "lt": x < y, "le": x <= y}[op]


def _order_key(kind: str, value: Any):
    if value is None:
        return (0, "")
    if kind == "string":
        return (1, _norm_str(value))
    if kind == "number":
        return (1, Decimal(str(value)))
    return (1, value)


# =============================================================================================
# schema
# =============================================================================================
class EntityType:
    def __init__(self, name: str, kind: str, fields: dict[str, str],
                 tabular: dict[str, dict[str, str]] | None = None, number_width: int = 11):
        self.name, self.kind = name, kind
        base = {"Ref_Key": "guid", "DataVersion": "string", "DeletionMark": "bool"}
        if kind == "Catalog":
            base.update({"Code": "string", "Description": "string"})
        else:
            base.update({"Number": "string", "Date": "datetime", "Posted": "bool"})
        self.fields = {**base, **fields}
        self.tabular = tabular or {}
        self.number_width = number_width


# the CSDL type 1C declares for each kind of value ($metadata)
_EDM_TYPES = {"guid": "Edm.Guid", "string": "Edm.String", "datetime": "Edm.DateTime", "bool": "Edm.Boolean",
              "number": "Edm.Double", "int": "Edm.Int64"}


def _default(kind: str) -> Any:
    return {"guid": EMPTY_REF, "datetime": EMPTY_DATE, "bool": False, "number": Decimal(0),
            "string": "", "int": 0}[kind]


def build_schema(names: OneCNames) -> dict[str, EntityType]:
    n = names
    catalog = lambda name: EntityType(name, "Catalog", {}, number_width=9)  # noqa: E731
    if n.base_ref_mode == "single":
        base_fields = {f"{n.services_base}_Key": "guid"}
    else:
        base_fields = {n.services_base: "string", f"{n.services_base}_Type": "string"}
    types = [
        catalog(n.doctors), catalog(n.clients), catalog(n.nomenclature),
        EntityType(n.zayavka, "Document", {
            n.zayavka_client: "guid", n.zayavka_doctor: "guid", n.zayavka_date: "datetime",
            n.zayavka_start: "datetime", n.zayavka_end: "datetime", n.zayavka_lead: "string",
            n.zayavka_nomenclature: "guid", "Комментарий": "string"}),
        EntityType(n.services, "Document", {
            **base_fields, n.services_amount: "number", "Клиент_Key": "guid", "Комментарий": "string"},
            tabular={n.services_lines: {n.services_line_nomenclature: "guid", n.services_line_quantity: "number",
                                        n.services_line_price: "number", n.services_line_sum: "number"}}),
        EntityType(n.schedules, "Document", {n.schedules_month: "datetime", "Комментарий": "string"},
                   tabular={n.schedules_lines: {n.schedule_doctor: "guid", n.schedule_date: "datetime",
                                                n.schedule_start: "datetime", n.schedule_end: "datetime"}}),
    ]
    return {t.name: t for t in types}


def _json(body: Any, status: int = 200) -> Response:
    return Response(json.dumps(body, ensure_ascii=False, default=_json_default), status=status,
                    content_type="application/json;charset=utf-8")


def _json_default(value: Any) -> Any:
    if isinstance(value, Decimal):
        return int(value) if value == value.to_integral_value() else float(value)
    raise TypeError(type(value).__name__)


def _odata_error_response(err: ODataError) -> Response:
    return _json({"odata.error": {"code": err.code, "message": {"lang": "ru", "value": err.message}}},
                 err.status)


# =============================================================================================
# the emulator
# =============================================================================================
class OneCEmulator(LoopbackEmulator):
    """``with OneCEmulator() as emu: OneC(emu.url, emu.username, emu.password)``.

    ``url`` is the publication root (``http://127.0.0.1:PORT``); the OData service is at
    ``url + "/odata/standard.odata/"`` (``odata_url``).
    """

    thread_name = "onec-emulator"

    def __init__(self, host: str = "127.0.0.1", port: int = 0, *, username: str = "Администратор",
                 password: str = "пароль-песочницы", seed: bool = True, base_ref_mode: str = "composite",
                 next_zayavka_number: int = seed_data.NEXT_ZAYAVKA_NUMBER, names: OneCNames | None = None,
                 timezone: str = "Europe/Moscow", cold_start_ms: int = 0, idle_after_s: float = 300.0):
        names = names or OneCNames()
        if names.base_ref_mode != base_ref_mode:
            names = OneCNames(**{**{f: getattr(names, f) for f in OneCNames.field_names()},
                                 "base_ref_mode": base_ref_mode})
        super().__init__(host, port)
        self.username, self.password = username, password
        self.names = names
        self.base_ref_mode = base_ref_mode
        self.tz = ZoneInfo(timezone)
        self.cold_start_ms, self.idle_after_s = cold_start_ms, idle_after_s
        self._last_odata: float | None = None
        self.schema = build_schema(names)
        self._data: dict[str, dict[str, dict]] = {name: {} for name in self.schema}
        self._counters: dict[str, int] = collections.defaultdict(int)
        self._counters[names.zayavka] = next_zayavka_number - 1
        self._version = 0
        self._counts: collections.Counter = collections.Counter()
        self._by_status: collections.Counter = collections.Counter()
        self._targets: collections.deque = collections.deque(maxlen=2000)
        if seed:
            self.load_seed()

    # ------------------------------------------------------------------ lifecycle

    @property
    def odata_url(self) -> str:
        return f"{self.url}{ODATA_MARK}/"

    # ------------------------------------------------------------------ state helpers
    def now(self) -> datetime:
        return datetime.now(self.tz).replace(tzinfo=None, microsecond=0)

    def _next_version(self) -> str:
        self._version += 1
        return base64.b64encode(struct.pack(">II", self._version, 0)).decode("ascii")

    def _next_number(self, etype: EntityType) -> str:
        self._counters[etype.name] += 1
        return str(self._counters[etype.name]).zfill(etype.number_width)

    def _insert(self, set_name: str, values: dict, *, tabular: dict[str, list[dict]] | None = None) -> dict:
        """Create an object (already validated values). Caller holds the lock."""
        etype = self.schema[set_name]
        row = {name: _default(kind) for name, kind in etype.fields.items()}
        if etype.kind == "Document" and etype.name == self.names.services and self.base_ref_mode == "composite":
            row[f"{self.names.services_base}_Type"] = "StandardODATA.Undefined"
        row.update(values)
        if row["Ref_Key"] == EMPTY_REF:
            row["Ref_Key"] = str(uuid.uuid4())
        if row["Ref_Key"] in self._data[set_name]:
            raise ODataError(400, "14", f"Объект с ключом {row['Ref_Key']} уже существует")
        key = "Code" if etype.kind == "Catalog" else "Number"
        if not row[key]:
            row[key] = self._next_number(etype)
        if etype.kind == "Document" and row["Date"] == EMPTY_DATE:
            row["Date"] = self.now().isoformat()
        for ts in etype.tabular:
            row[ts] = self._lines(row["Ref_Key"], (tabular or {}).get(ts, []))
        row["DataVersion"] = self._next_version()
        self._data[set_name][row["Ref_Key"]] = row
        return row

    @staticmethod
    def _lines(ref: str, lines: list[dict]) -> list[dict]:
        out = []
        for i, line in enumerate(lines, 1):
            out.append({"Ref_Key": ref, "LineNumber": str(i), **{k: v for k, v in line.items()
                                                                  if k not in ("Ref_Key", "LineNumber")}})
        return out

    def _find(self, set_name: str, ref: str) -> dict:
        row = self._data[set_name].get(ref)
        if row is None:
            raise ODataError(404, "6", f"Не найден объект с ключом {ref} в наборе {set_name}")
        return row

    def _touch(self, row: dict) -> None:
        row["DataVersion"] = self._next_version()

    def _post(self, set_name: str, ref: str) -> None:
        row = self._find(set_name, ref)
        if row["DeletionMark"]:
            raise ODataError(500, "-1", "Помеченный на удаление документ не может быть проведен!")
        row["Posted"] = True
        self._touch(row)

    def _unpost(self, set_name: str, ref: str) -> None:
        row = self._find(set_name, ref)
        row["Posted"] = False
        self._touch(row)

    def _by_name(self, set_name: str, description: str) -> str:
        for row in self._data[set_name].values():
            if row["Description"] == description and not row["DeletionMark"]:
                return row["Ref_Key"]
        raise ODataError(404, "6", f"Не найден элемент «{description}» в {set_name}")

    def _name_of(self, set_name: str, ref: str) -> str | None:
        row = self._data[set_name].get(ref)
        return row["Description"] if row else None

    # ------------------------------------------------------------------ seed + in-process API
    def load_seed(self) -> None:
        n = self.names
        with self._lock:
            for i, name in enumerate(seed_data.DOCTORS, 1):
                self._insert(n.doctors, {"Ref_Key": seed_data.DOCTOR_REFS[name], "Description": name})
            for ref, name in seed_data.CLIENTS:
                self._insert(n.clients, {"Ref_Key": ref, "Description": name})
            for ref, name in seed_data.NOMENCLATURE:
                self._insert(n.nomenclature, {"Ref_Key": ref, "Description": name})
            self._counters[n.schedules] = int(seed_data.SCHEDULE_NUMBER) - 1
            self.add_schedule(
                [(seed_data.DOCTOR_REFS[name], day, start, end) for name, day, start, end in seed_data.schedule_lines()],
                month=seed_data.SCHEDULE_MONTH, doc_date=seed_data.SCHEDULE_DATE, ref=seed_data.SCHEDULE_REF)

    def add_catalog_item(self, set_name: str, description: str, *, ref: str | None = None,
                         deletion_mark: bool = False) -> dict:
        with self._lock:
            return dict(self._insert(set_name, {"Ref_Key": ref or EMPTY_REF, "Description": description,
                                                "DeletionMark": deletion_mark}))

    def add_schedule(self, lines, *, month: date, doc_date: datetime, posted: bool = True,
                     ref: str | None = None, number: str | None = None) -> dict:
        """lines: (doctor_ref, day, start time, end time)."""
        n = self.names
        rows = [{n.schedule_doctor: doc, n.schedule_date: datetime(d.year, d.month, d.day).isoformat(),
                 n.schedule_start: f"0001-01-01T{s.strftime('%H:%M:%S')}",
                 n.schedule_end: f"0001-01-01T{e.strftime('%H:%M:%S')}"} for doc, d, s, e in lines]
        with self._lock:
            row = self._insert(n.schedules, {
                "Ref_Key": ref or EMPTY_REF, "Number": number or "", "Date": doc_date.isoformat(),
                n.schedules_month: datetime(month.year, month.month, 1).isoformat(), "Posted": posted},
                tabular={n.schedules_lines: rows})
            return dict(row)

    def add_zayavka(self, *, lead: str | int | None, doctor: str, start: datetime, end: datetime | None = None,
                    client: str | None = None, posted: bool = True) -> dict:
        n = self.names
        with self._lock:
            doctor_ref = self._by_name(n.doctors, doctor)
            client_ref = self._by_name(n.clients, client or n.default_client)
            values = {
                n.zayavka_client: client_ref, n.zayavka_doctor: doctor_ref,
                n.zayavka_date: datetime(start.year, start.month, start.day).isoformat(),
                n.zayavka_start: f"0001-01-01T{start.strftime('%H:%M:%S')}",
                n.zayavka_end: f"0001-01-01T{end.strftime('%H:%M:%S')}" if end else EMPTY_DATE,
                n.zayavka_lead: "" if lead is None else str(lead),
                n.zayavka_nomenclature: self._by_name(n.nomenclature, n.default_nomenclature),
                "Posted": posted,
            }
            return dict(self._insert(n.zayavka, values))

    def zayavki(self, lead: str | None = None) -> list[dict]:
        n = self.names
        with self._lock:
            out = []
            for row in self._data[n.zayavka].values():
                if lead is not None and row[n.zayavka_lead].strip() != str(lead):
                    continue
                day = row[n.zayavka_date][:10]

                def at(t: str) -> str | None:
                    return None if t == EMPTY_DATE or day.startswith("0001") else f"{day}T{t[11:19]}"
                out.append({"ref": row["Ref_Key"], "number": row["Number"],
                            "client": self._name_of(n.clients, row[n.zayavka_client]),
                            "doctor": self._name_of(n.doctors, row[n.zayavka_doctor]),
                            "start": at(row[n.zayavka_start]), "end": at(row[n.zayavka_end]),
                            "lead": row[n.zayavka_lead], "posted": row["Posted"],
                            "deletion_mark": row["DeletionMark"]})
            out.sort(key=lambda z: z["number"])
            return out

    def _base_values(self, zayavka_ref: str | None) -> dict:
        n = self.names
        if self.base_ref_mode == "single":
            return {f"{n.services_base}_Key": zayavka_ref or EMPTY_REF}
        if zayavka_ref is None:
            return {n.services_base: "", f"{n.services_base}_Type": "StandardODATA.Undefined"}
        return {n.services_base: zayavka_ref, f"{n.services_base}_Type": n.zayavka_type_name}

    def _service_lines(self, amount: Decimal) -> list[dict]:
        n = self.names
        return [{n.services_line_nomenclature: self._by_name(n.nomenclature, n.default_nomenclature),
                 n.services_line_quantity: Decimal(1), n.services_line_price: amount,
                 n.services_line_sum: amount}]

    def add_service(self, *, zayavka_ref: str | None, amount: Decimal | str, date_: datetime | None = None,
                    post: bool = True) -> dict:
        n = self.names
        amount = Decimal(str(amount))
        with self._lock:
            client = EMPTY_REF
            if zayavka_ref is not None:
                client = self._find(n.zayavka, zayavka_ref)[n.zayavka_client]
            row = self._insert(n.services, {
                **self._base_values(zayavka_ref), n.services_amount: amount, "Клиент_Key": client,
                "Date": (date_ or self.now()).isoformat()}, tabular={n.services_lines: self._service_lines(amount)})
            if post:
                self._post(n.services, row["Ref_Key"])
            return dict(row)

    def service_action(self, ref: str, action: str, amount: Decimal | str | None = None) -> dict:
        n = self.names
        with self._lock:
            row = self._find(n.services, ref)
            if action == "post":
                if amount is not None:
                    amount = Decimal(str(amount))
                    row[n.services_amount] = amount
                    row[n.services_lines] = self._lines(ref, self._service_lines(amount))
                    self._touch(row)
                self._post(n.services, ref)
            elif action == "unpost":
                self._unpost(n.services, ref)
            elif action == "delete":
                row["DeletionMark"] = True
                row["Posted"] = False
                self._touch(row)
            else:
                raise ODataError(404, "6", f"unknown action {action}")
            return dict(row)

    def services(self) -> list[dict]:
        n = self.names
        with self._lock:
            out = []
            for row in self._data[n.services].values():
                if self.base_ref_mode == "single":
                    base = row[f"{n.services_base}_Key"]
                    base = None if base == EMPTY_REF else base
                else:
                    base = row[n.services_base] or None
                z = self._data[n.zayavka].get(base) if base else None
                out.append({"ref": row["Ref_Key"], "number": row["Number"], "date": row["Date"],
                            "posted": row["Posted"], "deletion_mark": row["DeletionMark"],
                            "amount": str(row[n.services_amount]), "zayavka_ref": base,
                            "lead": (z[n.zayavka_lead] if z else None), "data_version": row["DataVersion"]})
            out.sort(key=lambda s: s["number"])
            return out

    def clients(self) -> list[dict]:
        with self._lock:
            return sorted(({"ref": r["Ref_Key"], "code": r["Code"], "name": r["Description"],
                            "deletion_mark": r["DeletionMark"]} for r in self._data[self.names.clients].values()),
                          key=lambda c: c["code"])

    def rows(self, set_name: str) -> list[dict]:
        """A copy of every object of an entity set (for tests)."""
        with self._lock:
            return [json.loads(json.dumps(r, default=str)) for r in self._data[set_name].values()]

    # ------------------------------------------------------------------ faults and traffic
    def requests(self) -> dict:
        with self._lock:
            return {"counts": dict(self._counts), "total": sum(self._counts.values()),
                    "by_status": {str(k): v for k, v in self._by_status.items()},
                    "targets": list(self._targets)}

    def reset_requests(self) -> None:
        with self._lock:
            self._counts.clear()
            self._by_status.clear()
            self._targets.clear()

    # ------------------------------------------------------------------ WSGI
    def wsgi_app(self, environ, start_response):
        request = Request(environ)
        path = request.path
        sandbox = path.startswith("/_sandbox/")
        try:
            if sandbox:
                response = self._sandbox(request)
            else:
                target = environ.get("RAW_URI") or environ.get("REQUEST_URI") or path
                with self._lock:
                    self._counts[f"{request.method} {path}"] += 1
                    self._targets.append({"method": request.method, "target": target,
                                          "bytes": len(target.encode("utf-8", "replace"))})
                response = self._serve(request, environ)
        except ODataError as err:
            response = _odata_error_response(err)
        except Exception as exc:  # an emulator bug must look like 1C's internal error, not hang
            response = _odata_error_response(ODataError(500, "-1", f"Внутренняя ошибка эмулятора: {exc!r}"))
        if response is None:  # connection dropped on purpose
            response = Response(b"", status=500)
        if not sandbox:
            with self._lock:
                self._by_status[response.status_code] += 1
        return response(environ, start_response)

    def _fault_response(self, status: int) -> Response:
        """5xx from the web server in front of 1C (an Apache page); 4xx as 1C's own odata.error."""
        if status >= 500:
            return Response(f"<html><body><h1>{status}</h1>Apache</body></html>", status=status,
                            content_type="text/html")
        return _odata_error_response(ODataError(status, "-1", "Injected fault"))

    def _serve(self, request: Request, environ) -> Response | None:
        struck = self.strike(request, environ)
        if struck is not None:
            return None if struck is DROPPED else struck
        path = request.path
        idx = path.find(ODATA_MARK)
        if idx < 0:
            return Response("Not Found", status=404, content_type="text/plain")
        if not self._authorized(request):
            return Response("", status=401, headers={"WWW-Authenticate": 'Basic realm="1C:Enterprise"'})
        self._cold_start()
        rest = path[idx + len(ODATA_MARK):].lstrip("/")
        if rest == "$metadata":
            return self._metadata()
        if not self._wants_json(request):
            raise ODataError(406, "14", "Эмулятор отдаёт только JSON: укажите $format=json "
                                        "(реальная 1С без него отвечает в формате Atom XML)")
        root = request.host_url.rstrip("/") + path[:idx + len(ODATA_MARK)] + "/"
        if rest == "":
            return _json({"odata.metadata": root + "$metadata",
                          "value": [{"name": s, "url": s} for s in self._all_sets()]})
        m = re.match(r"^([^/()]+)(?:\((.*)\))?(?:/([^/]+))?$", rest)
        if not m:
            raise ODataError(400, "14", f"Ошибка разбора URL: {rest}")
        set_name, key, action = m.group(1), m.group(2), m.group(3)
        etype, ts = self._resolve_set(set_name)
        ref = None
        if key is not None:
            km = re.match(r"^(?:Ref_Key=)?guid'([^']*)'$", key)
            if not km:
                raise ODataError(400, "14", f"Неверный ключ объекта: ({key})")
            try:
                ref = str(uuid.UUID(km.group(1)))
            except ValueError:
                raise ODataError(400, "14", f"Неверный литерал типа Guid: {km.group(1)}")
        method = request.method
        with self._lock:
            if ts is not None:
                if method != "GET" or ref is not None:
                    raise ODataError(400, "13", "Cоздание и изменение строк табличной части напрямую не поддерживается")
                return self._query(request, root, set_name, self._ts_rows(etype, ts), self._ts_types(etype, ts))
            if action is not None:
                if method != "POST" or ref is None or action not in ("Post", "Unpost"):
                    raise ODataError(400, "13", f"Операция {action} не поддерживается")
                if etype.kind != "Document":
                    raise ODataError(400, "13", f"Операция {action} не поддерживается для {set_name}")
                if action == "Post":
                    self._post(set_name, ref)
                else:
                    self._unpost(set_name, ref)
                return Response(b"", status=200)
            if method == "GET":
                if ref is None:
                    return self._query(request, root, set_name, list(self._data[set_name].values()), etype.fields)
                row = self._find(set_name, ref)
                return _json({"odata.metadata": f"{root}$metadata#{set_name}/@Element",
                              **self._project(row, self._select(request, etype.fields, etype))})
            if method == "POST" and ref is None:
                values, tabular = self._body(request, etype, creating=True)
                row = self._insert(set_name, values, tabular=tabular)
                return _json({"odata.metadata": f"{root}$metadata#{set_name}/@Element", **row}, 201)
            if method in ("PATCH", "MERGE") and ref is not None:
                row = self._find(set_name, ref)
                values, tabular = self._body(request, etype, creating=False)
                row.update(values)
                for name, lines in tabular.items():
                    row[name] = self._lines(ref, lines)
                self._touch(row)
                return _json({"odata.metadata": f"{root}$metadata#{set_name}/@Element", **row})
            if method == "DELETE" and ref is not None:
                self._find(set_name, ref)
                del self._data[set_name][ref]
                return Response(b"", status=204)
        raise ODataError(400, "13", f"Метод {method} не поддерживается для {rest}")

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
        with self._lock:
            now = time.monotonic()
            cold = self._last_odata is None or now - self._last_odata > self.idle_after_s
            self._last_odata = now
        if cold:
            time.sleep(self.cold_start_ms / 1000.0)

    @staticmethod
    def _wants_json(request: Request) -> bool:
        fmt = request.args.get("$format")
        if fmt is not None:
            return fmt.lower() in ("json", "application/json")
        return "application/json" in request.headers.get("Accept", "")

    def _all_sets(self) -> list[str]:
        out = []
        for etype in self.schema.values():
            out.append(etype.name)
            out.extend(f"{etype.name}_{ts}" for ts in etype.tabular)
        return out

    def _resolve_set(self, set_name: str) -> tuple[EntityType, str | None]:
        if set_name in self.schema:
            return self.schema[set_name], None
        for etype in self.schema.values():
            for ts in etype.tabular:
                if set_name == f"{etype.name}_{ts}":
                    return etype, ts
        raise ODataError(404, "6", f"Не найден ресурс: {set_name}")

    def _ts_types(self, etype: EntityType, ts: str) -> dict[str, str]:
        return {"Ref_Key": "guid", "LineNumber": "number", **etype.tabular[ts]}

    def _ts_rows(self, etype: EntityType, ts: str) -> list[dict]:
        return [line for row in self._data[etype.name].values() for line in row[ts]]

    def _metadata(self) -> Response:
        """CSDL as 1C publishes it: an EntityType per object and per tabular section (key Ref_Key,
        plus LineNumber for a section), a ``…_RowType`` ComplexType per section that the owner's
        collection property refers to, and the EntitySets in the EnterpriseV8 container."""
        def props(fields: dict[str, str]) -> str:
            return "".join(f'<Property Name="{escape(name)}" Type="{_EDM_TYPES.get(kind, "Edm.String")}" '
                           f'Nullable="{"false" if name in ("Ref_Key", "LineNumber") else "true"}"/>'
                           for name, kind in fields.items())

        types = []
        for etype in self.schema.values():
            sections = "".join(f'<Property Name="{escape(ts)}" Type="Collection(StandardODATA.'
                               f'{escape(etype.name)}_{escape(ts)}_RowType)" Nullable="false"/>'
                               for ts in etype.tabular)
            types.append(f'<EntityType Name="{escape(etype.name)}"><Key><PropertyRef Name="Ref_Key"/></Key>'
                         f'{props(etype.fields)}{sections}</EntityType>')
            for ts in etype.tabular:
                row = self._ts_types(etype, ts)
                name = escape(f"{etype.name}_{ts}")
                types.append(f'<EntityType Name="{name}"><Key><PropertyRef Name="Ref_Key"/>'
                             f'<PropertyRef Name="LineNumber"/></Key>{props(row)}</EntityType>')
                types.append(f'<ComplexType Name="{name}_RowType">{props(row)}</ComplexType>')
        sets = "".join(f'<EntitySet Name="{escape(s)}" EntityType="StandardODATA.{escape(s)}"/>'
                       for s in self._all_sets())
        xml = ('<?xml version="1.0" encoding="UTF-8"?><edmx:Edmx xmlns:edmx="http://schemas.microsoft.com/'
               'ado/2007/06/edmx" Version="1.0"><edmx:DataServices xmlns:m="http://schemas.microsoft.com/ado/'
               '2007/08/dataservices/metadata" m:DataServiceVersion="3.0"><Schema '
               'xmlns="http://schemas.microsoft.com/ado/2009/11/edm" Namespace="StandardODATA">'
               f'{"".join(types)}<EntityContainer Name="EnterpriseV8" m:IsDefaultEntityContainer="true">'
               f'{sets}</EntityContainer></Schema></edmx:DataServices></edmx:Edmx>')
        return Response(xml, content_type="application/xml;charset=utf-8")

    @staticmethod
    def _select(request: Request, types: dict[str, str], etype: EntityType | None = None) -> list[str] | None:
        raw = request.args.get("$select")
        if raw is None or raw.strip() in ("", "*"):
            return None
        names = [s.strip() for s in raw.split(",")]
        allowed = set(types) | (set(etype.tabular) if etype else set())
        for name in names:
            if name not in allowed:
                raise ODataError(400, "14", f"Ошибка разбора $select: неизвестное поле {name}")
        return names

    @staticmethod
    def _project(row: dict, select: list[str] | None) -> dict:
        if select is None:
            return dict(row)
        return {k: row[k] for k in select if k in row}

    def _query(self, request: Request, root: str, set_name: str, rows: list[dict], types: dict[str, str]) -> Response:
        args = request.args
        etype = self.schema.get(set_name)
        flt = args.get("$filter")
        tree = parse_filter(flt, lambda name: name in types) if flt is not None else None
        select = self._select(request, types, etype)
        keys = _key_lookup(tree) if tree is not None else None
        if keys is not None:
            rows = [r for r in rows if _norm_str(str(r.get("Ref_Key") or "")) in keys]
        elif tree is not None:
            rows = [r for r in rows if _truth(_evaluate(tree, r, types))]
        orderby = args.get("$orderby")
        if orderby:
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
        count = len(rows)
        try:
            skip = int(args.get("$skip", 0))
            top = int(args["$top"]) if "$top" in args else None
            if skip < 0 or (top is not None and top < 0):
                raise ValueError
        except ValueError:
            raise ODataError(400, "14", "Ошибка разбора $top/$skip: ожидалось неотрицательное целое")
        rows = rows[skip:]
        if top is not None:
            rows = rows[:top]
        body: dict[str, Any] = {"odata.metadata": f"{root}$metadata#{set_name}"}
        if args.get("$inlinecount") == "allpages":
            body["odata.count"] = str(count)
        body["value"] = [self._project(r, select) for r in rows]
        return _json(body)

    def _body(self, request: Request, etype: EntityType, *, creating: bool) -> tuple[dict, dict]:
        try:
            body = json.loads(request.get_data().decode("utf-8") or "{}", parse_float=Decimal)
        except (ValueError, UnicodeDecodeError) as exc:
            raise ODataError(400, "14", f"Ошибка разбора тела запроса: {exc}")
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
                if not isinstance(value, list):
                    raise ODataError(400, "14", f"Табличная часть {name} должна быть массивом")
                cols = etype.tabular[name]
                lines = []
                for line in value:
                    if not isinstance(line, dict):
                        raise ODataError(400, "14", f"Строка табличной части {name} должна быть объектом")
                    lines.append({k: self._coerce(k, cols.get(k), v) for k, v in line.items()
                                  if k not in ("Ref_Key", "LineNumber")})
                tabular[name] = lines
                continue
            if name not in etype.fields:
                raise ODataError(400, "14", f"Неизвестное свойство {name} у {etype.name}")
            values[name] = self._coerce(name, etype.fields[name], value)
        return values, tabular

    @staticmethod
    def _coerce(name: str, kind: str | None, value: Any) -> Any:
        bad = ODataError(400, "14", f"Неверное значение свойства {name}: {value!r}")
        if kind is None:
            raise ODataError(400, "14", f"Неизвестное свойство {name}")
        if kind == "guid":
            try:
                return str(uuid.UUID(str(value)))
            except ValueError:
                raise bad
        if kind == "datetime":
            if not isinstance(value, str) or not _DT.match(value):
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
                raise bad
        if not isinstance(value, str):
            raise bad
        return value

    # ------------------------------------------------------------------ control API
    def _sandbox(self, request: Request) -> Response:
        path, method = request.path.rstrip("/"), request.method
        body: dict = {}
        if method in ("POST", "PATCH") and request.get_data():
            try:
                body = json.loads(request.get_data().decode("utf-8"))
            except ValueError:
                return _json({"error": "body is not JSON"}, 400)
        try:
            if path == "/_sandbox/zayavki" and method == "GET":
                return _json(self.zayavki(request.args.get("lead")))
            if path == "/_sandbox/zayavki" and method == "POST":
                row = self.add_zayavka(lead=body.get("lead"), doctor=body["doctor"],
                                       start=datetime.fromisoformat(body["start"]),
                                       end=datetime.fromisoformat(body["end"]) if body.get("end") else None,
                                       client=body.get("client"), posted=body.get("posted", True))
                return _json({"ref": row["Ref_Key"], "number": row["Number"]}, 201)
            if path == "/_sandbox/services" and method == "GET":
                return _json(self.services())
            if path == "/_sandbox/services" and method == "POST":
                if "zayavka_ref" in body:
                    zref = body["zayavka_ref"]
                elif "lead" in body:
                    found = [z for z in self.zayavki(str(body["lead"])) if not z["deletion_mark"]]
                    if not found:
                        return _json({"error": f"no «Заявка» for lead {body['lead']}"}, 404)
                    zref = found[-1]["ref"]
                else:
                    return _json({"error": "give lead or zayavka_ref"}, 400)
                when = datetime.fromisoformat(body["date"]) if body.get("date") else None
                row = self.add_service(zayavka_ref=zref, amount=body.get("amount", "0"), date_=when,
                                       post=body.get("post", True))
                return _json({"ref": row["Ref_Key"], "number": row["Number"]}, 201)
            m = re.match(r"^/_sandbox/services/([0-9a-fA-F-]{36})/(post|unpost|delete)$", path)
            if m and method == "POST":
                row = self.service_action(m.group(1).lower(), m.group(2), body.get("amount"))
                return _json({"ref": row["Ref_Key"], "number": row["Number"], "posted": row["Posted"],
                              "deletion_mark": row["DeletionMark"]})
            if path == "/_sandbox/schedules" and method == "POST":
                lines = []
                with self._lock:
                    for line in body.get("lines", []):
                        lines.append((self._by_name(self.names.doctors, line["doctor"]),
                                      date.fromisoformat(line["date"][:10]),
                                      datetime.strptime(line["start"], "%H:%M").time(),
                                      datetime.strptime(line["end"], "%H:%M").time()))
                doc_date = datetime.fromisoformat(body["date"]) if body.get("date") else self.now()
                month = date.fromisoformat(body["month"][:10]) if body.get("month") else doc_date.date()
                row = self.add_schedule(lines, month=month, doc_date=doc_date, posted=body.get("posted", True))
                return _json({"ref": row["Ref_Key"], "number": row["Number"]}, 201)
            if path == "/_sandbox/clients" and method == "GET":
                return _json(self.clients())
            if path == "/_sandbox/faults":
                if method == "POST":
                    self.add_fault_from_json(body)
                    return _json({"ok": True}, 201)
                if method == "DELETE":
                    self.clear_faults()
                    return _json({"ok": True})
                return _json(self.pending_faults())
            if path == "/_sandbox/requests":
                if method == "DELETE":
                    self.reset_requests()
                return _json(self.requests())
        except KeyError as exc:
            return _json({"error": f"missing {exc.args[0]!r}"}, 400)
        except (ValueError, TypeError, InvalidOperation) as exc:
            return _json({"error": str(exc)}, 400)
        return _json({"error": f"unknown sandbox endpoint {method} {path}"}, 404)
