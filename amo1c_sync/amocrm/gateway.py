"""The one place that talks to amoCRM API v4 (requests; explicit timeouts on every call)."""

from __future__ import annotations

import threading
import time
from collections import Counter
from dataclasses import dataclass, field
from typing import Any, Callable, Iterable, Iterator, Sequence

import requests
import structlog

from amo1c_sync.amocrm import responses
from amo1c_sync.amocrm.auth import REAUTH_ACTION, TokenManager
from amo1c_sync.amocrm.fields import FieldMap
from amo1c_sync.amocrm.ratelimit import RateLimiter
from amo1c_sync.amocrm.responses import Action, classify
from amo1c_sync.domain.retry import RequestRetry
from amo1c_sync.errors import ItemError, RetriableError
from amo1c_sync.textutil import plain_text
from amo1c_sync.transport import BearerAuth, Cooldown, Exchange, ResponseHook, Transport

log = structlog.get_logger(__name__)

UPDATE_CHUNK = 50     # PATCH batches <= 50 (amoCRM accepts up to 250): docs/api-facts.md
NOTES_CHUNK = 50
IDS_CHUNK = 50        # ids per filter[id][] query (keeps the URL short)
PAGE_LIMIT = 250      # amoCRM's maximum page size
FIELD_LIST_TTL = 600.0  # seconds the jobs reuse the lead field list (lead_field_map)

@dataclass
class BatchResult:
    """Outcome of a batch write: which leads amoCRM accepted and which it refused, and why.

    A lead is in ``ok`` only when amoCRM's answer lists it (``_embedded.leads[].id`` for a PATCH,
    ``_embedded.notes[].entity_id`` for notes). ``failed`` holds an ItemError when amoCRM refused
    the lead, or a RetriableError when it answered without confirming it (try again later).
    """

    ok: list[int] = field(default_factory=list)
    failed: dict[int, ItemError | RetriableError] = field(default_factory=dict)
    updated_at: dict[int, int] = field(default_factory=dict)

    @property
    def all_ok(self) -> bool:
        return not self.failed


