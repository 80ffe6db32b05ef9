"""The ONE place that talks to 1C: the standard OData interface (``/odata/standard.odata/``).

* HTTP Basic with the login and password encoded as UTF-8 (1C logins are often Cyrillic;
  requests' own Basic auth would encode them as latin-1 and fail).
* Every request goes through ``amo1c_sync.transport`` (timeouts, retries with backoff, the "was
  it sent" rule: a create — POST to a collection — is retried only when it surely never reached
  1C) and what each answer means is the table in ``onec/responses.py``. The ``odata.error``
  message is quoted verbatim with the method and the decoded path of the request (never the
  password).
* JSON is parsed with ``parse_float=Decimal``: money never passes through float.
"""

from __future__ import annotations

import base64
import json
import re
import time as _time
import uuid
from dataclasses import dataclass
from datetime import date, datetime, time, timedelta
from datetime import date as _date
from decimal import Decimal
from typing import Any, Iterable, Iterator, Mapping
from urllib.parse import unquote, urlparse
from zoneinfo import ZoneInfo

import requests
import structlog

from amo1c_sync.domain.patients import KnownClient, Phone
from amo1c_sync.domain.registration import display_number
from amo1c_sync.domain.retry import RequestRetry
from amo1c_sync.domain.totals import parse_lead_id
from amo1c_sync.errors import RetriableError
from amo1c_sync.onec import query as q
from amo1c_sync.onec import responses
from amo1c_sync.onec.names import OneCNames
from amo1c_sync.onec.responses import BASE_URL_HINT
from amo1c_sync.textutil import plain_text
from amo1c_sync.transport import Action, Exchange, Resolution, ResponseHook, Transport

log = structlog.get_logger("amo1c_sync.onec")

ODATA_ROOT = "odata/standard.odata/"
_UNSET: Any = object()


# ---------------------------------------------------------------------------------------------
# typed results
# ---------------------------------------------------------------------------------------------
@dataclass(frozen=True)
class CatalogItem:
    """A catalog element: a doctor (Сотрудники), a client, a nomenclature item."""

    ref: str
    code: str
    name: str
    deletion_mark: bool = False


Doctor = CatalogItem
Client = CatalogItem


@dataclass(frozen=True)
class ScheduleLine:
    """One line of a posted «Установка графиков работы»: doctor works ``start``-``end`` on ``day``.
    ``doc_date``/``doc_number`` tell which document wins when several set the same doctor+day."""

    doc_ref: str
    doc_number: str
    doc_date: datetime
    line_number: int
    doctor_ref: str
    day: date
    start: time
    end: time


@dataclass(frozen=True)
class Zayavka:
    """A «Заявка» document as the jobs need it."""

    ref: str
    number: str
    date: datetime | None
    posted: bool
    deletion_mark: bool
    data_version: str
    client_ref: str | None
    doctor_ref: str | None
    day: _date | None  # ``date`` is a field above
    start: time | None
    end: time | None  # None: no end set (0001-01-01T00:00:00)
    lead: str  # «Номер AmoCRM», stripped; "" when empty
    nomenclature_ref: str | None

    @property
    def display_number(self) -> str:
        """The number as people say it: «219», not «00000000219»; «МС00-000232» as it is."""
        return display_number(self.number)


@dataclass(frozen=True)
class FollowedZayavka:
    """A «Заявка» as the lifecycle follows it (nothing else is read): ``state`` is the configured
    status attribute's value, "" when the base has none."""

    ref: str
    number: str
    data_version: str
    posted: bool
    deletion_mark: bool
    day: date | None
    start: time | None
    doctor_ref: str | None
    lead: str
    state: str = ""


@dataclass(frozen=True)
class Service:
    """An «Оказание услуг» as the payments job needs it (nothing else is read)."""

    ref: str
    number: str
    date: datetime | None
    data_version: str
    posted: bool
    deletion_mark: bool
    base_ref: str | None  # None: no base document
    base_type: str | None  # e.g. StandardODATA.Document_Заявка; None in single-typed mode
    amount: Decimal
    base_is_zayavka: bool

    @property
    def display_number(self) -> str:
        return display_number(self.number)


@dataclass(frozen=True)
class BaseVersion:
    """A «Заявка» as the payments job follows it: its DataVersion and «Номер AmoCRM» (stripped,
    None when empty)."""

    ref: str
    data_version: str
    lead: str | None
    date: datetime | None


@dataclass(frozen=True)
class DocVersion:
    """An «Оказание услуг» as a scan sees it: its ref and DataVersion only."""

    ref: str
    data_version: str


# ---------------------------------------------------------------------------------------------
# transport
# ---------------------------------------------------------------------------------------------
class _Utf8BasicAuth(requests.auth.AuthBase):
    """HTTP Basic with the credentials encoded as UTF-8 (as 1C expects)."""

    def __init__(self, username: str, password: str):
        token = base64.b64encode(f"{username}:{password}".encode("utf-8")).decode("ascii")
        self._header = f"Basic {token}"

    def __call__(self, r):
        r.headers["Authorization"] = self._header
        return r

    def __repr__(self) -> str:  # never show the credentials
        return "<UTF-8 Basic auth>"


