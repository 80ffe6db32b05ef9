"""`amo1c-sync setup amocrm [--dry-run]` and `amo1c-sync setup 1c [--create-defaults]`: the guided
set-up of both systems.

amoCRM: every lead field the integration needs ([fields] names) that the account lacks is created
with its type (POST /api/v4/leads/custom_fields), and so is the contact field that keeps the 1C
client key ([sync] contact_client_field; POST /api/v4/contacts/custom_fields); an existing field is
never changed or deleted —
one of the wrong type is reported for a person to decide. 1C: the publication's service root and
the objects' properties (one object, or $metadata when a set is empty) say which configured
objects and attributes are published; the two default items are created only with
--create-defaults. Every line says what was found, done or would be done; exit 1 while something
is still missing."""

from __future__ import annotations

import sys
from dataclasses import dataclass
from datetime import time

from amo1c_sync.commands.common import StoreMissing, open_existing_store, settings_from
from amo1c_sync.domain.dates import format_time
from amo1c_sync.errors import Amo1cError
from amo1c_sync.store import Store

# [fields] key -> the amoCRM field type registration and payments expect of it
FIELD_TYPES = {
    "date": "date",
    "doctor": "select",
    "time": "select",
    "client_name": "text",
    "sum": "numeric",
    "flag": "checkbox",
    "zayavka_number": "text",
    "cancel_flag": "checkbox",
}
# types a field of that key may also have (F4: «Врач» and «Время записи» may be plain text fields)
ALSO_FINE = {"doctor": {"text"}, "time": {"text"}, "zayavka_number": {"numeric", "textarea"}}
GRID_FROM, GRID_TO = time(8, 0), time(20, 0)  # «Время записи» until the directory job syncs it


@dataclass(frozen=True)
class FieldPlan:
    """One lead field `setup amocrm` needs: whether it exists, is to be created, or has the wrong type."""

    key: str
    name: str
    type: str
    action: str            # "exists", "create", "wrong_type"
    found_type: str | None = None
    field_id: int | None = None


def plan_fields(field_names, existing: list[dict]) -> list[FieldPlan]:
    """Pure: what to do for each configured lead field, given the account's fields."""
    by_name: dict[str, dict] = {}
    for f in existing:
        by_name.setdefault(str(f.get("name", "")).strip().casefold(), f)
    out = []
    for key, ftype in FIELD_TYPES.items():
        name = (getattr(field_names, key, "") or "").strip()
        if not name:
            continue  # an optional field left empty is switched off
        have = by_name.get(name.casefold())
        if have is None:
            out.append(FieldPlan(key, name, ftype, "create"))
        elif have.get("type") == ftype or have.get("type") in ALSO_FINE.get(key, ()):
            out.append(FieldPlan(key, name, ftype, "exists", have.get("type"), have.get("id")))
        else:
            out.append(FieldPlan(key, name, ftype, "wrong_type", have.get("type"), have.get("id")))
    return out