class AmoCRM:
    """amoCRM API v4 client used by the jobs."""

    _contact_fields: tuple[float, list[dict]] | None = None  # (monotonic time read, the list)

    def __init__(self, base_url: str, *, token_manager: TokenManager,
                 rate_limiter: RateLimiter | None = None, connect_timeout: float = 5,
                 read_timeout: float = 30, max_retries: int = 5, backoff_max: float = 30,
                 backoff_base: float = 0.5, block_cooldown: float = 900.0,
                 session: requests.Session | None = None, cooldown: Cooldown | None = None,
                 on_response: ResponseHook | None = None, retry: RequestRetry | None = None):
        """``retry`` (the ``[retry]`` request-level numbers) wins over max_retries/backoff_*."""
        self.base_url = base_url.rstrip("/")
        self.tokens = token_manager
        self.rate_limiter = rate_limiter
        self.timeouts = (connect_timeout, read_timeout)
        self.block_cooldown = block_cooldown
        self._http = session or requests.Session()
        self._http.headers.update({"User-Agent": "amo1c-sync", "Accept": "application/json"})
        self._http.auth = BearerAuth(lambda: self.tokens.access_token())
        self.transport = Transport(
            system="amocrm", label="amoCRM", base_url=self.base_url, table=responses.API,
            session=self._http, timeouts=self.timeouts, rate_limiter=rate_limiter,
            policy=retry or RequestRetry(retries=max_retries, backoff_base=backoff_base,
                                         backoff_max=backoff_max),
            refresh=self._refresh, refresh_hint=REAUTH_ACTION, cooldown_seconds=block_cooldown,
            cooldown=cooldown or Cooldown(), on_response=on_response)
        self._lead_fields: tuple[float, list[dict]] | None = None
        self._lead_fields_lock = threading.Lock()

    # ------------------------------------------------------------------ transport
    @property
    def cooldown(self) -> Cooldown:
        """This gateway's 403 cooldown (give it to another gateway to share a block)."""
        return self.transport.cooldown

    @property
    def blocked_until(self) -> float | None:
        """Monotonic deadline of a 403 block seen by this gateway, or None."""
        left = self.transport.cooldown.remaining()
        return time.monotonic() + left if left > 0 else None

    def _refresh(self, exchange: Exchange) -> None:
        self.tokens.on_unauthorized(BearerAuth.token_of(exchange.response))

    def _request(self, method: str, path: str, *, params: Any = None,
                 json: Any = None) -> requests.Response:
        """Send through the transport: rate limiting, token refresh on 401, retries for passing
        faults (a POST only when amoCRM surely did not act on it), the 403 cooldown.

        Returns the response for OK / IGNORE / FAIL (the caller interprets 4xx bodies);
        raises RetriableError after the retries, FatalError on COOLDOWN.
        """
        exchange = self.transport.request(method, path, params=params, json=json)
        assert exchange.response is not None
        return exchange.response

    def _send_once(self, method: str, path: str, *, params: Any, json: Any) -> requests.Response:
        """One try (a 401 refresh aside): for a write that must not be sent twice."""
        exchange = self.transport.request(method, path, params=params, json=json, retry=False)
        assert exchange.response is not None
        return exchange.response

    def _get_json(self, path: str, params: Any = None) -> dict | None:
        resp = self._request("GET", path, params=params)
        if resp.status_code == 204:
            return None
        if classify(resp.status_code)[0] is Action.FAIL_ITEM:
            raise ItemError(f"amoCRM GET {path}: {resp.status_code} {_problem_detail(resp)}",
                            item=path, code=str(resp.status_code), origin="http")
        return _json_object(resp, "GET", path)

    def _pages(self, path: str, params: dict, key: str) -> Iterator[list[dict]]:
        page = 1
        while True:
            data = self._get_json(path, {**params, "page": page})
            if data is None:
                return
            items = _embedded(data, key, "GET", path)
            if not items:
                return
            yield items
            if not (data.get("_links") or {}).get("next"):
                return
            page += 1

    # ------------------------------------------------------------------ account & fields
    def account(self, *, with_: Sequence[str] = ()) -> dict:
        return self._get_json("/api/v4/account", {"with": ",".join(with_)} if with_ else None) or {}

    def account_timezone(self) -> str | None:
        """The account's IANA time zone, which amoCRM gives only with ``with=datetime_settings``."""
        return account_timezone(self.account(with_=("datetime_settings",)))

    def list_lead_fields(self) -> list[dict]:
        """All lead custom fields, with ``enums`` ``[{id, value, sort}]`` for selects."""
        out: list[dict] = []
        for items in self._pages("/api/v4/leads/custom_fields", {"limit": PAGE_LIMIT}, "custom_fields"):
            out.extend(items)
        return out

    def field_map(self, required_names: Iterable[str] = (), *, tz: str | None = None) -> FieldMap:
        """Resolve configured field names (ConfigError lists the existing ones if one is unknown)."""
        if tz is None:
            tz = self.account_timezone() or "Europe/Moscow"
        return FieldMap(self.list_lead_fields(), tz).require(list(required_names))

    def lead_field_map(self, required_names: Iterable[str], *, tz: str,
                       max_age: float = FIELD_LIST_TTL) -> FieldMap:
        """``field_map`` from a lead field list kept up to ``max_age`` seconds, for the jobs: an
        idle cycle then costs no request for it. A change of the options drops the list."""
        now = time.monotonic()
        with self._lead_fields_lock:
            hit = self._lead_fields
        if hit is None or now - hit[0] >= max_age:
            hit = (now, self.list_lead_fields())
            with self._lead_fields_lock:
                self._lead_fields = hit
        return FieldMap(hit[1], tz).require(list(required_names))

    def update_field_enums(self, field_id: int, enums: Sequence[dict | str]) -> dict:
        """Replace a select field's options. Give ``{"id", "value", "sort"}`` to keep an option's id;
        a plain string (or a dict without ``id``) adds one; options not listed are removed."""
        payload = []
        for i, e in enumerate(enums):
            item = {"value": e} if isinstance(e, str) else dict(e)
            item.setdefault("sort", (i + 1) * 10)
            payload.append(item)
        with self._lead_fields_lock:
            self._lead_fields = None
        resp = self._request("PATCH", "/api/v4/leads/custom_fields",
                             json=[{"id": int(field_id), "enums": payload}])
        if classify(resp.status_code)[0] is not Action.OK:
            raise ItemError(f"amoCRM refused the options of field {field_id}: "
                            f"{_problem_detail(resp)}", item=f"field:{field_id}",
                            code=str(resp.status_code), origin="http")
        fields = _embedded(_json_object(resp, "PATCH", "/api/v4/leads/custom_fields"), "custom_fields",
                           "PATCH", "/api/v4/leads/custom_fields")
        return fields[0] if fields else {}

    def create_lead_fields(self, fields: Sequence[dict]) -> list[dict]:
        """Create lead custom fields (``[{name, type, enums?}]``) in one request, sent once: a POST
        that timed out may have created them, and a retry would make a second field of the same
        name. A caller that failed lists the fields again before trying once more."""
        return self._create_fields_once("lead", "custom_fields", fields)

    # ------------------------------------------------------------------ leads
    def iter_leads_updated_since(self, ts: int, overlap: int = 60, *, limit: int = PAGE_LIMIT,
                                 with_: Sequence[str] = ()) -> Iterator[dict]:
        """Leads with ``updated_at >= ts - overlap``, ascending by updated_at, each id once.

        Keyset paging: after each page the lower bound moves to the last ``updated_at`` seen and
        the page number restarts at 1, so leads edited while we page cannot shift past us; a page
        that does not advance the bound (many leads in one second) goes on with the next page.
        204 or a page without ``_links.next`` ends the listing.
        """
        lower = max(0, int(ts) - int(overlap))
        page = 1
        seen: set[int] = set()
        base = {"order[updated_at]": "asc", "limit": min(int(limit), PAGE_LIMIT)}
        if with_:
            base["with"] = ",".join(with_)
        while True:
            data = self._get_json("/api/v4/leads",
                                  {**base, "filter[updated_at][from]": lower, "page": page})
            if data is None:
                return
            leads = _embedded(data, "leads", "GET", "/api/v4/leads")
            if not leads:
                return
            for lead in leads:
                if lead["id"] not in seen:
                    seen.add(lead["id"])
                    yield lead
            if not (data.get("_links") or {}).get("next"):
                return
            last = int(leads[-1].get("updated_at") or lower)
            if last > lower:
                lower, page = last, 1
            else:
                page += 1

    def get_leads(self, ids: Iterable[int], *, with_: Sequence[str] = ()) -> list[dict]:
        """Leads by id (unknown or deleted ids are simply absent)."""
        ids = list(dict.fromkeys(int(i) for i in ids))
        out: list[dict] = []
        for chunk in _chunks(ids, IDS_CHUNK):
            params: dict[str, Any] = {"filter[id][]": chunk, "limit": PAGE_LIMIT}
            if with_:
                params["with"] = ",".join(with_)
            for items in self._pages("/api/v4/leads", params, "leads"):
                out.extend(items)
        return out

    def get_lead(self, lead_id: int) -> dict | None:
        found = self.get_leads([lead_id])
        return found[0] if found else None

    def update_leads(self, patches: Sequence[dict]) -> BatchResult:
        """PATCH leads in chunks of <= 50. A rejected chunk is retried without the leads amoCRM
        named in ``validation-errors`` (or bisected when it named none), so one bad lead never
        fails the others. Each patch is ``{"id": …, "price"?: int, "custom_fields_values"?: […]}``."""
        result = BatchResult()
        for chunk in _chunks(list(patches), UPDATE_CHUNK):
            self._write_batch("/api/v4/leads", chunk, "leads", lambda item: int(item["id"]), result)
        return result

    def pipelines(self) -> dict:
        """``GET /api/v4/leads/pipelines``: the pipelines with their stages in ``_embedded.statuses``."""
        return self._get_json("/api/v4/leads/pipelines") or {}

    def lead_note_texts(self, lead_id: int) -> list[str]:
        """The texts of a lead's common notes (to tell whether a note was already written)."""
        out: list[str] = []
        for items in self._pages(f"/api/v4/leads/{int(lead_id)}/notes", {"limit": PAGE_LIMIT}, "notes"):
            out.extend(str((n.get("params") or {}).get("text") or "") for n in items)
        return out

    def add_notes(self, notes: Iterable[tuple[int, str]]) -> BatchResult:
        """Common notes on leads, batched; result keyed by lead id."""
        items = [{"entity_id": int(lead_id), "note_type": "common", "params": {"text": text}}
                 for lead_id, text in notes]
        result = BatchResult()
        for chunk in _chunks(items, NOTES_CHUNK):
            self._write_batch("/api/v4/leads/notes", chunk, "notes",
                              lambda item: int(item["entity_id"]), result, method="POST")
        return result

    # ------------------------------------------------------------------ contacts
    def get_contacts(self, ids: Iterable[int]) -> list[dict]:
        """Contacts by id, batched (``filter[id][]``, up to 250 a page); unknown ids are absent."""
        ids = list(dict.fromkeys(int(i) for i in ids))
        out: list[dict] = []
        for chunk in _chunks(ids, IDS_CHUNK):
            for items in self._pages("/api/v4/contacts", {"filter[id][]": chunk, "limit": PAGE_LIMIT},
                                     "contacts"):
                out.extend(items)
        return out

    def update_contacts(self, patches: Sequence[dict]) -> BatchResult:
        """PATCH contacts in chunks of <= 50, as ``update_leads`` does leads (result keyed by
        contact id). The jobs only ever send the «Клиент 1С» field."""
        result = BatchResult()
        for chunk in _chunks(list(patches), UPDATE_CHUNK):
            self._write_batch("/api/v4/contacts", chunk, "contacts", lambda item: int(item["id"]), result)
        return result

    def list_contact_fields(self, *, max_age: float = FIELD_LIST_TTL) -> list[dict]:
        """All contact custom fields (``PHONE`` has ``code`` PHONE), kept up to ``max_age`` seconds
        as the lead field list is: a cycle with flagged leads then costs no request for them."""
        now = time.monotonic()
        hit = self._contact_fields
        if hit is None or now - hit[0] >= max_age:
            out: list[dict] = []
            for items in self._pages("/api/v4/contacts/custom_fields", {"limit": PAGE_LIMIT}, "custom_fields"):
                out.extend(items)
            hit = (now, out)
            self._contact_fields = hit
        return hit[1]

    def create_contact_fields(self, fields: Sequence[dict]) -> list[dict]:
        """Create contact custom fields (``[{name, type}]``) in one request, sent once (a retried
        POST could make a second field of the same name), as ``create_lead_fields``."""
        self._contact_fields = None
        return self._create_fields_once("contact", "contacts/custom_fields", fields)

    def _create_fields_once(self, entity: str, item: str, fields: Sequence[dict]) -> list[dict]:
        """POST new custom fields of ``entity`` (``lead``, ``contact``) once; a refusal is an
        ItemError naming the fields, under ``item``."""
        path = f"/api/v4/{entity}s/custom_fields"
        resp = self._send_once("POST", path, params=None, json=list(fields))
        if classify(resp.status_code)[0] is not Action.OK:
            raise ItemError(f"amoCRM refused to create the {entity} fields "
                            f"{', '.join(repr(f.get('name')) for f in fields)}: {resp.status_code} "
                            f"{_problem_detail(resp)}", item=item, code=str(resp.status_code))
        return _embedded(_json_object(resp, "POST", path), "custom_fields", "POST", path)

    @staticmethod
    def _confirm(path: str, method: str, status: int, items: list[dict], key: str,
                 id_of: Callable[[dict], int], echoed: list, result: BatchResult) -> None:
        """Mark ok the leads amoCRM's answer lists (as many times as we sent them); the others
        get a RetriableError in ``failed``: amoCRM did not confirm the write."""
        wanted = Counter(id_of(item) for item in items)
        seen: Counter[int] = Counter()
        id_key = "entity_id" if key == "notes" else "id"
        for entry in echoed:
            if not isinstance(entry, dict):
                continue
            lead_id = _as_int(entry.get(id_key))
            if lead_id is None:   # fall back to the request_id amoCRM echoes (our index)
                i = _as_int(entry.get("request_id"))
                lead_id = id_of(items[i]) if i is not None and 0 <= i < len(items) else None
            if lead_id is None or lead_id not in wanted:
                continue
            seen[lead_id] += 1
            if key == "leads" and _as_int(entry.get("updated_at")) is not None:
                result.updated_at[lead_id] = int(entry["updated_at"])
        what = "the leads it updated" if key == "leads" else "the leads it added notes to"
        for lead_id, n in wanted.items():
            if seen[lead_id] >= n:
                if lead_id not in result.ok:
                    result.ok.append(lead_id)
                continue
            result.failed[lead_id] = RetriableError(
                f"amoCRM answered {status} to {method} {path} without listing lead {lead_id} among "
                f"{what}; not taken as written, will retry")
            log.warning("amocrm.write_unconfirmed", path=path, method=method, lead_id=lead_id,
                        status=status)

    def _write_batch(self, path: str, items: list[dict], key: str, id_of: Callable[[dict], int],
                     result: BatchResult, *, method: str = "PATCH") -> None:
        if not items:
            return
        resp = self._request(method, path, json=items)
        action = classify(resp.status_code)[0]
        if action in (Action.OK, Action.EMPTY):
            # amoCRM answers a write with the written entities; an empty or foreign body (a proxy's
            # page) says nothing about what was written: RetriableError, nothing is taken as done
            echoed = _embedded(_json_object(resp, method, path), key, method, path)
            self._confirm(path, method, resp.status_code, items, key, id_of, echoed, result)
            return
        per_index = _validation_errors(resp, len(items))
        if per_index:
            for i, errors in per_index.items():
                lead_id = id_of(items[i])
                result.failed[lead_id] = _item_error(lead_id, items[i], errors)
                log.warning("amocrm.item_rejected", path=path, lead_id=lead_id,
                            codes=[e.get("code") for e in errors])
            rest = [it for i, it in enumerate(items) if i not in per_index]
            self._write_batch(path, rest, key, id_of, result, method=method)
            return
        if len(items) == 1:
            lead_id = id_of(items[0])
            result.failed[lead_id] = ItemError(
                f"amoCRM refused lead {lead_id}: {resp.status_code} {_problem_detail(resp)}",
                item=str(lead_id), code=str(resp.status_code), origin="http")
            return
        mid = len(items) // 2   # rejected as a whole without saying which: bisect
        self._write_batch(path, items[:mid], key, id_of, result, method=method)
        self._write_batch(path, items[mid:], key, id_of, result, method=method)