@dataclass
class _Response:
    status: int
    body: Any


class OneC:
    """The 1C gateway. One instance per process; thread-safe as far as requests.Session is."""

    def __init__(
        self,
        base_url: str,
        username: str,
        password: str,
        *,
        names: OneCNames | None = None,
        connect_timeout: float = 5,
        read_timeout: float = 60,
        max_retries: int = 4,
        backoff_max: float = 30,
        backoff_base: float = 0.5,
        page_size: int = 500,
        scan_page_size: int = 5000,
        max_target_bytes: int = q.MAX_TARGET_BYTES,
        session: requests.Session | None = None,
        timezone: str = "Europe/Moscow",
        on_response: ResponseHook | None = None,
        retry: RequestRetry | None = None,
    ):
        """``retry`` (the ``[retry]`` request-level numbers) wins over max_retries/backoff_*."""
        base = base_url.rstrip("/") + "/"
        if not base.endswith(ODATA_ROOT):
            base += ODATA_ROOT
        self.root = base
        self.names = names or OneCNames()
        self.tz = ZoneInfo(timezone)  # 1C datetimes are naive local times of the base
        self.timeout = (connect_timeout, read_timeout)
        self.page_size = page_size
        self.scan_page_size = max(scan_page_size, page_size)
        self.max_target_bytes = max_target_bytes
        self._session = session or requests.Session()
        self._session.auth = _Utf8BasicAuth(username, password)
        self._session.headers.update({"Accept": "application/json", "User-Agent": "amo1c-sync"})
        self.transport = Transport(
            system="1c", label="1C", base_url=self.root, table=responses.ODATA, session=self._session,
            timeouts=self.timeout, on_response=on_response, describe=self._describe,
            policy=retry or RequestRetry(retries=max_retries, backoff_base=backoff_base,
                                         backoff_max=backoff_max))
        self._username = username
        # the path part of the root, counted against the 2,000-byte request target limit
        self._prefix_bytes = len(urlparse(self.root).path.encode("ascii"))

    def __repr__(self) -> str:
        return f"OneC({self.root!r}, user={self._username!r})"

    def now(self) -> datetime:
        """The current naive local time of the 1C base (its time zone, not this machine's)."""
        return datetime.now(self.tz).replace(tzinfo=None, microsecond=0)

    def close(self) -> None:
        self._session.close()

    def fail_fast(self) -> Any:
        """This thread's 1C requests without inline retries while inside (``Transport.fail_fast``)."""
        return self.transport.fail_fast()

    def __enter__(self) -> "OneC":
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    # --- low level ---------------------------------------------------------------------------
    def _describe(self, method: str, target: str) -> str:
        text = unquote(target)
        if len(text) > 300:
            text = text[:300] + "…"
        return f"{method} {urlparse(self.root).path}{text}"

    def _request(self, method: str, target: str, *, body: Any = None, idempotent: bool = True,
                 raw: bool = False) -> _Response:
        """Send through the transport (``onec/responses.py`` says what each answer means):
        the body of a 2xx (bytes with ``raw``, else JSON with Decimal numbers); ItemError,
        FatalError or, after the retries, RetriableError otherwise."""
        data = None
        headers = {}
        if body is not None:
            data = json.dumps(body, ensure_ascii=False, default=_json_default).encode("utf-8")
            headers["Content-Type"] = "application/json; charset=utf-8"
        ex = self.transport.request(method, target, data=data, headers=headers, allow_redirects=False,
                                    idempotent=idempotent, raise_fail=True,
                                    check=None if raw else _parse_json)
        assert ex.response is not None
        log.debug("onec.request", request=ex.what, status=ex.response.status_code)
        return _Response(ex.response.status_code, ex.response.content if raw else ex.body)

    def _get(self, query: q.Query) -> list[dict]:
        resp = self._request("GET", query.target())
        body = resp.body or {}
        return [plain_row(r) for r in body.get("value", [])] if isinstance(body, dict) else []

    def _get_all(self, query: q.Query, *, scan: bool = False) -> Iterator[dict]:
        """Client-driven paging: $top/$skip with $orderby ending in Ref_Key.

        ``scan`` (a window scan that may hold thousands of rows): the first page is ``page_size``
        rows, as any read's (a short window costs one request as before); once the read proves
        longer, the rest comes ``scan_page_size`` rows a page. There is no server cursor: every
        page is the whole query again (filtered and ordered, then ``$skip``), so a scan of 10,000
        rows in pages of 500 cost the server 21 whole queries (the emulator: ~50 ms each, of ~55 ms
        a page; the client's parsing is ~5 ms). 1C's docs give ``$top`` no maximum (without it 1C
        answers the whole set); pages of 5,000 of the scans' few properties are ~2 MB of JSON."""
        skip, top = 0, self.page_size
        while True:
            rows = self._get(query.page(top, skip))
            yield from rows
            if len(rows) < top:
                return
            skip += len(rows)
            if scan:
                top = self.scan_page_size

    def _batched(self, refs: Iterable[str], make_query, field_name: str = "Ref_Key") -> Iterator[dict]:
        for _chunk, query in q.ref_batches(refs, make_query, field_name=field_name,
                                           max_bytes=self.max_target_bytes, prefix_bytes=self._prefix_bytes):
            yield from self._get_all(query)

    # --- catalogs ----------------------------------------------------------------------------
    _CATALOG_FIELDS = ("Ref_Key", "Code", "Description", "DeletionMark")

    def _catalog(self, entity_set: str, flt: str | None) -> list[CatalogItem]:
        query = q.Query(entity_set, filter=flt, select=self._CATALOG_FIELDS, orderby=("Code",))
        return [_catalog_item(r) for r in self._get_all(query)]

    def doctors(self) -> list[CatalogItem]:
        """All doctors not marked for deletion, ordered by code."""
        return self._catalog(self.names.doctors, q.eq("DeletionMark", False))

    def _by_description(self, entity_set: str, description: str) -> list[CatalogItem]:
        """Non-deleted items whose Description equals ``description``, ordered by Code.

        A description too long for one request target (IIS and Apache in front of 1C refuse long
        URLs: 404.15 / 414) is looked up by its longest beginning that fits (``substringof``), and
        the rows are compared with the whole description here."""
        live = q.eq("DeletionMark", False)
        exact = q.and_(q.eq("Description", description), live)
        if self._fits(entity_set, exact):
            return self._catalog(entity_set, exact)
        lo, hi = 0, len(description)  # the longest prefix whose filter fits: lo fits, hi + 1 does not
        while lo < hi:
            mid = (lo + hi + 1) // 2
            if self._fits(entity_set, q.and_(q.substringof(description[:mid], "Description"), live)):
                lo = mid
            else:
                hi = mid - 1
        flt = q.and_(q.substringof(description[:lo], "Description"), live) if lo else live
        return [item for item in self._catalog(entity_set, flt) if item.name == text_of(description)]

    def _fits(self, entity_set: str, flt: str) -> bool:
        """Whether a catalog query with this filter stays within the request target limit on every
        page (``$skip`` grows as pages go on; a billion rows is the margin)."""
        query = q.Query(entity_set, filter=flt, select=self._CATALOG_FIELDS, orderby=("Code",))
        return q.target_bytes(query.page(self.page_size, 10**9), self._prefix_bytes) <= self.max_target_bytes

    def find_catalog_item(self, entity_set: str, description: str) -> CatalogItem | None:
        """The first (by Code) non-deleted item whose Description equals ``description``."""
        items = self._by_description(entity_set, description)
        return items[0] if items else None

    def find_clients(self, description: str) -> list[CatalogItem]:
        """Non-deleted clients whose Description equals ``description`` exactly, ordered by Code."""
        return self._by_description(self.names.clients, description)

    def create_client(self, description: str, phones: Iterable[Phone] = ()) -> CatalogItem:
        """A new client; each phone becomes a line of its contact information (kind, the number
        as people read it, and as the digits the phone search compares). NOT retried once sent:
        the caller looks the client up by phone and name before a rerun creates one."""
        n = self.names
        body: dict[str, Any] = {"Description": description}
        lines = [{n.client_contact_type: n.client_contact_phone_type, n.client_contact_presentation: p.display,
                  n.client_contact_phone: p.digits} for p in phones]
        if lines:
            body[n.client_contacts] = lines
        return _catalog_item(self._create(n.clients, body))

    def client(self, ref: str) -> KnownClient | None:
        """The client with this ref, marked for deletion or not; None when 1C has none (a filter,
        not ``Catalog(guid'…')``: an unknown ref is an empty answer, not an error)."""
        try:
            key = str(uuid.UUID(str(ref)))
        except ValueError:
            return None
        rows = self._get(q.Query(self.names.clients, filter=q.eq("Ref_Key", q.Guid(key)),
                                 select=self._CATALOG_FIELDS))
        return _known_client(rows[0]) if rows else None

    def clients_by_phones(self, digits: Iterable[str]) -> list[KnownClient]:
        """Clients (marked for deletion too: the caller skips them) whose contact information has
        a phone line whose digits column contains one of ``digits`` — the numbers' national digits
        (``Phone.national``: «9111234567», without country code or trunk prefix).

        One query on the contact-information section (``substringof`` on the digits, so
        «79111234567», «89111234567», «+79111234567» and «9111234567» all match); it relies on
        the column holding digits only, as typical configurations fill it. The match is loose
        (a longer number containing the digits matches too): ``domain.patients`` rechecks each
        number. Each client carries the presentations and digits of its matching lines."""
        n = self.names
        wanted = list(dict.fromkeys(d for d in (re.sub(r"\D", "", str(x)) for x in digits) if d))
        lines: dict[str, list[str]] = {}
        for chunk in self._phone_chunks(wanted):
            for r in self._get_all(self._phone_query(chunk)):
                found = lines.setdefault(r["Ref_Key"], [])
                found.extend(str(r.get(k) or "") for k in (n.client_contact_presentation, n.client_contact_phone))
        if not lines:
            return []

        def make(flt: str) -> q.Query:
            return q.Query(n.clients, filter=flt, select=self._CATALOG_FIELDS, orderby=("Ref_Key",))

        out = [_known_client(r, tuple(x for x in lines[r["Ref_Key"]] if x)) for r in self._batched(lines, make)]
        return sorted(out, key=lambda c: (c.code, c.ref))

    @staticmethod
    def _contact_columns(n: OneCNames) -> tuple[str, ...]:
        """What the phone search reads and a new client's phone lines write."""
        return ("Ref_Key", "LineNumber", n.client_contact_type, n.client_contact_phone, n.client_contact_presentation)

    def _phone_query(self, digits: list[str]) -> q.Query:
        n = self.names
        flt = q.and_(q.eq(n.client_contact_type, n.client_contact_phone_type),
                     q.or_(*(q.substringof(d, n.client_contact_phone) for d in digits)))
        return q.Query(n.client_contacts_set, filter=flt, orderby=("Ref_Key", "LineNumber"),
                       select=self._contact_columns(n))

    def _phone_chunks(self, digits: list[str]) -> Iterator[list[str]]:
        """``digits`` in as few queries as fit the request target limit (one for any real contact)."""
        i = 0
        while i < len(digits):
            size = len(digits) - i
            while size > 1 and q.target_bytes(self._phone_query(digits[i:i + size]).page(self.page_size, 10**9),
                                              self._prefix_bytes) > self.max_target_bytes:
                size -= 1
            yield digits[i:i + size]
            i += size

    def create_catalog_item(self, entity_set: str, description: str) -> CatalogItem:
        """A new catalog element (the set-up's «Номенклатура AmoCRM», «Клиент из AmoCRM»)."""
        return _catalog_item(self._create(entity_set, {"Description": description}))

    def default_client(self) -> CatalogItem | None:
        return self.find_catalog_item(self.names.clients, self.names.default_client)

    def default_nomenclature(self) -> CatalogItem | None:
        return self.find_catalog_item(self.names.nomenclature, self.names.default_nomenclature)

    # --- schedules ---------------------------------------------------------------------------
    def schedule_lines(self, month_or_date: date | datetime, *, only_day: bool = False) -> list[ScheduleLine]:
        """Lines of the posted, non-deleted «Установка графиков работы» whose МесяцГрафика is the
        month of ``month_or_date``; with ``only_day=True`` only the lines for that very date.
        Each line carries its document's Date and Number: when several documents set the same
        doctor and day, the latest (by Date, then Number) wins — that rule is the caller's."""
        n = self.names
        d = month_or_date.date() if isinstance(month_or_date, datetime) else month_or_date
        month = date(d.year, d.month, 1)
        only = d if only_day else None
        docs_q = q.Query(n.schedules,
                         filter=q.and_(q.eq(n.schedules_month, month), q.eq("Posted", True),
                                       q.eq("DeletionMark", False)),
                         select=("Ref_Key", "Number", "Date"))
        docs = {r["Ref_Key"]: r for r in self._get_all(docs_q)}
        if not docs:
            return []
        day_filter = q.eq(n.schedule_date, only) if only else None

        def lines_query(refs_filter: str) -> q.Query:
            return q.Query(n.schedules_lines_set, filter=q.and_(refs_filter, day_filter),
                           select=("Ref_Key", "LineNumber", n.schedule_doctor, n.schedule_date,
                                   n.schedule_start, n.schedule_end),
                           orderby=("Ref_Key", "LineNumber"))  # a total order for paging

        out: list[ScheduleLine] = []
        for r in self._batched(docs, lines_query):
            doc = docs[r["Ref_Key"]]
            day = q.parse_date(r.get(n.schedule_date))
            start, end = q.parse_time(r.get(n.schedule_start)), q.parse_time(r.get(n.schedule_end))
            if day is None or start is None or end is None or q.is_empty_ref(r.get(n.schedule_doctor)):
                continue
            if only and day != only:
                continue
            out.append(ScheduleLine(doc_ref=doc["Ref_Key"], doc_number=doc.get("Number", ""),
                                    doc_date=q.parse_datetime(doc.get("Date")) or datetime.min,
                                    line_number=int(r.get("LineNumber") or 0),
                                    doctor_ref=r[n.schedule_doctor], day=day, start=start, end=end))
        out.sort(key=lambda s: (s.day, s.doctor_ref, s.doc_date, s.doc_number, s.line_number))
        return out

    def schedule_for_day(self, day: date) -> list[ScheduleLine]:
        """Lines for exactly this day (also when it is the 1st of a month)."""
        return self.schedule_lines(day, only_day=True)

    # --- «Заявка» ----------------------------------------------------------------------------
    def _zayavka_fields(self) -> tuple[str, ...]:
        n = self.names
        return ("Ref_Key", "Number", "Date", "Posted", "DeletionMark", "DataVersion", n.zayavka_client,
                n.zayavka_doctor, n.zayavka_date, n.zayavka_start, n.zayavka_end, n.zayavka_lead,
                n.zayavka_nomenclature)

    def _zayavka(self, r: Mapping[str, Any]) -> Zayavka:
        n = self.names
        return Zayavka(
            ref=r["Ref_Key"], number=text_of(r.get("Number")), date=q.parse_datetime(r.get("Date")),
            posted=bool(r.get("Posted")), deletion_mark=bool(r.get("DeletionMark")),
            data_version=r.get("DataVersion", ""),
            client_ref=_ref(r.get(n.zayavka_client)), doctor_ref=_ref(r.get(n.zayavka_doctor)),
            day=q.parse_date(r.get(n.zayavka_date)), start=q.parse_time(r.get(n.zayavka_start)),
            end=q.parse_time(r.get(n.zayavka_end)), lead=str(r.get(n.zayavka_lead) or "").strip(),
            nomenclature_ref=_ref(r.get(n.zayavka_nomenclature)),
        )

    def zayavki_on(self, day: date, doctor_ref: str | None = None) -> list[Zayavka]:
        """Non-deleted «Заявки» whose appointment date is ``day`` (optionally of one doctor)."""
        n = self.names
        start = datetime(day.year, day.month, day.day)
        flt = q.and_(q.ge(n.zayavka_date, start), q.lt(n.zayavka_date, start + timedelta(days=1)),
                     q.eq("DeletionMark", False),
                     q.eq(n.zayavka_doctor, q.Guid(doctor_ref)) if doctor_ref else None)
        query = q.Query(n.zayavka, filter=flt, select=self._zayavka_fields())
        return [self._zayavka(r) for r in self._get_all(query)]

    def zayavki_by_lead(self, lead_id: int | str) -> list[Zayavka]:
        """Non-deleted «Заявки» whose «Номер AmoCRM» reads as this lead id, oldest first.

        The rule is ``parse_lead_id``, the one payments apply («030000093» and « 30000093» are lead
        30000093): 1C compares strings only, so the query fetches the candidates containing the
        digits and the rule picks among them."""
        n = self.names
        want = parse_lead_id(str(lead_id))
        if want is None:
            return []
        query = q.Query(n.zayavka, filter=q.and_(q.substringof(str(want), n.zayavka_lead),
                                                 q.eq("DeletionMark", False)),
                        select=self._zayavka_fields())
        rows = [z for z in map(self._zayavka, self._get_all(query)) if parse_lead_id(z.lead) == want]
        rows.sort(key=lambda z: (z.date or datetime.min, z.number))
        return rows

    def zayavki_for(self, lead_ids: Iterable[int], days: Iterable[tuple[date, str]] = ()
                    ) -> tuple[dict[int, list[Zayavka]], dict[tuple[date, str], list[Zayavka]]]:
        """The non-deleted «Заявки» of many leads (by ``parse_lead_id`` of «Номер AmoCRM», oldest
        first) and of many (day, doctor ref) pairs, in as few GETs as the request target allows:
        one filter ORs every lead's and every day's condition. Keys of the second map are
        ``(day, doctor_ref.lower())``."""
        n = self.names
        want: dict[int, list[Zayavka]] = {w: [] for w in (parse_lead_id(str(i)) for i in lead_ids) if w is not None}
        booked: dict[tuple[date, str], list[Zayavka]] = {(d, r.lower()): [] for d, r in days}
        terms: list[str] = [q.substringof(str(w), n.zayavka_lead) for w in want]
        for d, ref in booked:
            start = datetime(d.year, d.month, d.day)
            terms.append(q.Raw("(" + q.and_(q.ge(n.zayavka_date, start),
                                            q.lt(n.zayavka_date, start + timedelta(days=1)),
                                            q.eq(n.zayavka_doctor, q.Guid(ref))) + ")"))

        def make(chunk: list[str]) -> q.Query:
            return q.Query(n.zayavka, filter=q.and_(q.or_(*chunk), q.eq("DeletionMark", False)),
                           select=self._zayavka_fields())

        for query in self._packed(terms, make):
            for z in map(self._zayavka, self._get_all(query)):
                lead = parse_lead_id(z.lead)
                if lead in want:
                    want[lead].append(z)
                key = (z.day, (z.doctor_ref or "").lower())
                if key in booked:
                    booked[key].append(z)
        for rows in want.values():
            rows.sort(key=lambda z: (z.date or datetime.min, z.number))
        return want, booked

    def _packed(self, terms: list[str], make) -> Iterator[q.Query]:
        """Queries of ``make(chunk)`` over consecutive chunks of ``terms``, each as long as its
        request target (with the first page's paging) stays under ``max_target_bytes``."""
        chunk: list[str] = []
        for term in terms:
            trial = make(chunk + [term]).page(self.page_size, 10**6)
            if chunk and q.target_bytes(trial, self._prefix_bytes) >= self.max_target_bytes:
                yield make(chunk)
                chunk = []
            chunk.append(term)
        if chunk:
            yield make(chunk)

    def get_zayavka(self, ref: str) -> Zayavka:
        resp = self._request("GET", q.entity_path(self.names.zayavka, ref) + "?" +
                             q.Query(self.names.zayavka, select=self._zayavka_fields()).query_string())
        return self._zayavka(resp.body)

    def _zayavka_body(self, *, client_ref, doctor_ref, day, start, end, lead_id, nomenclature_ref,
                      doc_date) -> dict[str, Any]:
        n = self.names
        body: dict[str, Any] = {}
        if doc_date is not _UNSET:
            body["Date"] = q.format_datetime(doc_date)
        if client_ref is not _UNSET:
            body[n.zayavka_client] = str(uuid.UUID(str(client_ref)))
        if doctor_ref is not _UNSET:
            body[n.zayavka_doctor] = str(uuid.UUID(str(doctor_ref)))
        if day is not _UNSET:
            body[n.zayavka_date] = q.format_datetime(day.date() if isinstance(day, datetime) else day)
        if start is not _UNSET:
            body[n.zayavka_start] = q.format_datetime(start)
        if end is not _UNSET:
            body[n.zayavka_end] = q.EMPTY_DATE if end is None else q.format_datetime(end)
        if lead_id is not _UNSET:
            body[n.zayavka_lead] = "" if lead_id is None else str(lead_id)
        if nomenclature_ref is not _UNSET:
            body[n.zayavka_nomenclature] = str(uuid.UUID(str(nomenclature_ref)))
        return body

    def create_zayavka(self, *, client_ref: str, doctor_ref: str, day: date, start: time, end: time | None,
                       lead_id: int | str, nomenclature_ref: str, doc_date: datetime | None = None) -> Zayavka:
        """Create (not post) a «Заявка». NOT retried once sent: look it up by lead before a rerun."""
        body = self._zayavka_body(client_ref=client_ref, doctor_ref=doctor_ref, day=day, start=start, end=end,
                                  lead_id=lead_id, nomenclature_ref=nomenclature_ref,
                                  doc_date=doc_date or self.now())
        return self._zayavka(self._create(self.names.zayavka, body))

    def update_zayavka(self, ref: str, *, client_ref=_UNSET, doctor_ref=_UNSET, day=_UNSET, start=_UNSET,
                       end=_UNSET, lead_id=_UNSET, nomenclature_ref=_UNSET) -> Zayavka:
        """PATCH only the given attributes (``end=None`` clears the end time)."""
        body = self._zayavka_body(client_ref=client_ref, doctor_ref=doctor_ref, day=day, start=start, end=end,
                                  lead_id=lead_id, nomenclature_ref=nomenclature_ref, doc_date=_UNSET)
        resp = self._request("PATCH", q.entity_path(self.names.zayavka, ref) + "?$format=json", body=body)
        return self._zayavka(resp.body)

    # --- the lifecycle -----------------------------------------------------------------------
    def zayavka_versions(self, date_from: date, date_to: date) -> dict[str, str]:
        """{ref: DataVersion} of the «Заявки» with a «Номер AmoCRM» whose appointment date is in
        ``[date_from, date_to]``: two properties each, so a cycle where nothing changed reads
        nothing more."""
        n = self.names
        lo = datetime(date_from.year, date_from.month, date_from.day)
        hi = datetime(date_to.year, date_to.month, date_to.day) + timedelta(days=1)
        query = q.Query(n.zayavka, filter=q.and_(q.ge(n.zayavka_date, lo), q.lt(n.zayavka_date, hi),
                                                 q.ne(n.zayavka_lead, "")),
                        select=("Ref_Key", "DataVersion"))
        return {r["Ref_Key"]: r.get("DataVersion", "") for r in self._get_all(query)}

    def zayavka_versions_of(self, refs: Iterable[str]) -> dict[str, str]:
        """{ref: DataVersion} of these «Заявки» (batched by ref); one 1C no longer has is absent."""
        n = self.names

        def make(flt: str) -> q.Query:
            return q.Query(n.zayavka, filter=flt, select=("Ref_Key", "DataVersion"))

        return {r["Ref_Key"]: r.get("DataVersion", "") for r in self._batched(list(refs), make)}

    def followed_zayavki(self, refs: Iterable[str]) -> list[FollowedZayavka]:
        """The fields the lifecycle mirrors, of these «Заявки» (batched by ref)."""
        n = self.names
        select = ("Ref_Key", "Number", "Posted", "DeletionMark", "DataVersion", n.zayavka_doctor,
                  n.zayavka_date, n.zayavka_start, n.zayavka_lead, *((n.zayavka_state,) if n.zayavka_state else ()))

        def make(flt: str) -> q.Query:
            return q.Query(n.zayavka, filter=flt, select=select)

        return [FollowedZayavka(
            ref=r["Ref_Key"], number=text_of(r.get("Number")), data_version=r.get("DataVersion", ""),
            posted=bool(r.get("Posted")), deletion_mark=bool(r.get("DeletionMark")),
            day=q.parse_date(r.get(n.zayavka_date)), start=q.parse_time(r.get(n.zayavka_start)),
            doctor_ref=_ref(r.get(n.zayavka_doctor)), lead=str(r.get(n.zayavka_lead) or "").strip(),
            state=text_of(r.get(n.zayavka_state)) if n.zayavka_state else "")
            for r in self._batched(list(refs), make)]

    def mark_zayavka_deleted(self, ref: str) -> None:
        """The deletion mark, as 1C sets it: a posted document is unposted first. Both steps are
        idempotent, so a retry after a lost answer changes nothing more."""
        self.unpost(self.names.zayavka, ref)
        self._request("PATCH", q.entity_path(self.names.zayavka, ref) + "?$format=json",
                      body={"DeletionMark": True})

    # --- generic writes ----------------------------------------------------------------------
    def _create(self, entity_set: str, body: Mapping[str, Any]) -> dict:
        resp = self._request("POST", q.entity_path(entity_set) + "?$format=json", body=dict(body), idempotent=False)
        if not isinstance(resp.body, dict) or "Ref_Key" not in resp.body:
            raise RetriableError(f"1C did not return the created object for POST {entity_set}")
        return resp.body

    def post(self, entity_set: str, ref: str) -> None:
        """Post (провести) a document, non-operational mode. Idempotent, so retried."""
        self._request("POST", q.entity_path(entity_set, ref, "Post") + "?PostingModeOperational=false&$format=json",
                      raw=True)  # any 2xx is done, whatever its body

    def unpost(self, entity_set: str, ref: str) -> None:
        self._request("POST", q.entity_path(entity_set, ref, "Unpost") + "?$format=json", raw=True)

    # --- «Оказание услуг» --------------------------------------------------------------------
    def services_in_window(self, date_from: date | datetime, date_to: date | datetime) -> list[Service]:
        """Every «Оказание услуг» (posted or not, deleted or not) with ``date_from <= Date`` and
        ``Date < date_to`` for datetimes; a ``date`` as ``date_to`` includes that whole day."""
        n = self.names
        lo = (date_from if isinstance(date_from, datetime)
              else datetime(date_from.year, date_from.month, date_from.day))
        hi = (date_to if isinstance(date_to, datetime)
              else datetime(date_to.year, date_to.month, date_to.day) + timedelta(days=1))
        query = q.Query(n.services, filter=q.and_(q.ge("Date", lo), q.lt("Date", hi)), select=self._service_fields())
        return [self._service(r) for r in self._get_all(query, scan=True)]

    def _service(self, r: Mapping[str, Any]) -> Service:
        n = self.names
        if n.base_ref_mode == "single":
            base = _ref(r.get(f"{n.services_base}_Key"))
            base_type = None
            is_zayavka = base is not None
        else:
            base_type = r.get(f"{n.services_base}_Type") or None
            raw = r.get(n.services_base)
            base = _ref(raw if _is_guid(raw) else None)
            is_zayavka = base is not None and base_type == n.zayavka_type_name
        amount = r.get(n.services_amount)
        return Service(ref=r["Ref_Key"], number=text_of(r.get("Number")), date=q.parse_datetime(r.get("Date")),
                       data_version=r.get("DataVersion", ""), posted=bool(r.get("Posted")),
                       deletion_mark=bool(r.get("DeletionMark")), base_ref=base, base_type=base_type,
                       amount=_decimal(amount), base_is_zayavka=is_zayavka)

    # --- what the payments job follows --------------------------------------------------------
    def _service_fields(self) -> tuple[str, ...]:
        n = self.names
        return ("Ref_Key", "Number", "Date", "DataVersion", "Posted", "DeletionMark",
                *n.services_base_fields, n.services_amount)

    def services_by_ref(self, refs: Iterable[str]) -> list[Service]:
        """The «Оказание услуг» of ``refs`` that still exist (any date), in batched look-ups."""
        def make(flt: str) -> q.Query:
            return q.Query(self.names.services, filter=flt, select=self._service_fields())

        return [self._service(r) for r in self._batched(sorted(refs), make)]

    def service_versions(self, date_from: datetime, date_to: datetime) -> list[DocVersion]:
        """Ref_Key and DataVersion of every «Оказание услуг» with ``date_from <= Date < date_to``."""
        query = q.Query(self.names.services, filter=q.and_(q.ge("Date", date_from), q.lt("Date", date_to)),
                        select=("Ref_Key", "DataVersion"))
        return [DocVersion(r["Ref_Key"], r.get("DataVersion", "")) for r in self._get_all(query, scan=True)]

    def _base_fields(self) -> tuple[str, ...]:
        return ("Ref_Key", "DataVersion", "Date", self.names.zayavka_lead)

    def _base_version(self, r: Mapping[str, Any]) -> BaseVersion:
        lead = str(r.get(self.names.zayavka_lead) or "").strip()
        return BaseVersion(ref=r["Ref_Key"], data_version=r.get("DataVersion", ""), lead=lead or None,
                           date=q.parse_datetime(r.get("Date")))

    def base_versions(self, date_from: datetime, date_to: datetime | None = None) -> list[BaseVersion]:
        """Every «Заявка» with document ``date_from <= Date`` (``< date_to`` when given): ref, DataVersion,
        «Номер AmoCRM», date."""
        n = self.names
        flt = q.and_(q.ge("Date", date_from), q.lt("Date", date_to) if date_to is not None else None)
        query = q.Query(n.zayavka, filter=flt, select=self._base_fields())
        return [self._base_version(r) for r in self._get_all(query, scan=True)]

    def bases_by_ref(self, refs: Iterable[str]) -> list[BaseVersion]:
        """The «Заявки» of ``refs`` that still exist, in batched look-ups (each request target under
        ``max_target_bytes``)."""
        n = self.names

        def make(flt: str) -> q.Query:
            return q.Query(n.zayavka, filter=flt, select=self._base_fields())

        wanted = [r for r in refs if not q.is_empty_ref(r)]
        return [self._base_version(r) for r in self._batched(sorted(wanted), make)]

    # --- health ------------------------------------------------------------------------------
    def ping(self) -> float:
        """One cheap authenticated read; returns seconds taken. Raises like any other call."""
        started = _time.monotonic()
        self._get(q.Query(self.names.doctors, select=("Ref_Key",), top=1))
        return _time.monotonic() - started

