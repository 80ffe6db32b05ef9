"""Unit tests of the 1C OData query builder, the names and the gateway's small helpers."""

import base64
import uuid
from datetime import date, datetime, time
from decimal import Decimal
from types import SimpleNamespace
from urllib.parse import unquote

import pytest

from amo1c_sync.onec import OneCNames, from_settings
from amo1c_sync.onec import query as q
from amo1c_sync.onec.gateway import OneC, _Utf8BasicAuth

REF = "17ea7497-3722-57f0-a01b-874c0d221bcc"


def test_given_an_apostrophe_when_quoting_a_string_then_it_is_doubled():
    assert q.string("O'Brien") == "'O''Brien'"
    assert q.eq("Description", "O'Brien") == "Description eq 'O''Brien'"


def test_given_an_injection_attempt_when_building_a_filter_then_it_stays_inside_one_literal():
    text = q.eq("Description", "Иванов') or 1=1")
    assert text == "Description eq 'Иванов'') or 1=1'"
    # the literal is closed exactly once, at the very end
    body = text[len("Description eq "):]
    assert body.startswith("'")
    assert body.endswith("'")
    assert "''" in body


def test_given_a_guid_when_formatting_then_it_is_a_typed_literal_and_garbage_is_refused():
    assert q.guid(REF.upper()) == f"guid'{REF}'"
    assert q.eq("Ref_Key", q.Guid(REF)) == f"Ref_Key eq guid'{REF}'"
    with pytest.raises(ValueError, match="badly formed hexadecimal UUID"):
        q.guid("x' or 1=1")
    with pytest.raises(ValueError, match="badly formed hexadecimal UUID"):
        q.Guid("not-a-guid")


def test_given_dates_and_times_when_formatting_then_1c_wire_format_is_used():
    assert q.datetime_literal(date(2021, 12, 22)) == "datetime'2021-12-22T00:00:00'"
    assert q.datetime_literal(datetime(2021, 12, 22, 9, 5, 7, 123)) == "datetime'2021-12-22T09:05:07'"
    assert q.format_datetime(time(9, 5)) == "0001-01-01T09:05:00"
    with pytest.raises(ValueError, match="naive local times"):
        q.format_datetime(datetime(2021, 12, 22, tzinfo=__import__("datetime").timezone.utc))


def test_given_python_values_when_making_literals_then_each_type_has_its_form():
    assert q.literal(True) == "true"
    assert q.literal(False) == "false"
    assert q.literal(42) == "42"
    assert q.literal(Decimal("150.50")) == "150.50"
    assert q.literal(None) == "null"
    assert q.literal(uuid.UUID(REF)) == f"guid'{REF}'"
    with pytest.raises(TypeError):
        q.literal(1.5)  # money never as float


def test_given_a_bad_name_when_used_as_field_then_it_is_refused():
    for bad in ("Description eq 'x' or Code", "a b", "1abc", "", "Ref_Key)"):
        with pytest.raises(ValueError, match="not a 1C name"):
            q.eq(bad, "x")
    assert q.name("НомерAmoCRM") == "НомерAmoCRM"


def test_given_a_cyrillic_query_when_rendering_target_then_it_is_percent_encoded_ascii():
    query = q.Query("Catalog_Клиенты", filter=q.eq("Description", "O'Brien & Сын #1"),
                    select=("Ref_Key", "Code"), orderby=("Code",))
    target = query.target()
    target.encode("ascii")  # no raw Cyrillic
    assert target.startswith("Catalog_%D0%9A")
    assert "&" not in unquote(target.split("$filter=")[1].split("&$select")[0]).replace("& Сын", "")
    assert "%26" in target
    assert "%23" in target
    assert unquote(target) == ("Catalog_Клиенты?$format=json&$filter=Description eq 'O''Brien & Сын #1'"
                               "&$select=Ref_Key,Code&$orderby=Code")


def test_given_a_query_when_paging_then_ref_key_completes_the_order():
    page = q.Query("Catalog_Клиенты", orderby=("Code",)).page(100, 200)
    assert page.orderby == ("Code", "Ref_Key")
    assert page.top == 100
    assert page.skip == 200
    page = q.Query("X", orderby=("Ref_Key", "LineNumber")).page(10, 0)
    assert page.orderby == ("Ref_Key", "LineNumber")
    with pytest.raises(ValueError, match=r"bad \$orderby item"):
        q.Query("X", orderby=("Code; drop",)).target()


