"""1C's ``$filter``: tokenizer, recursive-descent parser, evaluator.

``eq ne gt ge lt le and or not``, parentheses, ``substringof``, ``startswith``, ``endswith``,
``tolower``, ``toupper``, ``trim``, ``length``; literals ``guid'…'``, ``datetime'…'``,
``'strings'`` with ``''`` escapes, ``true``/``false``/``null``, numbers. String comparison is
case-insensitive and ignores trailing spaces, as 1C's DBMS collations do. A parse error or an
unknown property -> 400 ``odata.error`` code 14.
"""

from __future__ import annotations

import re
import uuid
from datetime import datetime
from decimal import Decimal, InvalidOperation
from typing import Any, Callable

from amo1c_sync.sandbox.onec_emulator.errors import parse_error as _parse_error

DATETIME_TEXT = re.compile(r"^\d{4}-\d{2}-\d{2}T\d{2}:\d{2}(:\d{2})?$")
_DT = DATETIME_TEXT

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
        if kind is None:  # every alternative of _TOKEN is a named group
            raise _parse_error(f"Ошибка разбора выражения $filter в позиции {pos + 1}")
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
                    raise _parse_error(f"Неверный литерал типа Guid: {value}") from None
            elif prefix == "datetime":
                if not _DT.match(raw):
                    raise _parse_error(f"Неверный литерал типа DateTime: {value}")
                try:
                    norm = raw if len(raw) == 19 else raw + ":00"
                    if not norm.startswith("0001-01-01"):
                        datetime.fromisoformat(norm)
                except ValueError:
                    raise _parse_error(f"Неверный литерал типа DateTime: {value}") from None
                out.append(("lit", ("datetime", norm)))
            else:
                raise _parse_error(f"Неподдерживаемый литерал: {value}")
        elif kind == "str":
            out.append(("lit", ("string", value[1:-1].replace("''", "'"))))
        elif kind == "num":
            try:
                out.append(("lit", ("number", Decimal(value.rstrip("mMdDfFlL")))))
            except InvalidOperation:
                raise _parse_error(f"Неверное число: {value}") from None
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
        if kind in ("number", "int64") and value is not None:
            return ("number", Decimal(str(value)))
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
    x: Any
    y: Any
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
    if kind in ("number", "int64"):
        return (1, Decimal(str(value)))
    return (1, value)