def account_timezone(account: dict) -> str | None:
    """``_embedded.datetime_settings.timezone`` of a ``GET /api/v4/account`` answer, or None."""
    settings = ((account.get("_embedded") or {}).get("datetime_settings") or {})
    zone = settings.get("timezone") if isinstance(settings, dict) else None
    return zone if isinstance(zone, str) and zone else None


def _chunks(seq: list, n: int) -> Iterator[list]:
    for i in range(0, len(seq), n):
        yield seq[i:i + n]


def _as_int(value: Any) -> int | None:
    if isinstance(value, bool):
        return None
    try:
        return int(value)
    except (TypeError, ValueError):
        return None


def _not_ours(resp: requests.Response, method: str, path: str, what: str) -> RetriableError:
    ctype = (resp.headers.get("Content-Type") or "no content type").split(";")[0].strip()
    excerpt = plain_text(resp.content, 120)
    shown = f" ({ctype}: «{excerpt}»)" if excerpt else f" ({ctype})"
    return RetriableError(f"amoCRM answered {resp.status_code} to {method} {path} with {what}{shown}; "
                          f"a proxy in between or a wrong [amocrm] base_url? Nothing was taken from it; "
                          f"will retry")


def _json_object(resp: requests.Response, method: str, path: str) -> dict:
    """The JSON object amoCRM answers with; RetriableError naming the request for anything else
    (an empty body, a proxy's HTML page, a truncated body, JSON that is not an object)."""
    if not resp.content.strip():
        raise _not_ours(resp, method, path, "an empty body")
    try:
        body = resp.json()
    except ValueError:
        raise _not_ours(resp, method, path, "a body that is not JSON") from None
    if not isinstance(body, dict):
        raise _not_ours(resp, method, path, f"JSON that is not an object (a {type(body).__name__})")
    return body


