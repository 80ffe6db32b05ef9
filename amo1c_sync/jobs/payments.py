"""F3 payments: posted «Оказание услуг» -> the lead's budget (price) and «Сумма1С».

One cycle (``run``):

1. Read the «Оказание услуг» of a window of document dates: the hot window (``[sync] hot_window``)
   every cycle; the whole ``lookback`` every ``full_scan_interval`` (the cursor
   ``payments.last_full_scan``), in slices of a week, one per cycle after the hot window (the
   cursor ``payments.full_scan_from``), so a posting never waits behind a whole scan; the first
   full scan and a ``ctx.since`` backfill are read at once (progress bar on a TTY). A window the
   store knows is scanned for Ref_Key and DataVersion only, and full rows are read for the changed
   documents alone. A scan longer than a page goes on in pages of ``scan_page_size`` (5,000:
   onec/gateway.py), the «Заявки» scan of a long read beside the documents' (two requests at once).
2. A stored document dated in the window that the read no longer returns is looked up by ref:
   found, its date moved (it is read as any other); not found, it is *gone* (deleted outright):
   its row is deleted and its lead loses its sum. Each base «Заявка» -> lead mapping is kept in
   the store (``onec_bases``) with the «Заявка»'s own DataVersion: one scan of the «Заявки» dated
   from the earliest known base of the window's documents (from the window's start too on a full or
   backfill read) finds the changed ones («Номер AmoCRM» filled in, corrected, relinked); only
   bases the scan did not return are looked up by ref (gone: no lead). Every stored document of
   a changed base is re-read by ref wherever it is dated (``_stray_bases``): once the base's new
   DataVersion is recorded, nothing else would move its money off the old lead.
   A document is *changed* when it is new, its DataVersion or its base differs from the stored
   ones, or its base changed; a ``--since`` backfill re-evaluates every document it reads. A
   document without a base «Заявка», or whose «Заявка» has no (valid) «Номер AmoCRM», is
   *skipped* with the reason (journal once per change, counted, listed by ``skipped_documents``).
3. The changed documents' facts (lead, amount, posted, deletion mark, base), the bases read and
   the gone documents' deletions are written to the store: those of the documents touching no lead
   to push before the push, each PATCH batch's ones in the transaction of its intent (so the first
   PATCH leaves without waiting for every row to be written; a base goes with the last part that
   holds one of its documents). The documents' DataVersion is NOT: it is recorded only after
   every lead the document touches (its lead now and before) has been accepted by amoCRM, so an
   unconfirmed document is re-read and re-evaluated next cycle. Every lead whose recomputed total differs from the last
   one pushed is marked ``pending`` in ``lead_totals`` in the same transaction, so a pending total
   survives any crash, whatever window the next cycle reads.
4. Each due lead (pending, failed with its backoff elapsed, or with a push in flight) gets its
   total recomputed from the store and pushed in PATCHes of <= 50 leads: «Сумма1С» exact, price
   rounded half up. Before each PATCH one transaction records the totals being sent
   (``pushing_total``, the intent); after it, one transaction records the accepted totals
   (``pushed_total``, intent cleared), their journal entries and the DataVersions now confirmed;
   rejected leads become ``failed`` with amoCRM's reason, ``attempts`` and an exponential
   ``next_attempt_at`` (an item error clears the intent: amoCRM wrote nothing).

What a SIGKILL leaves, by where it strikes:

* before step 3's commit: nothing of this cycle; the next one reads the same changes again;
* after step 3's first part, before a batch's part: that batch's documents and bases unrecorded
  (their DataVersions and bases still differ, so the next cycle re-evaluates them);
* after an intent, before or during the PATCH (amoCRM may or may not have applied it), or after
  the PATCH before its commit: the intent is still there, so the next cycle pushes the lead again
  with its total *then*, even when that equals ``pushed_total`` (a document unposted meanwhile:
  amoCRM may hold the unconfirmed total, which only a push undoes). An idempotent PATCH again,
  one journal entry;
* after the commit of a PATCH: that batch is done; the later batches are as above.

A dry run is the same cycle through the recording adapters of jobs/dry_run.py: it reads both
systems and writes nothing anywhere; the would-be PATCHes go to ``result.planned``.
"""