# ---------------------------------------------------------------------------------------------
def _parse_json(ex: Exchange) -> Resolution | None:
    """The transport's check of a 2xx: its JSON (numbers as Decimal) into ``ex.body``; a body that
    is not JSON (a proxy's page) is a passing fault."""
    resp = ex.response
    if resp is None or ex.action is not Action.OK or not resp.content:
        return None
    try:
        ex.body = json.loads(resp.content.decode("utf-8"), parse_float=Decimal)
        return None
    except ValueError:
        excerpt = plain_text(resp.content, 120)
        return Resolution(Action.RETRY, f"1C answered {resp.status_code} with a body that is not "
                          f"JSON: {ex.what}" + (f" («{excerpt}»; {BASE_URL_HINT})" if excerpt else ""))


def _is_guid(value: Any) -> bool:
    try:
        uuid.UUID(str(value))
        return True
    except (ValueError, TypeError):
        return False


def _ref(value: Any) -> str | None:
    if value is None or q.is_empty_ref(str(value)):
        return None
    return str(value)


def _decimal(value: Any) -> Decimal:
    if value is None or value == "":
        return Decimal("0")
    if isinstance(value, Decimal):
        return value
    if isinstance(value, float):  # never produced by our parser; be exact anyway
        return Decimal(repr(value))
    return Decimal(str(value))