def time_grid(step_minutes: int) -> list[str]:
    minutes = range(GRID_FROM.hour * 60 + GRID_FROM.minute, GRID_TO.hour * 60 + GRID_TO.minute + 1, step_minutes)
    return [format_time(time(m // 60, m % 60)) for m in minutes]


def field_body(plan: FieldPlan, options: list[str]) -> dict:
    body: dict = {"name": plan.name, "type": plan.type}
    if plan.type == "select":
        body["enums"] = [{"value": v, "sort": (i + 1) * 10} for i, v in enumerate(options)]
    return body


# ------------------------------------------------------------------------------------ amoCRM
def _amocrm_gateway(settings):
    from amo1c_sync import amocrm

    a = settings.amocrm
    try:
        store = open_existing_store(settings)
    except StoreMissing:  # a long-lived token needs none; OAuth then says "no token"
        store = Store("sqlite://")
        store.upgrade()
    return amocrm.AmoCRM(a.base_url, token_manager=amocrm.token_manager_from_settings(settings, store),
                         rate_limiter=amocrm.shared_rate_limiter(a.base_url, a.rate_limit),
                         connect_timeout=a.connect_timeout, read_timeout=a.read_timeout,
                         max_retries=2, backoff_max=5)


def _select_options(settings, plans: list[FieldPlan]) -> dict[str, list[str]]:
    """Options for new select fields: the 1C doctors for «Врач» (the directory job keeps them equal
    to 1C afterwards), the time grid for «Время записи»."""
    out: dict[str, list[str]] = {}
    if any(p.key == "doctor" and p.action == "create" for p in plans):
        with _onec_gateway(settings) as gw:
            out["doctor"] = [d.name for d in gw.doctors()]
    out["time"] = time_grid(settings.sync.slot_step_minutes)
    return out


CONTACT_FIELD_KEY = "contact_client_field"
CONTACT_FIELD_TYPES = ("text", "textarea")  # it holds a 1C client's key (a GUID)


def plan_contact_field(name: str, existing: list[dict]) -> FieldPlan | None:
    """Pure: what to do for the contact field that keeps the 1C client key (None when it is off)."""
    name = (name or "").strip()
    if not name:
        return None
    have = next((f for f in existing if str(f.get("name", "")).strip().casefold() == name.casefold()), None)
    if have is None:
        return FieldPlan(CONTACT_FIELD_KEY, name, "text", "create")
    action = "exists" if have.get("type") in CONTACT_FIELD_TYPES else "wrong_type"
    return FieldPlan(CONTACT_FIELD_KEY, name, "text", action, have.get("type"), have.get("id"))


def _setup_contact_field(gw, settings, *, dry_run: bool, out) -> tuple[bool, int]:
    """The contact field «Клиент 1С» ([sync] contact_client_field): (something to create, problems)."""
    name = (settings.sync.contact_client_field or "").strip()
    plan = plan_contact_field(name, gw.list_contact_fields(max_age=0)) if name else None
    if plan is None:
        return False, 0
    where = f"[sync] {CONTACT_FIELD_KEY} (a contact field)"
    if plan.action == "exists":
        out(f"exists        «{plan.name}» ({plan.found_type}, id {plan.field_id})  {where}")
    elif plan.action == "wrong_type":
        out(f"WRONG TYPE    «{plan.name}» is a {plan.found_type} contact field (id {plan.field_id}); the "
            f"integration needs a text field. Left as it is: name another field in [sync] "
            f"{CONTACT_FIELD_KEY} and run this again")
        return False, 1
    elif dry_run:
        out(f"would create  «{plan.name}» (text)  {where}")
    else:
        made = gw.create_contact_fields([{"name": plan.name, "type": "text"}])
        out(f"created       «{plan.name}» (text, id {(made[0] if made else {}).get('id', '?')})  {where}")
    return plan.action == "create", 0


def setup_amocrm(settings, *, dry_run: bool, out=print) -> int:
    gw = _amocrm_gateway(settings)
    plans = plan_fields(settings.fields, gw.list_lead_fields())
    creating = [p for p in plans if p.action == "create"]
    options = _select_options(settings, plans) if creating else {}
    problems = 0
    for p in plans:
        if p.action == "exists":
            out(f"exists        «{p.name}» ({p.found_type}, id {p.field_id})  [fields] {p.key}")
        elif p.action == "wrong_type":
            problems += 1
            out(f"WRONG TYPE    «{p.name}» is a {p.found_type} field (id {p.field_id}); the integration needs "
                f"a {p.type} field. Left as it is: change it in amoCRM (Настройки -> Поля), or name "
                f"another field in [fields] {p.key} and run this again")
    if creating and not dry_run:
        bodies = [field_body(p, options.get(p.key, [])) for p in creating]
        created = {f.get("name"): f for f in gw.create_lead_fields(bodies)}
        for p in creating:
            f = created.get(p.name) or {}
            out(f"created       «{p.name}» ({p.type}, id {f.get('id', '?')})  [fields] {p.key}"
                + (f" with {len(options.get(p.key, []))} options" if p.type == "select" else ""))
    for p in creating if dry_run else ():
        out(f"would create  «{p.name}» ({p.type})  [fields] {p.key}"
            + (f" with {len(options.get(p.key, []))} options" if p.type == "select" else ""))
    contact_creating, contact_problems = _setup_contact_field(gw, settings, dry_run=dry_run, out=out)
    problems += contact_problems
    if not creating and not contact_creating and not problems:
        out("amoCRM: every lead and contact field the integration needs exists; nothing to do")
    return 1 if problems else 0


# ------------------------------------------------------------------------------------ 1C
def wanted_objects(n) -> list[tuple[str, str, tuple[str, ...]]]:
    """(what it is for, entity set, attributes the integration reads or writes) per configured object."""
    return [
        ("doctors (read)", n.doctors, ("Ref_Key", "Code", "Description", "DeletionMark")),
        ("clients (read, create)", n.clients, ("Ref_Key", "Code", "Description", "DeletionMark")),
        ("clients' contact information (phone search, new clients' phones)", n.client_contacts_set,
         ("Ref_Key", "LineNumber", n.client_contact_type, n.client_contact_phone, n.client_contact_presentation)),
        ("nomenclature (read)", n.nomenclature, ("Ref_Key", "Code", "Description", "DeletionMark")),
        ("«Заявка» (read, create, change, post)", n.zayavka,
         ("Ref_Key", "Number", "Date", "Posted", "DeletionMark", n.zayavka_client, n.zayavka_doctor,
          n.zayavka_date, n.zayavka_start, n.zayavka_end, n.zayavka_lead, n.zayavka_nomenclature)),
        ("«Оказание услуг» (read)", n.services,
         ("Ref_Key", "Number", "Date", "Posted", "DeletionMark", *n.services_base_fields, n.services_amount)),
        ("«Оказание услуг» lines (read)", n.services_lines_set,
         ("Ref_Key", n.services_line_nomenclature, n.services_line_quantity, n.services_line_price,
          n.services_line_sum)),
        ("«Установка графиков работы» (read)", n.schedules, ("Ref_Key", "Posted", n.schedules_month)),
        ("schedule lines (read)", n.schedules_lines_set,
         ("Ref_Key", n.schedule_doctor, n.schedule_date, n.schedule_start, n.schedule_end)),
    ]


ENABLE = ("publish it: Designer -> Administration -> Publish to web server -> «Publish standard "
          "OData interface», and add the object to the interface's composition "
          "(УстановитьСоставСтандартногоИнтерфейсаOData; see docs/setup-1c.md)")


def _report_objects(gw, out) -> int:
    from amo1c_sync.onec import diagnostics

    published = set(diagnostics.entity_sets(gw))
    missing = 0
    for what, entity_set, attrs in wanted_objects(gw.names):
        if entity_set not in published:
            missing += 1
            out(f"MISSING       {entity_set} — {what}: not published; {ENABLE}")
            continue
        have = diagnostics.attributes(gw, entity_set)
        lacking = [a for a in dict.fromkeys(attrs) if have is not None and a not in have]
        if have is not None and lacking:
            missing += 1
            out(f"MISSING       {entity_set} — {what}: no attribute {', '.join(f'«{a}»' for a in lacking)}; "
                f"fix the name in [onec_names] (it has: {', '.join(sorted(have))})")
        else:
            out(f"published     {entity_set} — {what}")
    return missing


def _report_defaults(gw, *, create: bool, out) -> int:
    n = gw.names
    missing = 0
    for what, entity_set, name, find in (("client", n.clients, n.default_client, gw.default_client),
                                         ("nomenclature item", n.nomenclature, n.default_nomenclature,
                                          gw.default_nomenclature)):
        item = find()
        if item is not None:
            out(f"exists        {what} «{name}» in {entity_set} (code {item.code})")
        elif create:
            made = gw.create_catalog_item(entity_set, name)
            out(f"created       {what} «{name}» in {entity_set} (code {made.code})")
        else:
            missing += 1
            out(f"MISSING       {what} «{name}» in {entity_set}; `amo1c-sync setup 1c --create-defaults` "
                "creates it (or create it in 1C and set [onec_names] to its name)")
    return missing


def _onec_gateway(settings):
    """The jobs' gateway, with fewer retries: a person waits for the answer."""
    from amo1c_sync import onec

    o, base = settings.onec, onec.from_settings(settings)
    base.close()
    return onec.OneC(o.base_url, o.username, o.password or "", names=base.names,
                     connect_timeout=o.connect_timeout, read_timeout=o.read_timeout,
                     max_retries=1, backoff_max=2, timezone=settings.sync.timezone)


def setup_onec(settings, *, create_defaults: bool, out=print) -> int:
    with _onec_gateway(settings) as gw:
        missing = _report_objects(gw, out)
        if missing:
            out("1C: the defaults are checked once the objects above are published")
            return 1
        missing += _report_defaults(gw, create=create_defaults, out=out)
    out("1C: the user also needs the right to post «Заявка» (Проведение); setup cannot see rights: "
        "`amo1c-sync once` reports a refused post")
    return 1 if missing else 0


def main(args) -> int:
    settings = settings_from(args, say_which=True)
    try:
        if args.setup_command == "amocrm":
            return setup_amocrm(settings, dry_run=args.dry_run)
        return setup_onec(settings, create_defaults=args.create_defaults)
    except Amo1cError as exc:
        action = getattr(exc, "action", None)
        print(f"amo1c-sync setup {args.setup_command}: {exc}" + (f"; what to do: {action}" if action else ""),
              file=sys.stderr)
        return 1