from __future__ import annotations

import sys
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass, field
from datetime import datetime, timedelta, timezone, tzinfo
from decimal import Decimal
from typing import Any, Iterable, Mapping, TypeVar

from amo1c_sync.amocrm.fields import FieldMap
from amo1c_sync.amocrm.gateway import BatchResult
from amo1c_sync.domain import totals as T
from amo1c_sync.domain.payment_window import Window, plan_windows, slices
from amo1c_sync.domain.registration import display_number
from amo1c_sync.errors import ItemError
from amo1c_sync.jobs.base import JobContext, JobResult
from amo1c_sync.logs import get_logger
from amo1c_sync.store import cursors
from amo1c_sync.store import payments as store
from amo1c_sync.store import retry as retries
from amo1c_sync.store.models import utcnow
from amo1c_sync.onec.gateway import BaseVersion, Service
from amo1c_sync.store.payments import DocumentFacts

log = get_logger("amo1c_sync.jobs.payments")
T_ = TypeVar("T_")

JOB = "payments"
PATCH_BATCH = 50          # leads per PATCH (amoCRM: at most 50 per request)
BACKFILL_SLICE_DAYS = 7   # a --since backfill reads 1C a week at a time (one progress step each)
REFS_PER_LOOKUP = 25      # about as many refs as one look-up by ref holds (2,000-byte request target)
FULL_SCAN_SLICE_DAYS = 7  # a periodic full scan reads a week of documents per cycle, after the hot window
LONG_READS = ("full", "since")  # windows read whole, the «Заявки» scan and field list beside them
NEW_BASES_SCAN = 60       # more unknown bases than this in a hot read: scan the «Заявки» of the window


SKIP_NO_BASE = "no base document: 1C does not know which lead this payment is for"
SKIP_BASE_NOT_ZAYAVKA = "the base document is not a «Заявка» ({type})"
SKIP_NO_LEAD = "the base «Заявка» has no «Номер AmoCRM» (or no longer exists)"
SKIP_BAD_LEAD = "«Номер AmoCRM» «{value}» of the base «Заявка» is not a lead id"


# ---------------------------------------------------------------------------------------------
# the job
# ---------------------------------------------------------------------------------------------
@dataclass
class _Plan:
    fresh: dict[str, DocumentFacts] = field(default_factory=dict)
    stored: dict[str, T.DocState] = field(default_factory=dict)      # stored state of changed docs
    totals: dict[int, Decimal] = field(default_factory=dict)
    pushed: dict[int, Decimal | None] = field(default_factory=dict)
    push: dict[int, Decimal] = field(default_factory=dict)           # due now
    deferred: set[int] = field(default_factory=set)
    docs_of: dict[int, list[tuple[str, str | None, Decimal]]] = field(default_factory=dict)
    leads_of: dict[str, set[int]] = field(default_factory=dict)    # changed doc -> its leads now+before
    changed_of: dict[int, list[str]] = field(default_factory=dict)  # lead -> its changed docs
    bases: dict[str, store.KnownBase] = field(default_factory=dict)   # bases to record with the facts


def run(ctx: JobContext, result: JobResult) -> None:
    sync = ctx.settings.sync
    now = utcnow()
    windows = plan_windows(now_utc=now, tz=sync.tz, hot_window=sync.hot_window, lookback=sync.lookback,
                           full_scan_interval=sync.full_scan_interval,
                           last_full_scan=cursors.last_full_scan(ctx.store), since=ctx.since,
                           slice_from=store.scan_slice(ctx.store), slice_days=FULL_SCAN_SLICE_DAYS)
    for window in windows:
        if ctx.stopping():
            return
        _cycle(ctx, result, window, now)
        if ctx.stopping():
            return
        if window.kind == "slice":
            store.record_scan_slice(ctx.store, None if window.full else window.upper())
        if window.full:
            cursors.record_full_scan(ctx.store, now)