def plain_row(row: Any) -> Any:
    """A row without its ``@``-annotations (``Клиент@navigationLinkUrl``, ``X@odata.type``) and
    ``odata.*`` keys, in its tabular sections too: 1C adds them; nothing here reads them."""
    if not isinstance(row, dict):
        return row
    return {k: ([plain_row(x) for x in v] if isinstance(v, list) else v) for k, v in row.items()
            if "@" not in k and not k.startswith("odata.")}


def text_of(value: Any) -> str:
    """A 1C string as compared and shown here: without the spaces that pad a fixed-length one."""
    return str(value or "").strip(" ")


def _catalog_item(r: Mapping[str, Any]) -> CatalogItem:
    return CatalogItem(ref=r["Ref_Key"], code=text_of(r.get("Code")), name=text_of(r.get("Description")),
                       deletion_mark=bool(r.get("DeletionMark")))


def _known_client(r: Mapping[str, Any], phones: tuple[str, ...] = ()) -> KnownClient:
    return KnownClient(ref=r["Ref_Key"], code=text_of(r.get("Code")), name=text_of(r.get("Description")),
                       deleted=bool(r.get("DeletionMark")), phones=phones)


def _json_default(value: Any) -> Any:
    if isinstance(value, Decimal):
        return float(value) if value != value.to_integral_value() else int(value)
    if isinstance(value, (datetime, date, time)):
        return q.format_datetime(value)
    if isinstance(value, uuid.UUID):
        return str(value)
    raise TypeError(f"cannot send {type(value).__name__} to 1C")