def test_given_many_refs_when_batching_then_every_target_stays_under_the_limit_and_none_is_lost():
    refs = [str(uuid.uuid4()) for _ in range(150)] + [REF, REF.upper()]
    prefix = len("/clinic/odata/standard.odata/")
    batches = list(q.ref_batches(refs, lambda flt: q.Query("Document_Заявка", filter=flt,
                                                           select=("Ref_Key", "НомерAmoCRM")),
                                 prefix_bytes=prefix))
    assert len(batches) > 2
    seen = [r for chunk, _ in batches for r in chunk]
    assert sorted(seen) == sorted({str(uuid.UUID(r)) for r in refs})
    for chunk, query in batches:
        assert prefix + len(query.target()) < q.MAX_TARGET_BYTES
        assert all(r in unquote(query.target()) for r in chunk)


def test_given_times_from_1c_when_parsing_then_empty_values_are_none():
    assert q.parse_time("0001-01-01T09:05:00") == time(9, 5)
    assert q.parse_time("0001-01-01T00:00:00") is None
    assert q.parse_date("2021-12-22T00:00:00") == date(2021, 12, 22)
    assert q.parse_datetime("0001-01-01T00:00:00") is None
    assert q.is_empty_ref("00000000-0000-0000-0000-000000000000")


def test_given_default_names_when_deriving_then_both_base_shapes_are_known():
    names = OneCNames()
    assert names.services_base_fields == ("ДокументОснование", "ДокументОснование_Type")
    assert names.zayavka_type_name == "StandardODATA.Document_Заявка"
    assert names.schedules_lines_set == "Document_УстановкаГрафиковРаботы_ГрафикиРаботы"
    single = OneCNames(base_ref_mode="single")
    assert single.services_base_fields == ("ДокументОснование_Key",)


def test_given_bad_names_when_configuring_then_every_problem_is_listed():
    with pytest.raises(ValueError, match="zayavka") as err:
        OneCNames(zayavka="Document Заявка", base_ref_mode="both", clients="")
    text = str(err.value)
    assert "zayavka" in text
    assert "base_ref_mode" in text
    assert "clients" in text


def test_given_a_cyrillic_login_when_authenticating_then_basic_auth_is_utf8_and_repr_hides_it():
    auth = _Utf8BasicAuth("Администратор", "пароль")
    request = SimpleNamespace(headers={})
    auth(request)
    token = request.headers["Authorization"].split()[1]
    assert base64.b64decode(token).decode("utf-8") == "Администратор:пароль"
    assert "пароль" not in repr(auth)
    gw = OneC("http://127.0.0.1:1/base", "Администратор", "пароль")
    assert "пароль" not in repr(gw)
    assert gw.root == "http://127.0.0.1:1/base/odata/standard.odata/"
    assert OneC("http://h/odata/standard.odata", "u", "p").root == "http://h/odata/standard.odata/"


def test_given_settings_when_building_from_settings_then_names_and_timeouts_are_used():
    names_like = SimpleNamespace(**{f: getattr(OneCNames(), f) for f in OneCNames.field_names()})
    names_like.zayavka_lead = "НомерЛида"
    settings = SimpleNamespace(
        onec=SimpleNamespace(base_url="http://127.0.0.1:9/clinic", username="u", password="p",
                             connect_timeout=3, read_timeout=40),
        onec_names=names_like)
    gw = from_settings(settings)
    assert gw.timeout == (3, 40)
    assert gw.names.zayavka_lead == "НомерЛида"
    assert gw.root.endswith("/clinic/odata/standard.odata/")


def _greedy_batches(refs, make_query, prefix):
    """The obvious packing: add refs while the target fits (renders once per ref)."""
    out, chunk = [], []
    for ref in dict.fromkeys(str(uuid.UUID(r)) for r in refs):
        flt = q.or_(*(q.eq("Ref_Key", q.Guid(x)) for x in chunk + [ref]))
        if prefix + len(make_query(flt).target()) < q.MAX_TARGET_BYTES:
            chunk.append(ref)
        else:
            out.append(chunk)
            chunk = [ref]
    return out + ([chunk] if chunk else [])


@pytest.mark.parametrize("count", [1, 2, 3, 28, 29, 30, 58, 59, 2_000])
def test_given_refs_when_batching_then_chunks_equal_the_greedy_packing_with_one_render_per_chunk(count):
    refs = [str(uuid.UUID(int=i + 1)) for i in range(count)]
    prefix = len("/clinic/odata/standard.odata/")
    renders = []

    def make_query(flt):
        renders.append(flt)
        return q.Query("Document_Заявка", filter=q.and_(flt, q.eq("DeletionMark", False)),
                       select=("Ref_Key", "НомерAmoCRM"))

    batches = list(q.ref_batches(refs, make_query, prefix_bytes=prefix))
    rendered = len(renders)
    assert [chunk for chunk, _ in batches] == _greedy_batches(refs, make_query, prefix)
    assert rendered <= 3 + len(batches)  # three probes, then one render per chunk