def _cycle(ctx: JobContext, result: JobResult, window: Window, now: datetime) -> None:
    """Read one window, record what changed, push the leads it changes."""
    tz = ctx.settings.sync.tz
    result.count(f"window_{window.kind}")
    log.debug("payments.window", date_from=window.date_from.isoformat(),
              date_to=window.upper().isoformat(), kind=window.kind)
    known = store.refs_dated(ctx.store, *_utc_bounds(window, tz))
    with ThreadPoolExecutor(max_workers=1, thread_name_prefix="payments-bases") as pool:
        # a long read: the field list (when its cache is stale) is fetched first, meanwhile, so
        # its request is not one of the PATCHes' rate-limited seconds
        fields = pool.submit(_field_map, ctx) if window.kind in LONG_READS else None
        prefetch = _prefetch_bases(ctx, window, pool)
        read = _read(ctx, window, known)
        result.count("read", len(read.seen))
        if ctx.stopping():
            return
        plan = _plan(ctx, result, window, read, known, now, prefetch)
    leads = sorted(plan.push)
    batches = [leads[i:i + PATCH_BATCH] for i in range(0, len(leads), PATCH_BATCH)]
    first, parts = _parts(plan, batches)
    _record_part(ctx, result, plan, first, intent=False)
    if ctx.stopping():
        for part in parts:
            _record_part(ctx, result, plan, part, intent=False)
    elif parts:
        _push(ctx, result, plan, batches, parts, fields.result() if fields is not None else _field_map(ctx))


def _progress(iterable: Iterable[T_], *, total: int, desc: str, unit: str, enabled: bool) -> Iterable[T_]:
    """tqdm on a TTY, the bare iterable otherwise."""
    if enabled and sys.stderr.isatty():
        from tqdm import tqdm

        return tqdm(iterable, total=total, desc=desc, unit=unit, file=sys.stderr)
    return iterable


def _read_window(ctx: JobContext, window: Window) -> tuple[list[Service], bool]:
    """The window's «Оказание услуг», one per ref (the last read wins), and whether the whole
    window was read (a stop cuts a backfill short: then nothing missing counts as gone)."""
    if window.kind == "since":
        parts = slices(window, BACKFILL_SLICE_DAYS)
        out: dict[str, Service] = {}
        for lo, hi in _progress(parts, total=len(parts), desc="1C «Оказание услуг»", unit="week",
                                enabled=True):
            if ctx.stopping():
                return list(out.values()), False
            for svc in ctx.onec.services_in_window(lo, hi):
                out[svc.ref] = svc
        return list(out.values()), True
    read = ctx.onec.services_in_window(window.date_from, window.upper())
    return list({svc.ref: svc for svc in read}.values()), True


def _to_utc(value: datetime | None, tz: tzinfo) -> datetime | None:
    if value is None:
        return None
    if value.tzinfo is None:
        value = value.replace(tzinfo=tz)
    return value.astimezone(timezone.utc)


def _local(value: datetime, tz: tzinfo) -> datetime:
    return value.astimezone(tz).replace(tzinfo=None)


def _utc_bounds(window: Window, tz: tzinfo) -> tuple[datetime, datetime]:
    """The window's dates as aware UTC [from, to): what the stored doc_date is compared with."""
    return _to_utc(window.date_from, tz), _to_utc(window.upper(), tz)  # type: ignore[return-value]


def _base_of(svc: Service) -> str | None:
    return svc.base_ref if svc.base_ref and svc.base_is_zayavka else None