def _embedded(body: dict, key: str, method: str, path: str) -> list:
    """``body["_embedded"][key]``, a list; RetriableError when amoCRM's answer lacks it."""
    emb = body.get("_embedded")
    items = emb.get(key) if isinstance(emb, dict) else None
    if not isinstance(items, list):
        raise RetriableError(f"amoCRM answered {method} {path} with JSON that has no _embedded.{key} "
                             f"list; nothing was taken from it; will retry")
    return items


def _problem_detail(resp: requests.Response) -> str:
    try:
        body = resp.json()
    except ValueError:
        return (resp.reason or "").strip()
    if isinstance(body, dict):
        return str(body.get("detail") or body.get("title") or "")[:300]
    return ""


def _validation_errors(resp: requests.Response, n: int) -> dict[int, list[dict]]:
    """``validation-errors`` as {index in the batch: [errors]}; {} when absent or unusable."""
    try:
        body = resp.json()
    except ValueError:
        return {}
    out: dict[int, list[dict]] = {}
    for entry in (body.get("validation-errors") or []) if isinstance(body, dict) else []:
        try:
            i = int(entry.get("request_id"))
        except (TypeError, ValueError):
            return {}
        if not 0 <= i < n:
            return {}
        out.setdefault(i, []).extend(entry.get("errors") or [])
    return out


def _item_error(lead_id: int, item: dict, errors: list[dict]) -> ItemError:
    parts = []
    for e in errors:
        path = str(e.get("path") or "")
        where = path
        segs = path.split(".")
        if len(segs) >= 2 and segs[0] == "custom_fields_values" and segs[1].isdigit():
            try:
                where = f"field {item['custom_fields_values'][int(segs[1])]['field_id']} ({path})"
            except (KeyError, IndexError, TypeError):
                pass
        parts.append(f"{where}: {e.get('code')} {e.get('detail') or ''}".strip())
    code = errors[0].get("code") if errors else None
    return ItemError(f"amoCRM refused lead {lead_id}: " + "; ".join(parts), item=str(lead_id),
                     code=code, origin="amocrm")
