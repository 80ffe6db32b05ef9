"""1C's default answer format: Atom/AtomPub XML (built with the standard library's ElementTree).

«Если ключевое слово [$format] не указано, данные получаются в формате atom-xml» (the 1C OData
docs, 17.4.1; see :mod:`.schema`). The shapes follow the docs' examples: a ``<feed>`` of
``<entry>`` elements for a set (with ``<m:count>`` under ``$inlinecount=allpages``, 17.4.6.2), an
``<entry>`` with ``<link rel=".../related/X">`` per navigation property, ``<link rel="edit">`` and
``<content type="application/xml"><m:properties>`` of ``<d:Name>`` values (17.4.13.1.2); the
service root is an AtomPub ``<service>`` with a ``<collection>`` per entity set.
"""

from __future__ import annotations

from datetime import datetime, timezone
from decimal import Decimal
from typing import Any
from xml.etree import ElementTree as ET

from werkzeug.wrappers import Response

from amo1c_sync.sandbox.onec_emulator.schema import EntityType, nav_name

ATOM = "http://www.w3.org/2005/Atom"
APP = "http://www.w3.org/2007/app"
D = "http://schemas.microsoft.com/ado/2007/08/dataservices"
M = "http://schemas.microsoft.com/ado/2007/08/dataservices/metadata"
SCHEME = "http://schemas.microsoft.com/ado/2007/08/dataservices/scheme"
RELATED = "http://schemas.microsoft.com/ado/2007/08/dataservices/related/"
XML_BASE = "{http://www.w3.org/XML/1998/namespace}base"
ENTRY_TYPE = "application/atom+xml;type=entry;charset=utf-8"

for _prefix, _uri in (("atom", ATOM), ("app", APP), ("d", D), ("m", M)):
    ET.register_namespace(_prefix, _uri)


def _q(ns: str, tag: str) -> str:
    return f"{{{ns}}}{tag}"


def xml_response(root: ET.Element, content_type: str) -> Response:
    """Namespace-qualified XML; each namespace with a prefix (ElementTree writes no default one
    when attributes are unqualified), which a namespace-aware reader takes as the same document."""
    body = ET.tostring(root, encoding="utf-8", xml_declaration=True)
    return Response(body, content_type=f"{content_type};charset=utf-8")


def service(root_url: str, sets: list[str]) -> Response:
    svc = ET.Element(_q(APP, "service"), {XML_BASE: root_url})
    workspace = ET.SubElement(svc, _q(APP, "workspace"))
    ET.SubElement(workspace, _q(ATOM, "title")).text = "Default"
    for name in sets:
        coll = ET.SubElement(workspace, _q(APP, "collection"), {"href": name})
        ET.SubElement(coll, _q(ATOM, "title")).text = name
    return xml_response(svc, "application/atomsvc+xml")


def feed(root_url: str, set_name: str, etype: EntityType | None, rows: list[dict],
         count: int | None) -> Response:
    doc = ET.Element(_q(ATOM, "feed"), {XML_BASE: root_url})
    ET.SubElement(doc, _q(ATOM, "id")).text = root_url + set_name
    ET.SubElement(doc, _q(ATOM, "title"), {"type": "text"}).text = set_name
    ET.SubElement(doc, _q(ATOM, "updated")).text = _now()
    ET.SubElement(doc, _q(ATOM, "link"), {"rel": "self", "href": set_name, "title": set_name})
    for row in rows:
        doc.append(entry_element(root_url, set_name, etype, row))
    if count is not None:
        ET.SubElement(doc, _q(M, "count")).text = str(count)
    return xml_response(doc, "application/atom+xml")


def entry(root_url: str, set_name: str, etype: EntityType | None, row: dict) -> Response:
    element = entry_element(root_url, set_name, etype, row)
    element.set(XML_BASE, root_url)
    return xml_response(element, "application/atom+xml")


def entry_element(root_url: str, set_name: str, etype: EntityType | None, row: dict) -> ET.Element:
    key = _key(set_name, row)
    element = ET.Element(_q(ATOM, "entry"))
    ET.SubElement(element, _q(ATOM, "id")).text = root_url + key
    ET.SubElement(element, _q(ATOM, "category"), {"term": f"StandardODATA.{set_name}", "scheme": SCHEME})
    ET.SubElement(element, _q(ATOM, "title"), {"type": "text"})
    ET.SubElement(element, _q(ATOM, "updated")).text = _now()
    ET.SubElement(element, _q(ATOM, "author"))
    ET.SubElement(element, _q(ATOM, "summary"))
    for ref_prop in (etype.refs if etype else {}):
        nav = nav_name(ref_prop)
        ET.SubElement(element, _q(ATOM, "link"), {"rel": RELATED + nav, "href": f"{key}/{nav}",
                                                  "type": ENTRY_TYPE, "title": nav})
    ET.SubElement(element, _q(ATOM, "link"), {"rel": "edit", "href": key, "title": "edit link"})
    content = ET.SubElement(element, _q(ATOM, "content"), {"type": "application/xml"})
    props = ET.SubElement(content, _q(M, "properties"))
    for name, value in row.items():
        if "@" not in name and not isinstance(value, dict):  # links are <link>s here; no inline $expand
            _property(props, etype, name, value)
    return element


def _property(parent: ET.Element, etype: EntityType | None, name: str, value: Any) -> None:
    if isinstance(value, list):  # a tabular section inside its document
        prop = ET.SubElement(parent, _q(D, name), {
            _q(M, "type"): f"Collection(StandardODATA.{etype.name if etype else ''}_{name}_RowType)"})
        for line in value:
            element = ET.SubElement(prop, _q(D, "element"))
            for k, v in line.items():
                if "@" not in k:
                    _property(element, None, k, v)
        return
    prop = ET.SubElement(parent, _q(D, name))
    if value is None:
        prop.set(_q(M, "null"), "true")
    else:
        prop.text = _text(value)


def _text(value: Any) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, Decimal):
        return format(value, "f")
    return str(value)


def _key(set_name: str, row: dict) -> str:
    if "LineNumber" in row:
        return f"{set_name}(Ref_Key=guid'{row['Ref_Key']}', LineNumber={row['LineNumber']})"
    return f"{set_name}(guid'{row['Ref_Key']}')"


def _now() -> str:
    return datetime.now(timezone.utc).strftime("%Y-%m-%dT%H:%M:%S")