def _fresh(svc: Service, leads_by_base: dict[str, str | None], tz: tzinfo) -> DocumentFacts:
    lead_id: int | None = None
    skip: str | None = None
    if not svc.base_ref:
        skip = SKIP_NO_BASE
    elif not svc.base_is_zayavka:
        skip = SKIP_BASE_NOT_ZAYAVKA.format(type=svc.base_type or "?")
    else:
        raw = leads_by_base.get(svc.base_ref)
        if raw is None or not str(raw).strip():
            skip = SKIP_NO_LEAD
        else:
            lead_id = T.parse_lead_id(raw)
            if lead_id is None:
                skip = SKIP_BAD_LEAD.format(value=str(raw).strip())
    amount = svc.amount if svc.amount is not None else T.ZERO
    state = T.DocState(ref=svc.ref, lead_id=lead_id, amount=amount, posted=bool(svc.posted),
                       deletion_mark=bool(svc.deletion_mark))
    entry = None
    if skip:
        entry = {"system": "store", "action": "document.skipped", "ref": svc.ref,
                 "message": f"«Оказание услуг» № {display_number(svc.number)}: {skip}",
                 "detail": {"number": svc.number, "amount": str(amount), "posted": state.posted,
                            "deletion_mark": state.deletion_mark, "data_version": svc.data_version,
                            "reason": skip}}
    return DocumentFacts(ref=svc.ref, number=svc.number, data_version=svc.data_version,
                         doc_date=_to_utc(svc.date, tz), lead_id=lead_id, skip_reason=skip, state=state,
                         skipped_entry=entry, base_ref=_base_of(svc))


def _gone(ref: str) -> DocumentFacts:
    state = T.DocState(ref=ref, lead_id=None, amount=T.ZERO, posted=False, deletion_mark=True)
    return DocumentFacts(ref=ref, number="", data_version="", doc_date=None, lead_id=None, skip_reason=None,
                         state=state, gone=True)


@dataclass
class _Read:
    """What a cycle read of the window: full rows of the documents to evaluate, every ref the
    window holds, whether the whole window was read, and the stored side of those refs."""

    rows: dict[str, Any]
    seen: set[str]
    complete: bool
    stored: dict[str, store.StoredDoc] | None = None


def _read(ctx: JobContext, window: Window, known: set[str]) -> _Read:
    """A backfill, or a window the store knows nothing of, is read in full rows. Otherwise the scan
    reads only Ref_Key and DataVersion, and full rows of the changed documents alone: by ref, or
    the window again in full when that takes fewer requests (most of it changed)."""
    if window.kind == "since" or not known:
        services, complete = _read_window(ctx, window)
        rows = {svc.ref: svc for svc in services}
        return _Read(rows, set(rows), complete)
    versions = {v.ref: v.data_version for v in ctx.onec.service_versions(window.date_from, window.upper())}
    stored = store.stored_documents(ctx.store, set(versions) | known)
    changed = [ref for ref, dv in versions.items() if ref not in stored or stored[ref].data_version != dv]
    return _Read(_full_rows(ctx, window, changed, len(versions)), set(versions), True, stored)


