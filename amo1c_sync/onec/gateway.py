"""The ONE place that talks to 1C: the standard OData interface (``/odata/standard.odata/``).

* HTTP Basic with the login and password encoded as UTF-8 (1C logins are often Cyrillic;
  requests' own Basic auth would encode them as latin-1 and fail).
* A (connect, read) timeout on every call; the first call after 1C has been idle may take 30 s+.
* Retries with capped exponential backoff and jitter (tenacity) on 5xx, timeouts and dropped
  connections. Creating objects (POST to a collection) is NOT idempotent, so it is retried only
  when the request surely never reached 1C (connection refused / connect timeout); other failures
  of a create surface at once as RetriableError and the caller's lookup-before-create makes the
  rerun safe.
* Errors: 401/403 -> FatalError; 400/404 -> ItemError; 5xx/timeouts after retries ->
  RetriableError. The ``odata.error`` message is quoted verbatim with the method and the decoded
  path of the request (never the password).
* JSON is parsed with ``parse_float=Decimal``: money never passes through float.
"""

from __future__ import annotations

import base64
import difflib
import io
import json
import time as _time
import uuid
from dataclasses import dataclass
from datetime import date, datetime, time, timedelta
from decimal import Decimal
from typing import Any, Iterable, Iterator, Mapping
from urllib.parse import unquote
from xml.etree import ElementTree
from zoneinfo import ZoneInfo

import requests
import structlog
from tenacity import (
    RetryCallState,
    Retrying,
    retry_if_exception,
    stop_after_attempt,
    wait_random_exponential,
)

from amo1c_sync.domain.registration import display_number
from amo1c_sync.domain.totals import parse_lead_id
from amo1c_sync.errors import FatalError, ItemError, RetriableError
from amo1c_sync.onec import query as q
from amo1c_sync.onec.names import OneCNames
from amo1c_sync.textutil import looks_like_markup, plain_text

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
    ref: str
    number: str
    date: datetime | None
    posted: bool
    deletion_mark: bool
    data_version: str
    client_ref: str | None
    doctor_ref: str | None
    day: date | None
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


