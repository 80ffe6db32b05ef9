"""Which leads the registration job should look at: those whose flag was set, found by amoCRM's
events (one request per cycle, whatever else changes in the account), with the lead listing as a
periodic reconciliation that repairs what the events missed.

One cycle:
1. ``GET /api/v4/events`` for ``custom_field_<flag id>_value_changed`` on leads since the newest
   event seen, less a few seconds (events are stamped to the second, and may show a little late;
   the ids already seen in those seconds are skipped). With no cursor yet it looks back a day of
   those events only, never listing the leads themselves.
2. The "open" leads: a lead is opened by an event that left its flag set and closed by a later one
   that cleared it (our own write-back does); the card's cancel flag ([fields] cancel_flag), when
   configured, is followed the same way, in the same request, with its own open leads. Open leads
   are read by id (50 per request; a burst of more is read from the lead listing since the burst,
   when that is cheaper) and those still flagged are handed to the job; a lead the job could not
   finish stays flagged, hence open, and is read again next cycle (the job's retry records decide
   when it is tried).
3. Every ``[sync] lead_reconcile_interval`` the leads updated since the last reconciliation are
   listed (``iter_leads_updated_since``); a flagged one that is not open is a repair: counted
   (``reconcile_repairs`` in the run, its total in ``status``), logged, and handed to the job.

The cursor, the seen ids and the open leads are one store row, written before the job handles any
lead: a SIGKILL after it leaves the open leads recorded, so the next run reads them again; a
SIGKILL before it reads the same events again. Either way no flagged lead is forgotten.
"""

from __future__ import annotations

import math
import time
from collections.abc import Iterable
from typing import Any

from amo1c_sync.amocrm import events
from amo1c_sync.logs import get_logger
from amo1c_sync.store import cursors

log = get_logger("amo1c_sync.jobs.flagged")

#: with no cursor yet, look back this far for flag changes (the registration's own lookback)
FIRST_LOOKBACK = 86400
#: re-read this many seconds before the newest event seen (amoCRM stamps events to the second; one
#: that shows up later than this is left to the reconciliation), at most [sync] lead_cursor_overlap
EVENTS_OVERLAP = 5
IDS_PER_READ = 50     # the gateway's ids per filter[id][] read
LEADS_PER_PAGE = 250  # the lead listing's page
#: the leads carry their contacts, so the patient match (jobs/patient.py) need not re-read them
LEAD_WITH = ("contacts",)


def leads_to_register(ctx: Any, result: Any, fm: Any) -> list[dict[str, Any]]:
    """The flagged leads for this registration cycle, in ``updated_at`` order."""
    from amo1c_sync.jobs.registration import is_flagged

    settings, amo = ctx.settings, ctx.amocrm
    flags = _flags(ctx, fm)
    now = int(time.time())
    overlap = int(settings.sync.lead_cursor_overlap)
    lag = min(overlap, EVENTS_OVERLAP)
    state = cursors.registration_events(ctx.store) or {
        "at": now - FIRST_LOOKBACK + lag, "seen": {}, "open": [], "reconciled_at": now,
        "repairs_total": 0}
    types = {events.field_changed_type(m.id(name)): key for key, (m, name) in flags.items()}
    fresh = [e for e in events.lead_events(amo, list(types), since=int(state["at"]) - lag)
             if str(e.get("id")) not in state["seen"]]
    result.count("flag_events", len(fresh))
    before = {key: {int(i) for i in state.get(key) or []} for key in flags}
    opened = {key: _apply(set(ids), [e for e in fresh if types.get(str(e.get("type"))) == key])
              for key, ids in before.items()}
    open_ids = set().union(*opened.values())

    def is_set(lead: dict[str, Any], keys: Iterable[str] = tuple(flags)) -> bool:
        return any(is_flagged(flags[k][0], lead, flags[k][1]) for k in keys)

    found: dict[int, dict[str, Any]] = {}
    if now - int(state["reconciled_at"]) >= settings.sync.lead_reconcile_interval:
        found.update(_reconcile(amo, state, result, overlap, open_ids, is_set))
        state["reconciled_at"] = now
    found.update(_read(amo, open_ids - set(found), set().union(*before.values()), fresh, overlap))
    flagged = [lead for lead in found.values() if is_set(lead)]
    _save(ctx.store, state, fresh, lag, {key: {int(lead["id"]) for lead in flagged if is_set(lead, (key,))}
                                         for key in flags})
    return sorted(flagged, key=lambda lead: (int(lead.get("updated_at") or 0), int(lead["id"])))


