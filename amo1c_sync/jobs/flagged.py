"""Which leads the registration job should look at: those whose flag was set, found by amoCRM's
events (one request per cycle, whatever else changes in the account), with the lead listing as a
periodic reconciliation that repairs what the events missed.

One cycle:
1. ``GET /api/v4/events`` for ``custom_field_<flag id>_value_changed`` on leads since the cursor
   (less ``[sync] lead_cursor_overlap``: amoCRM may show an event a little late; the ids already
   seen in that overlap are skipped). With no cursor yet it looks back a day of those events only,
   never listing the leads themselves.
2. The "open" leads: a lead is opened by an event that left its flag set and closed by a later one
   that cleared it (our own write-back does). Open leads are read by id (50 per request) and those
   still flagged are handed to the job; a lead the job could not finish stays flagged, hence open,
   and is read again next cycle (the job's retry records decide when it is tried).
3. Every ``[sync] lead_reconcile_interval`` the leads updated since the last reconciliation are
   listed (``iter_leads_updated_since``); a flagged one that is not open is a repair: counted
   (``reconcile_repairs`` in the run, its total in ``status``), logged, and handed to the job.

The cursor, the seen ids and the open leads are one store row, written before the job handles any
lead: a SIGKILL after it leaves the open leads recorded, so the next run reads them again; a
SIGKILL before it reads the same events again. Either way no flagged lead is forgotten.
"""

from __future__ import annotations

import time
from typing import Any

from amo1c_sync.amocrm import events
from amo1c_sync.logs import get_logger
from amo1c_sync.store import cursors

log = get_logger("amo1c_sync.jobs.flagged")

#: with no cursor yet, look back this far for flag changes (the registration's own lookback)
FIRST_LOOKBACK = 86400


def leads_to_register(ctx: Any, result: Any, fm: Any) -> list[dict]:
    """The flagged leads for this registration cycle, in ``updated_at`` order."""
    from amo1c_sync.jobs.registration import is_flagged

    settings, amo = ctx.settings, ctx.amocrm
    flag = settings.fields.flag
    now = int(time.time())
    overlap = int(settings.sync.lead_cursor_overlap)
    state = cursors.registration_events(ctx.store) or {
        "at": now - FIRST_LOOKBACK + overlap, "seen": {}, "open": [], "reconciled_at": now,
        "repairs_total": 0}
    fresh = [e for e in events.lead_events(amo, [events.field_changed_type(fm.id(flag))],
                                           since=int(state["at"]) - overlap)
             if str(e.get("id")) not in state["seen"]]
    result.count("flag_events", len(fresh))
    open_ids = _apply({int(i) for i in state["open"]}, fresh)
    found: dict[int, dict] = {}
    if now - int(state["reconciled_at"]) >= settings.sync.lead_reconcile_interval:
        listed = _reconcile(amo, state, overlap, lambda lead: is_flagged(fm, lead, flag))
        repairs = [i for i in listed if i not in open_ids]
        if repairs:
            log.warning("registration.reconcile_repaired", lead_ids=repairs)
        result.count("reconcile_repairs", len(repairs))
        state["repairs_total"] = int(state.get("repairs_total", 0)) + len(repairs)
        state["reconciled_at"] = now
        found.update(listed)
    if open_ids - set(found):
        found.update({int(lead["id"]): lead for lead in amo.get_leads(sorted(open_ids - set(found)))})
    flagged = [lead for lead in found.values() if is_flagged(fm, lead, flag)]
    _save(ctx.store, state, fresh, now, overlap, {int(lead["id"]) for lead in flagged})
    return sorted(flagged, key=lambda lead: (int(lead.get("updated_at") or 0), int(lead["id"])))


def _apply(open_ids: set[int], fresh: list[dict]) -> set[int]:
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


def _reconcile(amo: Any, state: dict, overlap: int, flagged: Any) -> dict[int, dict]:
    """The flagged leads among those updated since the last reconciliation."""
    since = int(state["reconciled_at"])
    return {int(lead["id"]): lead for lead in amo.iter_leads_updated_since(since, overlap) if flagged(lead)}


def _save(store: Any, state: dict, fresh: list[dict], now: int, overlap: int, open_ids: set[int]) -> None:
    """The next read starts ``overlap`` before ``at``; the events of that overlap are remembered."""
    newest = max([int(e.get("created_at") or 0) for e in fresh] + [int(state["at"])])
    at = max(newest, now - overlap)
    seen = {**state["seen"], **{str(e["id"]): int(e.get("created_at") or 0) for e in fresh}}
    cursors.save_registration_events(store, {
        "at": at, "seen": {k: v for k, v in seen.items() if v >= at - overlap}, "open": sorted(open_ids),
        "reconciled_at": int(state["reconciled_at"]), "repairs_total": int(state.get("repairs_total", 0))})
