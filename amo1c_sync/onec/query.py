"""A small builder for 1C standard OData (v3) queries.

Everything that reaches a URL goes through here: string literals are always quoted with ``'``
doubled, references are ``guid'…'``, dates are ``datetime'YYYY-MM-DDTHH:MM:SS'``, names are checked
to be 1C identifiers, and the result is percent-encoded (UTF-8) so Cyrillic names and values are safe.

>>> eq("Description", "O'Brien")
"Description eq 'O''Brien'"
"""

from __future__ import annotations

import re
import uuid
from dataclasses import dataclass, field, replace
from datetime import date, datetime, time
from decimal import Decimal
from typing import Iterable, Iterator, Sequence
from urllib.parse import quote

#: bytes one request target (path + "?" + query) may take; some proxies in front of 1C cut at 2,048
MAX_TARGET_BYTES = 2000

_IDENT = re.compile(r"^[^\W\d]\w*$")
_ORDER = re.compile(r"^([^\W\d]\w*)(?:\s+(asc|desc))?$", re.IGNORECASE)
# unreserved characters plus the few OData punctuation marks that read better unescaped
_SAFE = "$'(),:*"
EMPTY_DATE = "0001-01-01T00:00:00"
EMPTY_REF = "00000000-0000-0000-0000-000000000000"


class Raw(str):
    """A piece of filter text that is already an OData expression (never user input)."""


def name(value: str) -> str:
    """Check that ``value`` is an OData property or entity-set name (letters, digits, ``_``)."""
    if not isinstance(value, str) or not _IDENT.match(value):
        raise ValueError(f"not a 1C name: {value!r}")
    return value


def string(value: str) -> str:
    """An OData string literal: single quotes, embedded quotes doubled."""
    return "'" + str(value).replace("'", "''") + "'"


def guid(value: str | uuid.UUID) -> str:
    """``guid'…'``; raises ValueError for anything that is not a GUID."""
    return f"guid'{uuid.UUID(str(value))}'"


def format_datetime(value: date | datetime | time) -> str:
    """1C's wire format: naive local ``2021-12-22T09:05:00``; a time of day is on 0001-01-01."""
    if isinstance(value, datetime):
        if value.tzinfo is not None:
            raise ValueError("1C datetimes are naive local times; convert before sending")
        return value.replace(microsecond=0).isoformat(timespec="seconds")
    if isinstance(value, date):
        return datetime(value.year, value.month, value.day).isoformat(timespec="seconds")
    if isinstance(value, time):
        return f"0001-01-01T{value.replace(microsecond=0).isoformat(timespec='seconds')}"
    raise TypeError(f"not a date/time: {value!r}")


def datetime_literal(value: date | datetime | time) -> str:
    return f"datetime'{format_datetime(value)}'"


def literal(value: object) -> str:
    """Format any Python value as an OData literal (strings are ALWAYS escaped)."""
    if isinstance(value, Raw):
        return str(value)
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, uuid.UUID):
        return guid(value)
    if isinstance(value, (datetime, date, time)):
        return datetime_literal(value)
    if isinstance(value, int):
        return str(value)
    if isinstance(value, Decimal):
        if not value.is_finite():
            raise ValueError(f"not a finite number: {value!r}")
        return format(value, "f")
    if isinstance(value, str):
        return string(value)
    if value is None:
        return "null"
    raise TypeError(f"cannot put {type(value).__name__} into an OData filter")


class Guid(str):
    """Marks a string as a reference, so that ``eq(field, Guid(x))`` emits ``guid'x'``."""

    def __new__(cls, value: str | uuid.UUID) -> "Guid":
        return super().__new__(cls, str(uuid.UUID(str(value))))


def _cmp(op: str, field_name: str, value: object) -> Raw:
    if isinstance(value, Guid):
        return Raw(f"{name(field_name)} {op} {guid(value)}")
    return Raw(f"{name(field_name)} {op} {literal(value)}")


def eq(f: str, v: object) -> Raw: return _cmp("eq", f, v)
def ne(f: str, v: object) -> Raw: return _cmp("ne", f, v)
def gt(f: str, v: object) -> Raw: return _cmp("gt", f, v)
def ge(f: str, v: object) -> Raw: return _cmp("ge", f, v)
def lt(f: str, v: object) -> Raw: return _cmp("lt", f, v)
def le(f: str, v: object) -> Raw: return _cmp("le", f, v)


def and_(*parts: str | None) -> Raw:
    items = [p for p in parts if p]
    if len(items) == 1:
        return Raw(items[0])
    return Raw(" and ".join(f"({p})" if " or " in p else p for p in items))


def or_(*parts: str | None) -> Raw:
    items = [p for p in parts if p]
    if len(items) == 1:
        return Raw(items[0])
    return Raw("(" + " or ".join(items) + ")")


def not_(part: str) -> Raw:
    return Raw(f"not ({part})")


def substringof(needle: str, f: str) -> Raw:
    return Raw(f"substringof({string(needle)}, {name(f)})")


def encode(text: str) -> str:
    """Percent-encode (UTF-8) for a URL path segment or query value."""
    return quote(text, safe=_SAFE)


