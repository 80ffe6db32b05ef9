"""F8: which 1C client a lead's «Заявка» is for, from the lead's main amoCRM contact and 1C's
clients (the rules and notes are ``domain.patients``; this module looks the candidates up, creates
the client the rules ask for, and writes its key back on the contact).

Reads: ``main_contacts`` fetches the main contacts of a batch of leads in one batched request
(``GET /api/v4/contacts?filter[id][]=…``; the leads' ``_embedded.contacts`` from ``with=contacts``,
re-read once for leads listed without it). ``choose`` then asks 1C for the contact's keyed client,
the clients holding its phones (one query on the contact information) and, only for a lead without
a phone, the clients of its name.

Writes, each with its intent in the journal before it and its confirmation after it:

* a new client in 1C (``client.creating`` -> POST -> ``client.created``). A SIGKILL after the POST
  leaves a client without its confirmation; the next run looks the patient up by phone (or by name
  when there is no phone) before creating, finds that client and uses it: no duplicate.
* the 1C client's key on the amoCRM contact (``contact.key_writing`` -> PATCH ->
  ``contact.key_written``), by ``write_keys`` once per batch of leads (PATCHes of up to 50
  contacts), only the configured field, and only when the contact had no live key:
  a key that leads to another patient (a parent's contact used for a child's lead) stays. A SIGKILL
  around the PATCH leaves the key written or not; either way the next lead of the patient finds the
  same client (by key, or by phone and name, and writes the key then). A refused or unconfirmed
  PATCH is journalled (``contact.key_failed``) and does not fail the registration.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from typing import Any

from amo1c_sync.domain import patients as rules
from amo1c_sync.errors import ConfigError, ItemError, RetriableError
from amo1c_sync.logs import get_logger
from amo1c_sync.store.journal import record

log = get_logger("amo1c_sync.jobs.patient")


@dataclass(frozen=True)
class Contact:
    """A lead's main contact as the rules read it."""

    id: int
    name: str = ""
    phones: tuple[str, ...] = ()
    key: str = ""  # what the «Клиент 1С» field holds; "" = nothing


@dataclass(frozen=True)
class Contacts:
    """The main contacts of a batch of leads, and the contact field that keeps the client key."""

    by_lead: dict[int, Contact | None] = field(default_factory=dict)
    key_field_id: int | None = None
    key_field_name: str = ""
    # keys chosen in this batch, written by write_keys: contact id -> (lead id, contact, 1C ref)
    pending: dict[int, tuple[int, Contact, str]] = field(default_factory=dict)

    def of(self, lead_id: int) -> Contact | None:
        return self.by_lead.get(int(lead_id))


@dataclass(frozen=True)
class Chosen:
    """The client a lead's «Заявка» is for, the note's lines about it, and the rule that chose it."""

    ref: str
    note: str | None  # the lines for the lead's note; None = nothing to say
    rule: rules.Rule


def main_contacts(amo: Any, leads: Iterable[dict[str, Any]], settings: Any) -> Contacts:
    """Once per batch of leads: their main contacts in one batched read (the main one when a lead
    has several: ``is_main``). Leads listed without ``with=contacts`` are re-read with it first."""
    leads = list(leads)
    missing = [int(x["id"]) for x in leads if "contacts" not in (x.get("_embedded") or {})]
    reread = {int(x["id"]): x for x in amo.get_leads(missing, with_=("contacts",))} if missing else {}
    main: dict[int, int | None] = {}
    for lead in leads:
        lid = int(lead["id"])
        links = ((reread.get(lid, lead).get("_embedded") or {}).get("contacts") or [])
        chosen = next((x for x in links if x.get("is_main")), links[0] if links else None)
        main[lid] = int(chosen["id"]) if chosen and chosen.get("id") is not None else None
    wanted = [cid for cid in main.values() if cid is not None]
    if not wanted:
        return Contacts({lid: None for lid in main})
    name = (settings.sync.contact_client_field or "").strip()
    key_field = _key_field(amo, name) if name else None
    found = {int(c["id"]): _contact(c, key_field) for c in amo.get_contacts(wanted)}
    return Contacts({lid: found.get(cid) if cid is not None else None for lid, cid in main.items()},
                    key_field, name)


def _key_field(amo: Any, name: str) -> int:
    fields = amo.list_contact_fields()
    hit = next((f for f in fields if str(f.get("name", "")).strip().casefold() == name.casefold()), None)
    if hit is None:
        raise ConfigError(f"[sync] contact_client_field: amoCRM has no contact field «{name}»; contact fields "
                          f"that exist: {', '.join(str(f.get('name')) for f in fields)}. `amo1c-sync setup "
                          "amocrm` creates it; empty = do not keep the 1C client on contacts")
    return int(hit["id"])


def _contact(c: dict[str, Any], key_field: int | None) -> Contact:
    phones: list[str] = []
    key = ""
    for cf in c.get("custom_fields_values") or []:
        values = [str(v.get("value") or "") for v in cf.get("values") or [] if isinstance(v, dict)]
        if cf.get("field_code") == "PHONE":
            phones.extend(v for v in values if v.strip())
        elif key_field is not None and cf.get("field_id") == key_field and values:
            key = values[0]
    return Contact(int(c["id"]), str(c.get("name") or ""), tuple(phones), key)


