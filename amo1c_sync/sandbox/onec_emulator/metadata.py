"""``$metadata``: CSDL as 1C publishes it (built with the standard library's ElementTree).

An EntityType per object and per tabular section (key ``Ref_Key``, plus ``LineNumber``, an
``Edm.Int64``, for a section), a ``…_RowType`` ComplexType per section that the owner's
collection property refers to, a ``NavigationProperty`` per reference with its ``Association``
(``Multiplicity="0..1"`` at the target) and ``AssociationSet``, and the EntitySets in the
EnterpriseV8 container — the shape of 1C's own EDMX (1C OData docs 17.4.7; the EDMX fixtures of
hacker-cb/1c-odata, packages/cli/test/codegen/fixtures/02-document-with-fi.xml).
"""

from __future__ import annotations

from xml.etree import ElementTree as ET

from werkzeug.wrappers import Response

from amo1c_sync.sandbox.onec_emulator.atom import xml_response
from amo1c_sync.sandbox.onec_emulator.schema import EDM_TYPES, EntityType, nav_name
from amo1c_sync.sandbox.onec_emulator.state import OneCBase

EDMX = "http://schemas.microsoft.com/ado/2007/06/edmx"
EDM = "http://schemas.microsoft.com/ado/2009/11/edm"
M = "http://schemas.microsoft.com/ado/2007/08/dataservices/metadata"
NS = "StandardODATA"

ET.register_namespace("edmx", EDMX)
ET.register_namespace("edm", EDM)


def _e(parent: ET.Element, tag: str, **attrs: str) -> ET.Element:
    return ET.SubElement(parent, f"{{{EDM}}}{tag}", attrs)


def metadata_response(base: OneCBase) -> Response:
    root = ET.Element(f"{{{EDMX}}}Edmx", {"Version": "1.0"})
    services = ET.SubElement(root, f"{{{EDMX}}}DataServices", {f"{{{M}}}DataServiceVersion": "3.0"})
    schema = ET.SubElement(services, f"{{{EDM}}}Schema", {"Namespace": NS})
    associations: list[tuple[str, str, str]] = []  # (association, source set, target set)
    for etype in base.schema.values():
        _entity_type(schema, etype, associations)
        for ts in etype.tabular:
            _section_types(schema, base, etype, ts)
    for name, source, target in associations:
        assoc = _e(schema, "Association", Name=name)
        _e(assoc, "End", Role="Source", Type=f"{NS}.{source}", Multiplicity="*")
        _e(assoc, "End", Role="Target", Type=f"{NS}.{target}", Multiplicity="0..1")
    container = _e(schema, "EntityContainer", Name="EnterpriseV8")
    container.set(f"{{{M}}}IsDefaultEntityContainer", "true")
    for name in base.all_sets():
        _e(container, "EntitySet", Name=name, EntityType=f"{NS}.{name}")
    for name, source, target in associations:
        aset = _e(container, "AssociationSet", Name=name, Association=f"{NS}.{name}")
        _e(aset, "End", Role="Source", EntitySet=source)
        _e(aset, "End", Role="Target", EntitySet=target)
    return xml_response(root, "application/xml")


def _properties(parent: ET.Element, fields: dict[str, str], keys: tuple[str, ...]) -> None:
    for name, kind in fields.items():
        _e(parent, "Property", Name=name, Type=EDM_TYPES.get(kind, "Edm.String"),
           Nullable="false" if name in keys else "true")


def _entity_type(schema: ET.Element, etype: EntityType, associations: list) -> None:
    element = _e(schema, "EntityType", Name=etype.name)
    _e(_e(element, "Key"), "PropertyRef", Name="Ref_Key")
    _properties(element, etype.fields, ("Ref_Key",))
    for ts in etype.tabular:
        _e(element, "Property", Name=ts, Type=f"Collection({NS}.{etype.name}_{ts}_RowType)", Nullable="false")
    for ref_prop, target in etype.refs.items():
        name = f"{etype.name}_{nav_name(ref_prop)}"
        _e(element, "NavigationProperty", Name=nav_name(ref_prop), Relationship=f"{NS}.{name}",
           FromRole="Source", ToRole="Target")
        associations.append((name, etype.name, target))


def _section_types(schema: ET.Element, base: OneCBase, etype: EntityType, ts: str) -> None:
    row = base.ts_types(etype, ts)
    name = f"{etype.name}_{ts}"
    element = _e(schema, "EntityType", Name=name)
    key = _e(element, "Key")
    _e(key, "PropertyRef", Name="Ref_Key")
    _e(key, "PropertyRef", Name="LineNumber")
    _properties(element, row, ("Ref_Key", "LineNumber"))
    _properties(_e(schema, "ComplexType", Name=f"{name}_RowType"), row, ("Ref_Key", "LineNumber"))