def entity_path(entity_set: str, ref: str | None = None, action: str | None = None) -> str:
    """``Catalog_X``, ``Document_X(guid'…')`` or ``Document_X(guid'…')/Post``, percent-encoded."""
    path = encode(name(entity_set))
    if ref is not None:
        path += encode(f"({guid(ref)})")
    if action is not None:
        path += "/" + encode(name(action))
    return path


@dataclass(frozen=True)
class Query:
    """One GET against an entity set. ``target()`` gives the percent-encoded path + query."""

    entity_set: str
    filter: str | None = None
    select: Sequence[str] = ()
    orderby: Sequence[str] = ()
    top: int | None = None
    skip: int | None = None
    extra: tuple[tuple[str, str], ...] = field(default=())

    def params(self) -> list[tuple[str, str]]:
        out: list[tuple[str, str]] = [("$format", "json")]
        if self.filter:
            out.append(("$filter", str(self.filter)))
        if self.select:
            out.append(("$select", ",".join(name(s) for s in self.select)))
        if self.orderby:
            for o in self.orderby:
                if not _ORDER.match(o):
                    raise ValueError(f"bad $orderby item: {o!r}")
            out.append(("$orderby", ",".join(self.orderby)))
        if self.top is not None:
            out.append(("$top", str(int(self.top))))
        if self.skip:
            out.append(("$skip", str(int(self.skip))))
        out.extend(self.extra)
        return out

    def query_string(self) -> str:
        return "&".join(f"{k}={encode(v)}" for k, v in self.params())

    def target(self) -> str:
        return f"{entity_path(self.entity_set)}?{self.query_string()}"

    def page(self, top: int, skip: int) -> "Query":
        order = list(self.orderby)
        if not any(o.split()[0] == "Ref_Key" for o in order):
            order.append("Ref_Key")  # a total order, so that $skip pages neither repeat nor skip rows
        return replace(self, top=top, skip=skip, orderby=tuple(order))


def target_bytes(query: Query, prefix_bytes: int = 0) -> int:
    return prefix_bytes + len(query.target().encode("ascii"))


def ref_batches(
    refs: Iterable[str],
    make_query,
    *,
    field_name: str = "Ref_Key",
    max_bytes: int = MAX_TARGET_BYTES,
    prefix_bytes: int = 0,
) -> Iterator[tuple[list[str], Query]]:
    """Split ``refs`` into ``(chunk, query)`` so that each query's request target stays under
    ``max_bytes`` (``prefix_bytes`` = the URL path in front of the entity set, e.g. /base/odata/…/).

    ``make_query(filter_text)`` builds the query for one chunk's ``Ref_Key eq … or …`` filter.
    Duplicates and invalid GUIDs are dropped (a bad GUID raises ValueError up front).

    Every GUID term renders to the same length, so from two terms on a target grows by a fixed step:
    the chunk size is computed once and each chunk is rendered once (linear in the refs; rendering
    each candidate chunk anew was quadratic, over a second for 10,000 refs).
    """
    seen: dict[str, None] = {}
    for r in refs:
        seen.setdefault(str(uuid.UUID(str(r))), None)
    pending = list(seen)

    def render(chunk: list[str]) -> Query:
        return make_query(or_(*(eq(field_name, Guid(x)) for x in chunk)))

    def fits(query: Query) -> bool:
        return target_bytes(query, prefix_bytes) < max_bytes

    size = _chunk_size(pending, render, fits, lambda query: target_bytes(query, prefix_bytes), max_bytes)
    i = 0
    while i < len(pending):
        n = min(size, len(pending) - i)
        query = render(pending[i:i + n])
        while not fits(query):  # a make_query that does not grow by a fixed step: shrink to fit
            n -= 1
            query = render(pending[i:i + n])
        yield pending[i:i + n], query
        i += n


def _chunk_size(pending: list[str], render, fits, size_of, max_bytes: int) -> int:
    """How many refs one request holds, from the rendered sizes of one, two and three of them."""
    if not pending:
        return 1
    if not fits(render(pending[:1])):
        raise ValueError("one reference alone does not fit into a request")
    if len(pending) < 3:
        return len(pending) if fits(render(pending)) else 1
    two, three = size_of(render(pending[:2])), size_of(render(pending[:3]))
    if two >= max_bytes:
        return 1
    return 2 + (max_bytes - 1 - two) // (three - two)


def parse_datetime(value: str | None) -> datetime | None:
    """1C datetime string -> naive datetime; the empty date 0001-01-01T00:00:00 -> None."""
    if not value or value.startswith(EMPTY_DATE):
        return None
    return datetime.fromisoformat(value[:19])


def parse_date(value: str | None) -> date | None:
    dt = parse_datetime(value)
    return dt.date() if dt else None


def parse_time(value: str | None) -> time | None:
    """``0001-01-01T09:05:00`` -> 09:05; the empty value (midnight on 0001-01-01) -> None."""
    if not value or value.startswith(EMPTY_DATE):
        return None
    return datetime.fromisoformat(value[:19]).time()


def is_empty_ref(value: str | None) -> bool:
    return not value or value == EMPTY_REF