def choose(ctx: Any, result: Any, lead_id: int, lead_name: str, contacts: Contacts, *,
           default_client: Callable[[], Any], job: str = "registration",
           before_create: Callable[[], None] | None = None) -> Chosen:
    """The 1C client for the lead by the rules of ``domain.patients``: found, created, or the
    default one; its key is queued for the contact (when the contact had no live key) and written
    by ``write_keys`` at the end of the batch. ``before_create`` runs just before a client is
    created (the caller's check that it still leads and holds the lead)."""
    s, onec = ctx.settings, ctx.onec
    contact = contacts.of(lead_id)
    p = rules.patient(lead_name=lead_name, contact_name=contact.name if contact else "",
                      contact_phones=contact.phones if contact else (), contact_key=contact.key if contact else "",
                      region=s.sync.phone_region)
    by_key = onec.client(p.onec_key) if p.onec_key else None
    kw: dict[str, Any] = {"default_name": onec.names.default_client,
                          "key_label": contacts.key_field_name or "Клиент 1С", "region": s.sync.phone_region}
    decision = rules.choose_client(p, by_key=by_key, **kw)
    if decision.rule is not rules.Rule.KEY:
        by_phone = onec.clients_by_phones([ph.national for ph in p.phones]) if p.phones else []
        by_name = [_known(c) for c in onec.find_clients(p.name)] if p.needs_name_lookup else []
        decision = rules.choose_client(p, by_key=by_key, by_phone=by_phone, by_name=by_name, **kw)
    if isinstance(decision, rules.UseClient):
        ref = decision.client.ref
    elif isinstance(decision, rules.NewClient):
        if before_create is not None:
            before_create()
        ref = _create(ctx, result, lead_id, decision, job)
    else:
        ref = default_client().ref
    result.count(f"client_rule_{decision.rule.value}")
    keyed_elsewhere = by_key is not None and not by_key.deleted
    if contact is not None and contacts.key_field_id and not keyed_elsewhere \
            and not isinstance(decision, rules.DefaultClient) and ref.lower() != p.onec_key:
        contacts.pending[contact.id] = (lead_id, contact, ref)
    return Chosen(ref, decision.note or None, decision.rule)


def _known(c: Any) -> rules.KnownClient:
    return rules.KnownClient(ref=c.ref, code=c.code, name=c.name, deleted=c.deletion_mark)


def _create(ctx: Any, result: Any, lead_id: int, decision: rules.NewClient, job: str) -> str:
    phones = [ph.display for ph in decision.phones]
    record(ctx.store, job=job, system="1c", action="client.creating", lead_id=lead_id,
           message=f"создаётся клиент «{decision.name}»", detail={"name": decision.name, "phones": phones,
                                                                   "rule": decision.rule.value},
           run_id=result.run_id)
    item = ctx.onec.create_client(decision.name, decision.phones)
    record(ctx.store, job=job, system="1c", action="client.created", lead_id=lead_id, ref=item.ref,
           message=f"создан клиент «{item.name}»", detail={"code": item.code, "phones": phones,
                                                           "rule": decision.rule.value},
           run_id=result.run_id)
    result.count("clients_created")
    return str(item.ref)


def write_keys(ctx: Any, result: Any, contacts: Contacts, *, job: str = "registration") -> None:
    """Once per batch, after its leads: the chosen clients' keys on their contacts, in PATCHes of
    up to 50 contacts. A refused or unconfirmed one is journalled and counted, never raised: the
    key only saves the next lead a lookup."""
    if not contacts.pending or not contacts.key_field_id:
        return
    fid = contacts.key_field_id
    entries = {}
    for cid, (lead_id, _contact, ref) in contacts.pending.items():
        entries[cid] = {"job": job, "system": "amocrm", "lead_id": lead_id, "ref": ref, "run_id": result.run_id,
                        "detail": {"contact_id": cid, "field_id": fid}}
        record(ctx.store, action="contact.key_writing", message=f"ключ клиента 1С пишется в контакт {cid}",
               **entries[cid])
    patches = [{"id": cid, "custom_fields_values": [{"field_id": fid, "values": [{"value": ref}]}]}
               for cid, (_lead, _contact, ref) in contacts.pending.items()]
    contacts.pending.clear()
    try:
        outcome = ctx.amocrm.update_contacts(patches)
        failed: dict[int, Exception] = dict(outcome.failed)
        ok = set(outcome.ok)
    except (ItemError, RetriableError) as exc:
        failed, ok = {cid: exc for cid in entries}, set()
    for cid, entry in entries.items():
        if cid in ok and cid not in failed:
            record(ctx.store, action="contact.key_written", message=f"ключ клиента 1С записан в контакт {cid}",
                   **entry)
            result.count("contact_keys_written")
            continue
        error = failed.get(cid) or RetriableError(f"amoCRM did not confirm the update of contact {cid}")
        log.warning("patient.contact_key_failed", lead_id=entry["lead_id"], contact_id=cid, error=str(error))
        record(ctx.store, action="contact.key_failed", message=f"ключ клиента 1С не записан в контакт {cid}: "
               f"{error}", **entry)
        result.count("contact_keys_failed")
