"""`amo1c-sync status [--json]`: leader or standby, last runs, pending and failed items, token state."""

from __future__ import annotations

import sys

from sqlalchemy.exc import DBAPIError

from amo1c_sync.commands.common import open_existing_store, print_json, settings_from, store_location
from amo1c_sync.status import collect_status


def _when(iso: str | None) -> str:
    return iso.replace("T", " ").replace("+00:00", "Z") if iso else "-"


def _next_try(item: dict) -> str:
    """An item error (or given-up retries) is tried again when the lead or its document changes."""
    if item.get("retry") in ("item_error", "given_up"):
        return "on change"
    return _when(item["next_attempt_at"])


def _table(rows: list[list[str]], header: list[str]) -> list[str]:
    widths = [max(len(str(r[i])) for r in [header, *rows]) for i in range(len(header))]
    fmt = "  ".join(f"{{:<{w}}}" for w in widths)
    return [fmt.format(*header).rstrip(), *(fmt.format(*map(str, r)).rstrip() for r in rows)]


def _counts(run: dict) -> str:
    """A run's counts for a person: what changed, or "no changes" when every count is 0."""
    if not run:
        return "-"
    nonzero = {k: v for k, v in (run.get("counts") or {}).items() if v}
    if not nonzero:
        return "no changes"
    return " ".join(f"{k}={v}" for k, v in sorted(nonzero.items()))


def _job_row(name: str, j: dict) -> list[str]:
    r = j["last_run"] or {}
    if not r:
        success = "never ran"
    elif j["last_success_at"] is None:
        success = "never succeeded"
    else:
        success = _when(j["last_success_at"]) + (" STALE" if j["stale"] else "")
    return [name, r.get("status", "never ran"), _when(r.get("started_at")),
            f"{r['duration_s']:.1f}s" if r.get("duration_s") is not None else "-",
            _counts(r), success, (r.get("error") or "")[:80]]


def render(st: dict) -> str:
    out: list[str] = []
    out.append(f"store: {st.get('store_at') or st['store']}    config: {st['config']}    "
               f"at: {_when(st['generated_at'])}")
    leader = st.get("leader")
    if leader:
        out.append(f"leader:  {leader.get('host')} pid {leader.get('pid')} (heartbeat {leader['age_s']:.0f} s ago"
                   + (f", leader since {_when(leader.get('since'))}" if leader.get("since") else "") + ")")
    else:
        out.append(f"leader:  {st.get('role') or 'not running'}")
    for sb in st.get("standby") or []:
        out.append(f"standby: {sb.get('host')} pid {sb.get('pid')} (heartbeat {sb['age_s']:.0f} s ago)")
    out.append("")
    rows = [_job_row(name, j) for name, j in st["jobs"].items()]
    out += _table(rows, ["JOB", "LAST RUN", "STARTED", "TOOK", "COUNTS", "LAST SUCCESS", "ERROR"])
    out.append("")
    for title, items in (("pending", st["pending"]), ("failed", st["failed"])):
        if not items:
            out.append(f"{title}: none")
            continue
        out.append(f"{title}: {len(items)}")
        out += ["  " + line for line in _table(
            [[i["kind"], i["lead_id"], i["status"], i["attempts"], _next_try(i),
              (f"{i['code']}: " if i.get("code") else "") + (i["error"] or "")[:100]] for i in items],
            ["KIND", "LEAD", "STATUS", "TRIES", "NEXT TRY", "REASON"])]
    docs = st["skipped_documents"]
    out.append(f"skipped documents: {st['skipped_documents_total'] or 'none'}")
    if docs:
        out += ["  " + line for line in _table(
            [[d["number"] or d["ref"], d["date"] or "-", d["amount"] or "-", d["reason"]] for d in docs],
            ["DOCUMENT", "DATE", "AMOUNT", "REASON"])]
    cd = st.get("change_detection")
    if cd:
        out.append(f"flagged leads: events read up to {_when(cd['events_cursor_at'])}, "
                   f"{len(cd['open_leads'])} open; last reconciliation {_when(cd['last_reconciliation_at'])}, "
                   f"repairs so far: {cd['reconcile_repairs_total']}")
    out += _lifecycle_lines(st.get("lifecycle") or {})
    tokens = st["tokens"]
    if not tokens:
        none = ("long-lived token (from config)" if st["amocrm_auth"] != "oauth"
                else "none stored; run `amo1c-sync auth --code CODE`")
        out.append(f"amoCRM token: {none}")
    for t in tokens:
        state = ("REVOKED: " + t["revoked_reason"]) if t["revoked_reason"] else (
            "expired (refreshed on next use)" if t["expired"] else "valid")
        out.append(f"amoCRM token {t['account']}: {state}; expires {_when(t['expires_at'])}; "
                   f"generation {t['generation']}")
    return "\n".join(out)


def _lifecycle_lines(lc: dict) -> list[str]:
    out = [f"lifecycle: {lc.get('followed', 0)} «Заявки» followed, {lc.get('pending', 0)} writes under way, "
           f"{lc.get('cancels_under_way', 0)} cancels from the card under way; "
           f"skipped: {lc.get('skipped') or 'none'}"]
    rows = lc.get("skipped_zayavki") or []
    if rows:
        out += ["  " + line for line in _table(
            [[r["number"] or r["ref"], r["lead_id"] or "-", r["reason"]] for r in rows],
            ["ZAYAVKA", "LEAD", "REASON"])]
    return out


def main(args) -> int:
    settings = settings_from(args, say_which=True)
    store = open_existing_store(settings)
    try:
        st = collect_status(store, settings)
    except DBAPIError as exc:
        first = str(exc.orig if exc.orig is not None else exc).splitlines()[0]
        print(f"cannot read the state store ({store.dialect}): {first}; if it was made by an older "
              "amo1c-sync, run `amo1c-sync db upgrade`", file=sys.stderr)
        return 1
    st["store_at"] = store_location(store)
    if args.json:
        print_json(st)
    else:
        print(render(st))
    return 0
