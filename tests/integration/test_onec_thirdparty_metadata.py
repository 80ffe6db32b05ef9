"""A second independent 1C client reads the emulator's $metadata: pyodata (SAP's OData client,
strict about CSDL — a NavigationProperty must resolve through its Association) builds its model
from it."""

from __future__ import annotations

import pyodata
import pytest
import requests

from amo1c_sync.sandbox.onec_emulator import OneCEmulator


@pytest.fixture
def emu():
    with OneCEmulator() as e:
        yield e


def test_given_the_emulators_metadata_when_pyodata_builds_its_model_then_references_are_navigation_properties(emu):
    session = requests.Session()
    session.auth = (emu.username.encode(), emu.password.encode())

    client = pyodata.Client(emu.odata_url, session)

    assert {s.name for s in client.schema.entity_sets} == set(emu.base.all_sets())
    zayavka = client.schema.entity_type("Document_Заявка")
    assert {(p.name, p.to_role.entity_type_name, p.to_role.multiplicity) for p in zayavka.nav_proprties} == {
        ("Клиент", "Catalog_Клиенты", "0..1"), ("Сотрудник", "Catalog_Сотрудники", "0..1"),
        ("Номенклатура", "Catalog_Номенклатура", "0..1")}
    lines = client.schema.entity_type("Document_ОказаниеУслуг_Работы")
    assert [k.name for k in lines.key_proprties] == ["Ref_Key", "LineNumber"]
    assert lines.proprty("LineNumber").typ.name == "Edm.Int64"
    session.close()
