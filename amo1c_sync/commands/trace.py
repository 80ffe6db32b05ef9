"""`amo1c-sync trace LEAD_ID [--json]`: every journal entry for a lead, both directions, with its
registration and payment-total rows and the 1C documents counted for it."""

from __future__ import annotations

from datetime import timezone
from decimal import Decimal, InvalidOperation
from typing import Any

from amo1c_sync.commands.common import open_existing_store, print_json, settings_from
from amo1c_sync.domain.totals import sum_field_value
from amo1c_sync.store import journal, lifecycle, payments, registrations
from amo1c_sync.store import retry as retries


def _iso(dt) -> str | None:
    return dt.astimezone(timezone.utc).isoformat(timespec="seconds") if dt else None


def _failure(item, note: str | None) -> dict[str, Any]:
    if item is None:
        return {"error": note, "code": None, "retry": None, "attempts": 0, "next_attempt_at": None}
    return {"error": item.error, "code": item.code, "retry": item.state, "attempts": item.attempts,
            "next_attempt_at": _iso(item.next_attempt_at)}


def collect_trace(store, lead_id: int) -> dict[str, Any]:
    """Everything recorded for a lead, through the store's readers (those the jobs write with)."""
    reg, reg_failure = registrations.get(store, lead_id)
    total = payments.total_of(store, lead_id)
    total_failure = retries.failure_of(store, retries.PAYMENT, lead_id)
    entries = [
        {"id": e.id, "at": _iso(e.at), "job": e.job, "system": e.system, "action": e.action,
         "direction": "-> 1C" if e.system == "1c" else "-> amoCRM" if e.system == "amocrm" else "store",
         "ref": e.ref, "message": e.message, "detail": e.detail or {}, "run_id": e.run_id}
        for e in journal.of_lead(store, lead_id)
    ]
    return {
        "lead_id": lead_id,
        "registration": None if reg is None else {
            "status": reg.status, "zayavka_number": reg.zayavka_number, "zayavka_ref": reg.zayavka_ref,
            **_failure(reg_failure, reg.error), "updated_at": _iso(reg.updated_at)},
        "payment_total": None if total is None else {
            "status": total.status,
            "pushed_total": None if total.pushed_total is None else format(total.pushed_total, "f"),
            "pushed_at": _iso(total.pushed_at), **_failure(total_failure, None),
            "updated_at": _iso(total.updated_at)},
        "documents": [
            {"ref": d.ref, "number": d.number, "date": d.doc_date.isoformat() if d.doc_date else None,
             "amount": None if d.amount is None else format(d.amount, "f"), "posted": d.posted,
             "deletion_mark": d.deletion_mark, "skip_reason": d.skip_reason}
            for d in payments.documents_of(store, lead_id)],
        "lifecycle": [
            {"ref": f.ref, "number": f.number, "data_version": f.data_version,
             "mirrored": lifecycle.to_json(f.mirrored), "stages_passed": list(f.passed),
             "handled": list(f.done), "pending": f.pending is not None, "skip_reason": f.skip_reason}
            for f in lifecycle.of_lead(store, lead_id)],
        "journal": entries,
    }


def _as_lead_holds(amount: str | None) -> str | None:
    """Money as «Сумма1С» on the lead shows it ("150", not "150.00")."""
    if amount in (None, ""):
        return None
    try:
        return sum_field_value(Decimal(str(amount)))
    except (InvalidOperation, ValueError):
        return str(amount)


def _message(e: dict[str, Any], sum_name: str) -> str:
    d = e.get("detail") or {}
    if e["action"] == "lead.total_pushed" and "new_total" in d:
        old = _as_lead_holds(d.get("old_total"))
        return (f"«{sum_name}» {old if old is not None else 'empty'} -> {_as_lead_holds(d['new_total'])}"
                f", budget {d.get('price', '-')}")
    return e["message"] or ""


def render(tr: dict[str, Any], *, sum_name: str = "Сумма1С") -> str:
    out = [f"lead {tr['lead_id']}"]
    reg = tr["registration"]
    if reg:
        line = f"  registration: {reg['status']}"
        if reg["zayavka_number"]:
            line += f", «Заявка» № {reg['zayavka_number']}"
        if reg["error"]:
            line += f"; {reg['error']} (tries {reg['attempts']}, next {reg['next_attempt_at'] or '-'})"
        out.append(line)
    else:
        out.append("  registration: none")
    pt = tr["payment_total"]
    if pt:
        line = (f"  payment total: {pt['status']}, pushed {_as_lead_holds(pt['pushed_total']) or '-'} "
                f"at {pt['pushed_at'] or '-'}")
        if pt["error"]:
            line += f"; {pt['error']} (tries {pt['attempts']}, next {pt['next_attempt_at'] or '-'})"
        out.append(line)
    else:
        out.append("  payment total: none")
    for d in tr["documents"]:
        out.append(f"  document {d['number'] or d['ref']} {d['date'] or ''} amount "
                   f"{_as_lead_holds(d['amount']) or '-'}"
                   + (" posted" if d["posted"] else " not posted")
                   + (f" — skipped: {d['skip_reason']}" if d["skip_reason"] else ""))
    for z in tr.get("lifecycle") or []:
        m = z["mirrored"] or {}
        state = ("skipped: " + z["skip_reason"]) if z["skip_reason"] else (
            f"{m.get('day')} {str(m.get('start', ''))[:5]} {m.get('doctor', '')}"
            + (" deleted" if m.get("deleted") else "" if m.get("posted", True) else " unposted")
            + (f" «{m['state']}»" if m.get("state") else ""))
        out.append(f"  lifecycle «Заявка» {z['number']}: {state}; handled {', '.join(z['handled']) or '-'}"
                   + ("; write under way" if z["pending"] else ""))
    if not tr["journal"]:
        out.append("  journal: nothing recorded for this lead")
    for e in tr["journal"]:
        out.append(f"  {e['at']}  {e['direction']:<9}  {e['action']:<22} {_message(e, sum_name)}"
                   + (f" [{e['ref']}]" if e["ref"] else ""))
    return "\n".join(out)


def main(args) -> int:
    settings = settings_from(args, say_which=True)
    store = open_existing_store(settings)
    tr = collect_trace(store, args.lead_id)
    if args.json:
        print_json(tr)
    else:
        print(render(tr, sum_name=settings.fields.sum or "Сумма1С"))
    found = tr["journal"] or tr["registration"] or tr["payment_total"] or tr["documents"] or tr["lifecycle"]
    return 0 if found else 1
