"""``$metadata``: CSDL as 1C publishes it."""

from __future__ import annotations

from html import escape

from werkzeug.wrappers import Response

from amo1c_sync.sandbox.onec_emulator.schema import EDM_TYPES
from amo1c_sync.sandbox.onec_emulator.state import OneCBase


def metadata_response(base: OneCBase) -> Response:
    """An EntityType per object and per tabular section (key Ref_Key, plus LineNumber for a
    section), a ``…_RowType`` ComplexType per section that the owner's collection property refers
    to, and the EntitySets in the EnterpriseV8 container."""
    def props(fields: dict[str, str]) -> str:
        return "".join(f'<Property Name="{escape(name)}" Type="{EDM_TYPES.get(kind, "Edm.String")}" '
                       f'Nullable="{"false" if name in ("Ref_Key", "LineNumber") else "true"}"/>'
                       for name, kind in fields.items())

    types = []
    for etype in base.schema.values():
        sections = "".join(f'<Property Name="{escape(ts)}" Type="Collection(StandardODATA.'
                           f'{escape(etype.name)}_{escape(ts)}_RowType)" Nullable="false"/>'
                           for ts in etype.tabular)
        types.append(f'<EntityType Name="{escape(etype.name)}"><Key><PropertyRef Name="Ref_Key"/></Key>'
                     f'{props(etype.fields)}{sections}</EntityType>')
        for ts in etype.tabular:
            row = base.ts_types(etype, ts)
            name = escape(f"{etype.name}_{ts}")
            types.append(f'<EntityType Name="{name}"><Key><PropertyRef Name="Ref_Key"/>'
                         f'<PropertyRef Name="LineNumber"/></Key>{props(row)}</EntityType>')
            types.append(f'<ComplexType Name="{name}_RowType">{props(row)}</ComplexType>')
    sets = "".join(f'<EntitySet Name="{escape(s)}" EntityType="StandardODATA.{escape(s)}"/>'
                   for s in base.all_sets())
    xml = ('<?xml version="1.0" encoding="UTF-8"?><edmx:Edmx xmlns:edmx="http://schemas.microsoft.com/'
           'ado/2007/06/edmx" Version="1.0"><edmx:DataServices xmlns:m="http://schemas.microsoft.com/ado/'
           '2007/08/dataservices/metadata" m:DataServiceVersion="3.0"><Schema '
           'xmlns="http://schemas.microsoft.com/ado/2009/11/edm" Namespace="StandardODATA">'
           f'{"".join(types)}<EntityContainer Name="EnterpriseV8" m:IsDefaultEntityContainer="true">'
           f'{sets}</EntityContainer></Schema></edmx:DataServices></edmx:Edmx>')
    return Response(xml, content_type="application/xml;charset=utf-8")