class _Transient(Exception):
    """Internal: a failure worth another try. ``message`` is safe to show."""

    def __init__(self, message: str, *, sent: bool):
        super().__init__(message)
        self.sent = sent  # False: the request surely never reached 1C


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
        max_target_bytes: int = q.MAX_TARGET_BYTES,
        session: requests.Session | None = None,
        timezone: str = "Europe/Moscow",
    ):
        base = base_url.rstrip("/") + "/"
        if not base.endswith(ODATA_ROOT):
            base += ODATA_ROOT
        self.root = base
        self.names = names or OneCNames()
        self.tz = ZoneInfo(timezone)  # 1C datetimes are naive local times of the base
        self.timeout = (connect_timeout, read_timeout)
        self.max_retries = max_retries
        self.backoff_max = backoff_max
        self.backoff_base = backoff_base
        self.page_size = page_size
        self.max_target_bytes = max_target_bytes
        self._session = session or requests.Session()
        self._session.auth = _Utf8BasicAuth(username, password)
        self._session.headers.update({"Accept": "application/json", "User-Agent": "amo1c-sync"})
        self._username = username
        # the path part of the root, counted against the 2,000-byte request target limit
        self._prefix_bytes = len(requests.utils.urlparse(self.root).path.encode("ascii"))

    def __repr__(self) -> str:
        return f"OneC({self.root!r}, user={self._username!r})"

    def now(self) -> datetime:
        """The current naive local time of the 1C base (its time zone, not this machine's)."""
        return datetime.now(self.tz).replace(tzinfo=None, microsecond=0)

    def close(self) -> None:
        self._session.close()

    def __enter__(self) -> "OneC":
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    # --- low level ---------------------------------------------------------------------------
    def _describe(self, method: str, target: str) -> str:
        text = unquote(target)
        if len(text) > 300:
            text = text[:300] + "…"
        return f"{method} {requests.utils.urlparse(self.root).path}{text}"

    def _request(self, method: str, target: str, *, body: Any = None, idempotent: bool = True,
                 raw: bool = False) -> _Response:
        what = self._describe(method, target)
        url = self.root + target
        data = None
        headers = {}
        if body is not None:
            data = json.dumps(body, ensure_ascii=False, default=_json_default).encode("utf-8")
            headers["Content-Type"] = "application/json; charset=utf-8"

        def should_retry(exc: BaseException) -> bool:
            return isinstance(exc, _Transient) and (idempotent or not exc.sent)

        def before_sleep(state: RetryCallState) -> None:
            exc = state.outcome.exception() if state.outcome else None
            log.warning("onec.retry", request=what, attempt=state.attempt_number, error=str(exc),
                        sleep=round(state.next_action.sleep, 3) if state.next_action else None)

        retrying = Retrying(
            stop=stop_after_attempt(self.max_retries + 1),
            wait=wait_random_exponential(multiplier=self.backoff_base, max=self.backoff_max),
            retry=retry_if_exception(should_retry),
            before_sleep=before_sleep,
            reraise=True,
        )
        try:
            return retrying(self._once, method, url, what, data, headers, raw)
        except _Transient as exc:
            raise RetriableError(str(exc)) from None

    def _once(self, method: str, url: str, what: str, data: bytes | None, headers: dict,
              raw: bool = False) -> _Response:
        started = _time.monotonic()
        try:
            resp = self._session.request(method, url, data=data, headers=headers, timeout=self.timeout,
                                         allow_redirects=False)
        except requests.exceptions.ConnectTimeout:
            raise _Transient(f"1C did not accept a connection in {self.timeout[0]} s: {what}", sent=False)
        except requests.exceptions.ReadTimeout:
            raise _Transient(f"1C did not answer in {self.timeout[1]} s: {what}", sent=True)
        except requests.exceptions.ConnectionError as exc:
            refused = _is_refused(exc)
            why = "refused the connection" if refused else "dropped the connection"
            raise _Transient(f"1C {why}: {what}", sent=not refused)
        except requests.exceptions.RequestException as exc:
            raise _Transient(f"1C request failed ({type(exc).__name__}): {what}", sent=True)
        elapsed = round(_time.monotonic() - started, 3)
        log.debug("onec.request", request=what, status=resp.status_code, elapsed=elapsed)
        status = resp.status_code
        if 200 <= status < 300:
            if raw:
                return _Response(status, resp.content)
            if not resp.content:
                return _Response(status, None)
            try:
                return _Response(status, json.loads(resp.content.decode("utf-8"), parse_float=Decimal))
            except ValueError:
                excerpt = plain_text(resp.content, 120)
                raise _Transient(f"1C answered {status} with a body that is not JSON: {what}"
                                 + (f" («{excerpt}»; {BASE_URL_HINT})" if excerpt else ""), sent=True)
        code, message = _odata_error(resp)
        detail = f"1C answered {status} to {what}: {message}"
        if status in (401, 403):
            raise FatalError(detail + " (check the 1C user name and password and its rights)",
                             system="1c", action="fix [onec] username/password or the user's rights in 1C")
        if status >= 500 or status in (408, 429):
            if code is not None and status == 500 and what.split("?")[0].endswith(("/Post", "/Unpost")):
                # 1C refused to (un)post this document: its own error, retrying will not help
                raise ItemError(detail, item=what, code=f"1c:{code}")
            raise _Transient(detail, sent=True)
        raise ItemError(detail, item=what, code=f"1c:{code}" if code is not None else f"http:{status}")

    def _get(self, query: q.Query) -> list[dict]:
        resp = self._request("GET", query.target())
        body = resp.body or {}
        return [plain_row(r) for r in body.get("value", [])] if isinstance(body, dict) else []

    def _get_all(self, query: q.Query) -> Iterator[dict]:
        """Client-driven paging: $top/$skip with $orderby ending in Ref_Key."""
        skip = 0
        while True:
            rows = self._get(query.page(self.page_size, skip))
            yield from rows
            if len(rows) < self.page_size:
                return
            skip += len(rows)

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

    def create_client(self, description: str) -> CatalogItem:
        row = self._create(self.names.clients, {"Description": description})
        return _catalog_item(row)

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
        lo = date_from if isinstance(date_from, datetime) else datetime(date_from.year, date_from.month, date_from.day)
        hi = date_to if isinstance(date_to, datetime) else datetime(date_to.year, date_to.month, date_to.day) + timedelta(days=1)
        query = q.Query(n.services, filter=q.and_(q.ge("Date", lo), q.lt("Date", hi)),
                        select=("Ref_Key", "Number", "Date", "DataVersion", "Posted", "DeletionMark",
                                *n.services_base_fields, n.services_amount))
        return [self._service(r) for r in self._get_all(query)]

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

    def resolve_bases(self, refs: Iterable[str]) -> dict[str, str | None]:
        """{«Заявка» ref: its «Номер AmoCRM» (stripped) or None when empty or not found}, looked up
        in batches whose request target stays under ``max_target_bytes``."""
        n = self.names
        wanted = [str(uuid.UUID(str(r))) for r in refs if not q.is_empty_ref(r)]
        out: dict[str, str | None] = {r: None for r in wanted}

        def make(flt: str) -> q.Query:
            return q.Query(n.zayavka, filter=flt, select=("Ref_Key", n.zayavka_lead))

        for r in self._batched(wanted, make):
            lead = str(r.get(n.zayavka_lead) or "").strip()
            out[r["Ref_Key"]] = lead or None
        return out

    # --- health ------------------------------------------------------------------------------
    def ping(self) -> float:
        """One cheap authenticated read; returns seconds taken. Raises like any other call."""
        started = _time.monotonic()
        self._get(q.Query(self.names.doctors, select=("Ref_Key",), top=1))
        return _time.monotonic() - started

    def entity_sets(self) -> list[str]:
        """The entity sets this publication serves, from the OData service document (the service
        root: ``{"value": [{"name": "Catalog_…", "url": "Catalog_…"}, …]}``)."""
        resp = self._request("GET", "?$format=json")
        body = resp.body
        value = body.get("value") if isinstance(body, dict) else None
        if not isinstance(value, list):
            raise RetriableError(f"1C's service document has no list of entity sets: "
                                 f"{self._describe('GET', '?$format=json')}")
        out = []
        for entry in value:
            if isinstance(entry, dict) and (entry.get("name") or entry.get("url")):
                out.append(str(entry.get("name") or entry.get("url")))
        return out

    def attributes(self, entity_set: str) -> list[str] | None:
        """The properties of ``entity_set``: the keys of one of its objects, or, when the set is
        empty, the ``Property`` list of its type in ``$metadata`` (big on a real base: read only
        then). None when neither tells."""
        rows = self._get(q.Query(entity_set, top=1))
        if rows and isinstance(rows[0], dict):
            return [k for k in rows[0] if "@" not in k and not k.startswith("odata.")]
        return _metadata_properties(self._request("GET", "$metadata", raw=True).body, entity_set)

    def check_names(self) -> list[str]:
        """Problems with the configured names (unknown entity sets/attributes, missing default
        items), as messages for `amo1c-sync check`; empty when all is well. An unknown entity set
        is reported with the entity sets of its kind that exist, an unknown attribute with the
        attributes its entity set has (SPEC §3: fail with the names that do exist)."""
        n = self.names
        probes = [
            ("doctors", n.doctors, self._CATALOG_FIELDS), ("clients", n.clients, self._CATALOG_FIELDS),
            ("nomenclature", n.nomenclature, self._CATALOG_FIELDS),
            ("zayavka", n.zayavka, self._zayavka_fields()),
            ("services", n.services, ("Ref_Key", *n.services_base_fields, n.services_amount)),
            ("schedules", n.schedules, ("Ref_Key", n.schedules_month)),
            ("schedules_lines", n.schedules_lines_set,
             ("Ref_Key", n.schedule_doctor, n.schedule_date, n.schedule_start, n.schedule_end)),
        ]
        problems = []
        known: Any = _UNSET   # the entity sets that exist; read once, on the first failure
        root_error: Exception | None = None
        for key, entity_set, select in probes:
            try:
                self._get(q.Query(entity_set, select=select, top=1))
                continue
            except ItemError as exc:
                failure = exc
            if known is _UNSET:
                try:
                    known = self.entity_sets()
                except (ItemError, RetriableError) as exc:
                    log.warning("onec.entity_sets_unavailable", error=str(exc))
                    known, root_error = None, exc
            problems.append(self._explain(key, entity_set, select, failure, known))
        if len(problems) == len(probes) and isinstance(root_error, ItemError):
            # not even the service root answers: a wrong base_url, not seven wrong names
            return [("the OData service root does not answer, so no configured name can be checked: "
                     f"{root_error}")]
        if not problems:
            if self.default_client() is None:
                problems.append(f"no client «{n.default_client}» in {n.clients}")
            if self.default_nomenclature() is None:
                problems.append(f"no item «{n.default_nomenclature}» in {n.nomenclature}")
        return problems

    def _explain(self, key: str, entity_set: str, select: Iterable[str], failure: ItemError,
                 known: list[str] | None) -> str:
        """The message for a failed probe: 1C's own words plus the names that do exist."""
        if known is None:
            return str(failure)
        if entity_set not in known:
            kind = entity_set.split("_", 1)[0] + "_"
            if key == "schedules_lines" and self.names.schedules in known:
                kind = self.names.schedules + "_"   # a tabular section: list that document's sections
            same = [s for s in known if s.startswith(kind)] or known
            return (f"[onec_names] {key}: 1C has no entity set «{entity_set}» ({failure}). "
                    f"{kind.rstrip('_')} entity sets that exist: {_listing(same, entity_set)}")
        try:
            attrs = self.attributes(entity_set)
        except (ItemError, RetriableError) as exc:
            log.warning("onec.attributes_unavailable", entity_set=entity_set, error=str(exc))
            attrs = None
        if attrs is None:
            return str(failure)
        missing = [a for a in dict.fromkeys(select) if a not in attrs]
        if not missing:
            return str(failure)
        names = ", ".join(f"«{a}»" for a in missing)
        keys = [k for k in dict.fromkeys(self._config_key(key, a) for a in missing) if k]
        where = f"[onec_names] {', '.join(keys)}: " if keys else "1C: "
        return (f"{where}{entity_set} has no attribute {names} ({failure}). "
                f"Attributes of {entity_set} that exist: {_listing(attrs, missing[0])}")

    def _config_key(self, probe: str, attribute: str) -> str | None:
        """The ``[onec_names]`` key that names ``attribute`` in the probe of ``probe``."""
        prefix = {"zayavka": "zayavka_", "services": "services_", "schedules": "schedules_",
                  "schedules_lines": "schedule_"}.get(probe)
        if prefix is None:
            return None
        for name in OneCNames.field_names():
            if not name.startswith(prefix):
                continue
            if getattr(self.names, name) == attribute or (
                    name == "services_base" and attribute in self.names.services_base_fields):
                return name
        return None


