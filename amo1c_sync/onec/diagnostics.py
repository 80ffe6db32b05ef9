"""`amo1c-sync check` and `setup 1c`: what the 1C publication serves and whether the configured
names (``[onec_names]``) exist there. Read-only; kept out of the gateway, which the jobs use.

An unknown entity set is reported with the entity sets of its kind that exist, an unknown
attribute with the attributes its entity set has, so a person can fix sync.ini from the message.
"""

# ruff: noqa: SLF001 - the 1C package's own diagnostics read through OneC's request helpers
# (_request, _get, _describe) and its select lists; they stay private, and keep their names,
# because the jobs' gateway methods call them too

from __future__ import annotations

import difflib
import io
from typing import Any, Iterable
from xml.etree import ElementTree

import structlog

from amo1c_sync.errors import ItemError, RetriableError
from amo1c_sync.onec import query as q
from amo1c_sync.onec.gateway import OneC
from amo1c_sync.onec.names import OneCNames

log = structlog.get_logger("amo1c_sync.onec")

_UNSET: Any = object()


def entity_sets(gw: OneC) -> list[str]:
    """The entity sets this publication serves, from the OData service document (the service
    root: ``{"value": [{"name": "Catalog_…", "url": "Catalog_…"}, …]}``)."""
    resp = gw._request("GET", "?$format=json")
    body = resp.body
    value = body.get("value") if isinstance(body, dict) else None
    if not isinstance(value, list):
        raise RetriableError(f"1C's service document has no list of entity sets: "
                             f"{gw._describe('GET', '?$format=json')}")
    out = []
    for entry in value:
        if isinstance(entry, dict) and (entry.get("name") or entry.get("url")):
            out.append(str(entry.get("name") or entry.get("url")))
    return out


def attributes(gw: OneC, entity_set: str) -> list[str] | None:
    """The properties of ``entity_set``: the keys of one of its objects, or, when the set is
    empty, the ``Property`` list of its type in ``$metadata`` (big on a real base: read only
    then). None when neither tells."""
    rows = gw._get(q.Query(entity_set, top=1))
    if rows and isinstance(rows[0], dict):
        return [k for k in rows[0] if "@" not in k and not k.startswith("odata.")]
    return _metadata_properties(gw._request("GET", "$metadata", raw=True).body, entity_set)


def check_names(gw: OneC) -> list[str]:
    """Problems with the configured names (unknown entity sets/attributes, missing default
    items), as messages for `amo1c-sync check`; empty when all is well. An unknown entity set
    is reported with the entity sets of its kind that exist, an unknown attribute with the
    attributes its entity set has."""
    n = gw.names
    probes = [
        ("doctors", n.doctors, gw._CATALOG_FIELDS), ("clients", n.clients, gw._CATALOG_FIELDS),
        ("nomenclature", n.nomenclature, gw._CATALOG_FIELDS),
        ("client_contacts", n.client_contacts_set, gw._contact_columns(n)),
        ("zayavka", n.zayavka, gw._zayavka_fields()),
        ("services", n.services, ("Ref_Key", *n.services_base_fields, n.services_amount)),
        ("schedules", n.schedules, ("Ref_Key", n.schedules_month)),
        ("schedules_lines", n.schedules_lines_set,
         ("Ref_Key", n.schedule_doctor, n.schedule_date, n.schedule_start, n.schedule_end)),
    ]
    problems = []
    known: Any = _UNSET   # the entity sets that exist; read once, on the first failure
    root_error: Exception | None = None
    failed: set[str] = set()
    for key, entity_set, select in probes:
        if key == "client_contacts" and "clients" in failed:
            continue  # a section of the clients catalog: the clients' problem says it all
        try:
            gw._get(q.Query(entity_set, select=select, top=1))
            continue
        except ItemError as exc:
            failure = exc
            failed.add(key)
        if known is _UNSET:
            try:
                known = entity_sets(gw)
            except (ItemError, RetriableError) as exc:
                log.warning("onec.entity_sets_unavailable", error=str(exc))
                known, root_error = None, exc
        problems.append(_explain(gw, key, entity_set, select, failure, known))
    if failed >= {k for k, _, _ in probes if k != "client_contacts"} and isinstance(root_error, ItemError):
        # not even the service root answers: a wrong base_url, not seven wrong names
        return [("the OData service root does not answer, so no configured name can be checked: "
                 f"{root_error}")]
    if not problems:
        if gw.default_client() is None:
            problems.append(f"no client «{n.default_client}» in {n.clients}")
        if gw.default_nomenclature() is None:
            problems.append(f"no item «{n.default_nomenclature}» in {n.nomenclature}")
    return problems


def _explain(gw: OneC, key: str, entity_set: str, select: Iterable[str], failure: ItemError,
             known: list[str] | None) -> str:
    """The message for a failed probe: 1C's own words plus the names that do exist."""
    if known is None:
        return str(failure)
    if entity_set not in known:
        kind = entity_set.split("_", 1)[0] + "_"
        if key == "schedules_lines" and gw.names.schedules in known:
            kind = gw.names.schedules + "_"   # a tabular section: list that document's sections
        same = [s for s in known if s.startswith(kind)] or known
        return (f"[onec_names] {key}: 1C has no entity set «{entity_set}» ({failure}). "
                f"{kind.rstrip('_')} entity sets that exist: {_listing(same, entity_set)}")
    try:
        attrs = attributes(gw, entity_set)
    except (ItemError, RetriableError) as exc:
        log.warning("onec.attributes_unavailable", entity_set=entity_set, error=str(exc))
        attrs = None
    if attrs is None:
        return str(failure)
    missing = [a for a in dict.fromkeys(select) if a not in attrs]
    if not missing:
        return str(failure)
    names = ", ".join(f"«{a}»" for a in missing)
    keys = [k for k in dict.fromkeys(_config_key(gw, key, a) for a in missing) if k]
    where = f"[onec_names] {', '.join(keys)}: " if keys else "1C: "
    return (f"{where}{entity_set} has no attribute {names} ({failure}). "
            f"Attributes of {entity_set} that exist: {_listing(attrs, missing[0])}")


def _config_key(gw: OneC, probe: str, attribute: str) -> str | None:
    """The ``[onec_names]`` key that names ``attribute`` in the probe of ``probe``."""
    prefix = {"zayavka": "zayavka_", "services": "services_", "schedules": "schedules_",
              "schedules_lines": "schedule_", "client_contacts": "client_contact"}.get(probe)
    if prefix is None:
        return None
    for name in OneCNames.field_names():
        if not name.startswith(prefix):
            continue
        if getattr(gw.names, name) == attribute or (
                name == "services_base" and attribute in gw.names.services_base_fields):
            return name
    return None


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