def _full_rows(ctx: JobContext, window: Window, refs: list[str], total: int) -> dict[str, Any]:
    if not refs:
        return {}
    # the window is re-read whole only when the look-ups would outnumber its pages of page_size
    # rows: the changed documents alone are read in full, as the scans promise, in all other cases
    pages = -(-total // max(int(getattr(ctx.onec, "page_size", 500)), 1))
    if -(-len(refs) // REFS_PER_LOOKUP) > pages:
        wanted = set(refs)
        return {svc.ref: svc for svc in ctx.onec.services_in_window(window.date_from, window.upper())
                if svc.ref in wanted}
    return {svc.ref: svc for svc in ctx.onec.services_by_ref(refs)}


def _vanished(ctx: JobContext, missing: set[str], by_ref: dict[str, Any]) -> set[str]:
    """Stored documents dated in the window that the read did not return: looked up by ref, those
    found (their date moved) join ``by_ref``; the rest are gone from 1C."""
    if not missing:
        return set()
    for svc in ctx.onec.services_by_ref(missing):
        by_ref[svc.ref] = svc
    return missing - set(by_ref)


def _changed(svc: Service, old: store.StoredDoc | None, changed_bases: set[str], since: bool) -> bool:
    """A document is re-evaluated when it is new, its DataVersion or base differs from the stored
    ones, its base «Заявка» changed, or a backfill re-reads everything."""
    if old is None or since:
        return True
    base = _base_of(svc)
    return old.data_version != svc.data_version or old.base_ref != base or base in changed_bases


_Prefetch = tuple[datetime, "Future[list[BaseVersion]]"]


def _prefetch_bases(ctx: JobContext, window: Window, pool: ThreadPoolExecutor) -> _Prefetch | None:
    """On a full or backfill read, the «Заявки» scan's range does not depend on the documents:
    it is read while the documents are (the two 1C reads overlap)."""
    if window.kind not in LONG_READS:
        return None
    tz = ctx.settings.sync.tz
    earliest, _latest = store.base_date_range(ctx.store, *_utc_bounds(window, tz))
    scan_from = min(window.date_from, _local(earliest, tz)) if earliest is not None else window.date_from
    return scan_from, pool.submit(ctx.onec.base_versions, scan_from, None)


def _plan(ctx: JobContext, result: JobResult, window: Window, read: _Read, known: set[str],
          now: datetime, prefetch: _Prefetch | None = None) -> _Plan:
    plan = _Plan()
    tz = ctx.settings.sync.tz
    since = window.kind == "since"
    by_ref = read.rows
    gone = _vanished(ctx, known - read.seen, by_ref) if read.complete else set()
    stored = read.stored if read.stored is not None else {}
    stored.update(store.stored_documents(ctx.store, (set(by_ref) | gone) - set(stored)))
    not_read = {ref for ref in read.seen - set(by_ref) if ref in stored}
    wanted = {b for b in map(_base_of, by_ref.values()) if b} | {
        b for b in (stored[ref].base_ref for ref in not_read) if b}
    bases = _bases(ctx, window, wanted, since=since, prefetch=prefetch)
    gone |= _stray_bases(ctx, bases, by_ref, stored, gone)
    plan.bases = bases.to_record
    changed = [svc for svc in by_ref.values() if _changed(svc, stored.get(svc.ref), bases.changed, since)]
    plan.stored = {ref: stored[ref].state for ref in [svc.ref for svc in changed] + sorted(gone)
                   if ref in stored}
    result.count("changed", len(changed))
    if gone:
        result.count("gone", len(gone))
    leads_by_base = {ref: b.lead_raw for ref, b in bases.mapping.items()}
    for svc in changed:
        f = _fresh(svc, leads_by_base, tz)
        plan.fresh[f.ref] = f
        if f.skip_reason:
            result.count("skipped")
    for ref in gone:
        plan.fresh[ref] = _gone(ref)

    _index_changed(plan)
    candidates = set(plan.changed_of) | store.unsettled_leads(ctx.store)
    if candidates:
        _plan_leads(result, plan, store.leads_state(ctx.store, candidates), candidates, now)
    return plan


def _stray_bases(ctx: JobContext, bases: _Bases, by_ref: dict[str, Any], stored: dict[str, store.StoredDoc],
                 gone: set[str]) -> set[str]:
    """Every stored document of a changed base «Заявка» is re-read by ref, wherever it is dated
    (out of the window too: once the base's new DataVersion is recorded, nothing else would make
    it differ again); the new bases those documents point at are resolved. Returns the ones 1C no
    longer has (gone)."""
    if not bases.changed:
        return set()
    refs = store.documents_of_bases(ctx.store, bases.changed) - set(by_ref) - gone
    if not refs:
        return set()
    stored.update(store.stored_documents(ctx.store, refs - set(stored)))
    found = {svc.ref: svc for svc in ctx.onec.services_by_ref(refs)}
    by_ref.update(found)
    new = {b for b in map(_base_of, found.values()) if b and b not in bases.mapping}
    if new:
        tz = ctx.settings.sync.tz
        fresh = {b.ref: store.KnownBase(b.data_version, b.lead, _to_utc(b.date, tz))
                 for b in ctx.onec.bases_by_ref(new)}
        fresh.update({ref: store.KnownBase("", None, None) for ref in new - set(fresh)})
        known = store.known_bases(ctx.store, new)
        bases.mapping.update(fresh)
        bases.to_record.update({ref: b for ref, b in fresh.items() if known.get(ref) != b})
    return refs - set(found)


@dataclass
class _Bases:
    mapping: dict[str, store.KnownBase] = field(default_factory=dict)   # every base of the window
    changed: set[str] = field(default_factory=set)                       # since it was last read
    to_record: dict[str, store.KnownBase] = field(default_factory=dict)  # new or changed


def _bases(ctx: JobContext, window: Window, wanted: set[str], *, since: bool,
           prefetch: _Prefetch | None = None) -> _Bases:
    """The base «Заявки» of the window's documents, followed by their own DataVersion: one scan of
    the «Заявки» dated from the earliest to the latest known base of the window's documents (from
    the window's start on, too, on a full or backfill read or when many bases are new, which finds
    new bases without a look-up each); every base the scan did not return (unknown, gone, or
    known but dated out of the scan's range, so its stored mapping is unconfirmed) is looked up
    by ref."""
    tz = ctx.settings.sync.tz
    known = store.known_bases(ctx.store, wanted)
    earliest, latest = store.base_date_range(ctx.store, *_utc_bounds(window, tz))
    starts = [_local(earliest, tz)] if earliest is not None else []
    scan_to: datetime | None = _local(latest, tz) + timedelta(seconds=1) if latest is not None else None
    if window.kind in ("full", "since") or len(wanted - set(known)) > NEW_BASES_SCAN:
        starts.append(window.date_from)  # new bases are likely dated in the window: no look-up each
        scan_to = None
    scan_from = min(starts) if starts else None
    fresh: dict[str, store.KnownBase] = {}
    scanned: list[BaseVersion] = []
    if prefetch is not None and prefetch[0] == scan_from and scan_to is None:
        scanned = prefetch[1].result()
    elif scan_from is not None and wanted:
        scanned = ctx.onec.base_versions(scan_from, scan_to)
    if wanted:
        for b in scanned:
            if b.ref in wanted:
                fresh[b.ref] = store.KnownBase(b.data_version, b.lead, _to_utc(b.date, tz))

    recheck = wanted - set(fresh)   # unknown, gone, or known but dated out of the scan: unconfirmed
    for b in ctx.onec.bases_by_ref(recheck) if recheck else ():
        fresh[b.ref] = store.KnownBase(b.data_version, b.lead, _to_utc(b.date, tz))
    for ref in recheck - set(fresh):   # the «Заявка» no longer exists: its documents count for no lead
        fresh[ref] = store.KnownBase("", None, known[ref].doc_date if ref in known else None)
    out = _Bases(mapping={**known, **fresh})
    out.changed = {ref for ref, b in fresh.items()
                   if since or (ref in known and known[ref].data_version != b.data_version)}
    out.to_record = {ref: b for ref, b in fresh.items() if known.get(ref) != b}
    return out


def _plan_leads(result: JobResult, plan: _Plan, state: store.LeadsState, candidates: set[int],
                now: datetime) -> None:
    """Each candidate lead's total now, and whether it is pushed now, later or on a change."""
    merged = T.merge(state.docs, {ref: f.state for ref, f in plan.fresh.items()})
    numbers = {**state.numbers, **{ref: f.number for ref, f in plan.fresh.items()}}
    plan.totals = T.lead_totals(merged.values(), candidates)
    plan.pushed = {lead: state.pushed.get(lead) for lead in candidates}
    for d in merged.values():
        if d.lead_id in candidates and d.counts:
            plan.docs_of.setdefault(d.lead_id, []).append((d.ref, numbers.get(d.ref), d.amount))
    differing = T.leads_to_push(plan.totals, plan.pushed, in_flight=state.in_flight)
    for lead, value in differing.items():
        # a changed document of the lead makes a recorded item error worth a new try
        decision = retries.decide(state.failures.get(lead), now=now, changed=lead in plan.changed_of)
        if decision != "due":
            result.count("deferred" if decision == "deferred" else "waiting_for_change")
            plan.deferred.add(lead)
            continue
        plan.push[lead] = value
    result.count("unchanged_leads", len(candidates) - len(differing))


def _leads_of(plan: _Plan, ref: str) -> set[int]:
    return plan.leads_of[ref]


def _index_changed(plan: _Plan) -> None:
    """Each changed document's leads (now and before), and each lead's changed documents."""
    for ref, f in plan.fresh.items():
        leads = T.affected_leads(plan.stored, [f.state])
        plan.leads_of[ref] = leads
        for lead in leads:
            plan.changed_of.setdefault(lead, []).append(ref)


@dataclass
class _Part:
    """The facts recorded in one transaction: before the push (``intent`` empty), or with the
    intent of one PATCH batch, just before it is sent."""

    refs: list[str]
    unsettled: set[int]
    bases: dict[str, store.KnownBase] = field(default_factory=dict)
    intent: dict[int, Decimal] = field(default_factory=dict)
    settled: set[int] = field(default_factory=set)
    confirmed: set[str] = field(default_factory=set)


def _parts(plan: _Plan, batches: list[list[int]]) -> tuple[_Part, list[_Part]]:
    """Split the facts so that each batch's documents (and the bases only they need) are recorded
    with its intent: the first PATCH goes out without waiting for every document to be written.
    A base is recorded with the last part holding one of its documents, so a crash between parts
    leaves it unrecorded and its documents re-evaluated."""
    unsettled = set(plan.push) | plan.deferred
    assigned: set[str] = set()
    per: list[_Part] = []
    for batch in batches:
        refs = list(dict.fromkeys(ref for lead in batch for ref in plan.changed_of.get(lead, ())
                                  if ref not in assigned))
        assigned.update(refs)
        marks = set(batch) | ({lead for ref in refs for lead in _leads_of(plan, ref)} & unsettled)
        per.append(_Part(refs, marks, intent={lead: plan.push[lead] for lead in batch}))
    rest = [ref for ref in plan.fresh if ref not in assigned]
    first = _Part(rest, ({lead for ref in rest for lead in _leads_of(plan, ref)} | plan.deferred) & unsettled,
                  settled=set(plan.totals) - unsettled,
                  confirmed={ref for ref in rest if not (_leads_of(plan, ref) & unsettled)})
    every = [first, *per]
    last: dict[str, int] = {}
    for i, part in enumerate(every):
        for ref in part.refs:
            base = plan.fresh[ref].base_ref
            if base in plan.bases:
                last[base] = i
    for base, value in plan.bases.items():
        every[last.get(base, 0)].bases[base] = value
    return first, per


def _record_part(ctx: JobContext, result: JobResult, plan: _Plan, part: _Part, *, intent: bool) -> None:
    store.record_facts(ctx.store, [plan.fresh[ref] for ref in part.refs], confirmed=part.confirmed,
                       unsettled=part.unsettled, settled=part.settled, job=JOB, run_id=result.run_id,
                       bases=part.bases.items(), intent=part.intent if intent else None)


def _patch(field_map: FieldMap, sum_field: str, lead: int, value: Decimal) -> dict[str, Any]:
    return {"id": lead, "price": T.budget(value),
            "custom_fields_values": [{"field_id": field_map.id(sum_field),
                                      "values": [{"value": T.sum_field_value(value)}]}]}


def _field_map(ctx: JobContext) -> FieldMap:
    return ctx.amocrm.lead_field_map([ctx.settings.fields.sum], tz=ctx.settings.sync.timezone)


def _push(ctx: JobContext, result: JobResult, plan: _Plan, batches: list[list[int]], parts: list[_Part],
          field_map: FieldMap) -> None:
    """PATCH the due leads in batches, one PATCH in flight while the store records the previous
    one's outcome and the next one's facts and intent (so the store's work hides in the rate
    limiter's waits). Each batch's intent is committed before its PATCH goes to the sending thread;
    a stop records the facts of the batches not sent, without an intent."""
    sum_field = ctx.settings.fields.sum
    settling = _Settling(settled=set(plan.totals) - set(plan.push) - plan.deferred)
    settling.waiting = {ref for ref in plan.fresh if _leads_of(plan, ref) - settling.settled}
    sent: tuple[list[int], Future[BatchResult]] | None = None
    with ThreadPoolExecutor(max_workers=1, thread_name_prefix="payments-patch") as pool:
        steps = _progress(list(zip(batches, parts, strict=True)), total=len(batches), desc="amoCRM leads", unit="PATCH",
                          enabled=ctx.since is not None)
        for i, (batch, part) in enumerate(steps):
            if ctx.stopping():
                for rest in parts[i:]:
                    _record_part(ctx, result, plan, rest, intent=False)
                break
            patches = [_patch(field_map, sum_field, lead, plan.push[lead]) for lead in batch]
            _record_part(ctx, result, plan, part, intent=True)
            future = pool.submit(ctx.amocrm.update_leads, patches)
            if sent is not None:
                _settle(ctx, result, plan, settling, *sent)
            sent = (batch, future)
        if sent is not None:
            _settle(ctx, result, plan, settling, *sent)


@dataclass
class _Settling:
    settled: set[int]                                   # leads amoCRM holds the total of, or refused
    waiting: set[str] = field(default_factory=set)      # changed documents not confirmed yet


def _settle(ctx: JobContext, result: JobResult, plan: _Plan, settling: _Settling, batch: list[int],
            future: Future[BatchResult]) -> None:
    """One PATCH's outcome, once it is in: recorded, and the DataVersions it confirms."""
    outcome = future.result()
    result.count("patch_batches")
    accepted = set(outcome.ok) - set(outcome.failed)
    # an item error is settled too: recorded with the DataVersions it failed at, it waits
    # for one of its documents to change
    refused = {lead for lead, err in outcome.failed.items() if isinstance(err, ItemError)}
    settling.settled |= accepted | refused
    touched = {ref for lead in accepted | refused for ref in plan.changed_of.get(lead, ())}
    confirm = {ref for ref in touched & settling.waiting if not (_leads_of(plan, ref) - settling.settled)}
    settling.waiting -= confirm
    _record_batch(ctx, result, plan, batch, accepted, outcome.failed,
                  {ref: plan.fresh[ref].data_version for ref in confirm})


def _record_batch(ctx: JobContext, result: JobResult, plan: _Plan, batch: list[int], accepted: set[int],
                  failed: Mapping[int, Exception], versions: dict[str, str]) -> None:
    """One PATCH's outcome: accepted totals and their journal, each refusal's retry record and the
    DataVersions now confirmed, in one transaction."""
    sum_field = ctx.settings.fields.sum

    def describe(lead: int, old: Decimal | None, new: Decimal) -> tuple[str, dict[str, Any]]:
        docs = sorted(plan.docs_of.get(lead, []), key=lambda x: x[0])
        return (f"«{sum_field}» {_s(old) or '—'} -> {_s(new)}, budget {T.budget(new)}",
                {"old_total": _s(old), "new_total": _s(new), "price": T.budget(new),
                 "documents": [{"ref": r, "number": n, "amount": _s(a)} for r, n, a in docs],
                 "changed_documents": sorted(plan.changed_of.get(lead, ()))})

    refusals = store.record_push(
        ctx.store, totals={lead: plan.push[lead] for lead in batch}, accepted=accepted, failed=failed,
        versions=versions, policy=retries.policy_of(ctx.settings), describe=describe, job=JOB,
        run_id=result.run_id)
    result.count("pushed", len(accepted & set(batch)))
    for lead, reason in refusals:
        result.count("failed")
        result.item_failed(f"lead {lead}: {reason}")


_s = T.money_text