# ---------------------------------------------------------------------------------------------
def _odata_error(resp: requests.Response) -> tuple[str | None, str]:
    """(1C's error code, message) from an ``odata.error`` body; for any other body (a web server's
    HTML page, plain text) its readable text, short and on one line, with a hint when it is a page."""
    try:
        body = json.loads(resp.content.decode("utf-8"))
        err = body.get("odata.error") or body.get("error")
        msg = err.get("message")
        text = msg.get("value") if isinstance(msg, dict) else msg
        return (str(err.get("code")) if err.get("code") is not None else None), str(text)
    except Exception:
        return None, _not_odata(resp)


BASE_URL_HINT = ("check that [onec] base_url points at the 1C publication and that the standard OData "
                 "interface is published there")


def _not_odata(resp: requests.Response) -> str:
    """A body that is not 1C's JSON, as a short line: the page's text without tags."""
    raw = resp.content.decode("utf-8", "replace")
    text = plain_text(raw, 200) or resp.reason or f"HTTP {resp.status_code}"
    if not looks_like_markup(raw):
        return text
    if 400 <= resp.status_code < 500 and resp.status_code not in (401, 403, 408, 429):
        # a page where the OData service should be: a login page, a wrong path
        return f"a web page, not 1C's answer: «{text}»; {BASE_URL_HINT}"
    return f"a web page, not 1C's answer: «{text}»"