def _flags(ctx: Any, fm: Any) -> dict[str, tuple[Any, str]]:
    """The checkboxes whose events open a lead, by the state key of their open leads: the
    registration flag, and the card's cancel flag when configured (jobs/card_cancel.py acts on the
    leads this returns that carry it)."""
    f = ctx.settings.fields
    out: dict[str, tuple[Any, str]] = {"open": (fm, f.flag)}
    if f.cancel_flag:
        out["open_cancel"] = (ctx.amocrm.lead_field_map([f.cancel_flag], tz=ctx.settings.sync.timezone),
                              f.cancel_flag)
    return out


def _read(amo: Any, ids: set[int], before: set[int], fresh: list[dict[str, Any]],
          overlap: int) -> dict[int, dict[str, Any]]:
    """The open leads: by id, 50 a request; but when more than 50 were opened by this read's
    events (a burst of flags), first from the listing of the leads updated since the earliest of
    those events, while that takes fewer requests (250 a page) — a flag's change moves its lead's
    ``updated_at``. What the listing did not reach is read by id."""
    out: dict[int, dict[str, Any]] = {}
    new = ids - before
    if len(new) > IDS_PER_READ:
        since = min(int(e.get("created_at") or 0) for e in fresh if int(e["entity_id"]) in new)
        budget = math.ceil(len(new) / IDS_PER_READ) * LEADS_PER_PAGE
        for n, lead in enumerate(amo.iter_leads_updated_since(since, overlap, with_=LEAD_WITH), 1):
            if int(lead["id"]) in ids:
                out[int(lead["id"])] = lead
            if n >= budget or len(out) == len(ids):
                break
    rest = sorted(ids - set(out))
    if rest:
        out.update({int(lead["id"]): lead for lead in amo.get_leads(rest, with_=LEAD_WITH)})
    return out


def _apply(open_ids: set[int], fresh: list[dict[str, Any]]) -> set[int]:
    """Open a lead on an event that set its flag, close it on a later one that cleared it; when
    both happened in its last second, keep it open (reading it once more settles it)."""
    last: dict[int, tuple[int, bool]] = {}
    for e in sorted(fresh, key=lambda e: int(e.get("created_at") or 0)):
        lead_id, at, is_set = int(e["entity_id"]), int(e.get("created_at") or 0), events.set_value(e)
        prev = last.get(lead_id)
        if prev is not None and prev[0] == at:
            is_set = is_set or prev[1]
        last[lead_id] = (at, is_set)
    for lead_id, (_, is_set) in last.items():
        (open_ids.add if is_set else open_ids.discard)(lead_id)
    return open_ids


def _reconcile(amo: Any, state: dict[str, Any], result: Any, overlap: int, open_ids: set[int],
               flagged: Any) -> dict[int, dict[str, Any]]:
    """The flagged leads among those updated since the last reconciliation; those the events had
    not opened are repairs, counted in the run and in the stored total."""
    listed = {int(lead["id"]): lead
              for lead in amo.iter_leads_updated_since(int(state["reconciled_at"]), overlap, with_=LEAD_WITH)
              if flagged(lead)}
    repairs = sorted(i for i in listed if i not in open_ids)
    if repairs:
        log.warning("registration.reconcile_repaired", lead_ids=repairs)
    result.count("reconcile_repairs", len(repairs))
    state["repairs_total"] = int(state.get("repairs_total", 0)) + len(repairs)
    return listed


def _save(store: Any, state: dict[str, Any], fresh: list[dict[str, Any]], lag: int,
          open_ids: dict[str, set[int]]) -> None:
    """``at`` is the newest event's second (amoCRM's clock, not ours); the next read starts
    ``lag`` before it, and the events of those seconds are remembered, to be skipped."""
    at = max([int(e.get("created_at") or 0) for e in fresh] + [int(state["at"])])
    seen = {**state["seen"], **{str(e["id"]): int(e.get("created_at") or 0) for e in fresh}}
    cursors.save_registration_events(store, {
        "at": at, "seen": {k: v for k, v in seen.items() if v >= at - lag},
        **{key: sorted(ids) for key, ids in open_ids.items()},
        "reconciled_at": int(state["reconciled_at"]), "repairs_total": int(state.get("repairs_total", 0))})