def _metadata_properties(xml: bytes, entity_set: str) -> list[str] | None:
    """The ``Property`` names of the EntityType of ``entity_set`` in a CSDL document (1C names the
    type after the set; the EntitySet's EntityType attribute is followed when it differs)."""
    def local(tag: str) -> str:
        return tag.rsplit("}", 1)[-1]

    def scan(type_name: str) -> tuple[list[str] | None, str | None]:
        props: list[str] | None = None
        set_type = None
        try:
            for _event, el in ElementTree.iterparse(io.BytesIO(xml), events=("end",)):
                tag = local(el.tag)
                if tag == "EntityType":
                    if el.get("Name") == type_name:
                        props = [p.get("Name") for p in el if local(p.tag) == "Property" and p.get("Name")]
                    el.clear()
                elif tag == "EntitySet" and el.get("Name") == entity_set:
                    set_type = (el.get("EntityType") or "").rsplit(".", 1)[-1] or None
                elif tag == "ComplexType":
                    el.clear()
        except ElementTree.ParseError:
            return None, None
        return props, set_type

    props, set_type = scan(entity_set)
    if set_type and set_type != entity_set:
        props, _ = scan(set_type)
    return props


def _listing(names: list[str], wanted: str, limit: int = 40) -> str:
    """``names`` for a message: the ones closest to ``wanted`` first, at most ``limit``."""
    names = list(dict.fromkeys(names))
    if len(names) <= limit:
        return ", ".join(sorted(names))
    close = difflib.get_close_matches(wanted, names, n=5, cutoff=0.5)
    rest = sorted(x for x in names if x not in close)[:limit - len(close)]
    return ", ".join(close + rest) + f" … ({len(names) - len(close) - len(rest)} more)"


def _is_refused(exc: BaseException) -> bool:
    seen = set()
    e: BaseException | None = exc
    while e is not None and id(e) not in seen:
        seen.add(id(e))
        if isinstance(e, ConnectionRefusedError) or type(e).__name__ == "NewConnectionError":
            return True
        for arg in getattr(e, "args", ()):
            if isinstance(arg, BaseException) and _is_refused(arg):
                return True
        e = getattr(e, "reason", None) or e.__cause__ or e.__context__
    return False


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


def _json_default(value: Any) -> Any:
    if isinstance(value, Decimal):
        return float(value) if value != value.to_integral_value() else int(value)
    if isinstance(value, (datetime, date, time)):
        return q.format_datetime(value)
    if isinstance(value, uuid.UUID):
        return str(value)
    raise TypeError(f"cannot send {type(value).__name__} to 1C")
