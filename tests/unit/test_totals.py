from decimal import Decimal as D

import pytest

from amo1c_sync.domain import totals as t
from amo1c_sync.domain.retry import backoff_seconds


def doc(ref, lead, amount, posted=True, deletion_mark=False):
    return t.DocState(ref=ref, lead_id=lead, amount=D(amount), posted=posted, deletion_mark=deletion_mark)


def test_given_posted_documents_when_totalled_then_the_sum_is_exact():
    assert t.total([doc("a", 1, "150.00"), doc("b", 1, "50.50")]) == D("200.50")
    assert t.total([doc("a", 1, "0.10")] * 3) == D("0.30")


def test_given_unposted_or_deletion_marked_documents_when_totalled_then_they_do_not_count():
    docs = [doc("a", 1, "150.00", posted=False), doc("b", 1, "50.50", deletion_mark=True),
            doc("c", 1, "10.00", posted=True, deletion_mark=True)]
    assert t.total(docs) == D("0")


def test_given_no_documents_when_totalled_then_zero():
    assert t.total([]) == D("0")


def test_given_a_float_amount_when_building_a_document_then_type_error():
    with pytest.raises(TypeError):
        t.DocState(ref="a", lead_id=1, amount=150.0, posted=True, deletion_mark=False)


def test_given_a_float_total_when_formatting_then_type_error():
    with pytest.raises(TypeError):
        t.budget(150.5)
    with pytest.raises(TypeError):
        t.sum_field_value(150.5)


@pytest.mark.parametrize(("value", "price"), [
    ("150.00", 150), ("250.50", 251), ("250.49", 250), ("0.50", 1), ("0.49", 0), ("0", 0),
    ("2.5", 3), ("3.5", 4), ("-10.00", 0), ("1234567.505", 1234568),
])
def test_given_a_total_when_computing_the_budget_then_rounded_half_up(value, price):
    assert t.budget(D(value)) == price


@pytest.mark.parametrize(("value", "text"), [
    ("150.00", "150"), ("250.50", "250.5"), ("50.50", "50.5"), ("0.00", "0"), ("-0", "0"),
    ("0.01", "0.01"), ("1000000", "1000000"), ("1E+3", "1000"), ("12345.678", "12345.678"),
    ("-5.10", "-5.1"),
])
def test_given_a_total_when_formatting_the_sum_field_then_exact_plain_decimal(value, text):
    assert t.sum_field_value(D(value)) == text
    assert D(t.sum_field_value(D(value))) == D(value)


def test_given_a_never_pushed_lead_when_total_is_zero_then_it_is_not_pushed():
    assert t.same_total(None, D("0"))
    assert not t.same_total(None, D("0.01"))
    assert t.same_total(D("150.00"), D("150"))
    assert not t.same_total(D("150.00"), D("0"))


def test_given_stored_and_changed_documents_when_finding_affected_leads_then_old_and_new_leads():
    stored = {"a": doc("a", 1, "10"), "b": doc("b", 2, "10"), "c": doc("c", None, "5")}
    changed = [doc("a", 3, "10"), doc("b", None, "10"), doc("c", 4, "5"), doc("n", 5, "1")]
    assert t.affected_leads(stored, changed) == {1, 2, 3, 4, 5}


def test_given_merged_documents_when_totalling_leads_then_each_lead_gets_its_own_sum():
    stored = {"a": doc("a", 1, "150.00"), "b": doc("b", 1, "50.50"), "c": doc("c", 2, "7")}
    changed = {"a": doc("a", 1, "150.00", posted=False)}
    merged = t.merge(stored, changed)
    assert t.lead_totals(merged.values(), [1, 2, 9]) == {1: D("50.50"), 2: D("7"), 9: D("0")}


def test_given_totals_and_pushed_when_choosing_what_to_push_then_only_differences():
    totals = {3: D("10"), 1: D("150.00"), 2: D("0")}
    pushed = {1: D("150"), 3: D("9.99")}
    assert t.leads_to_push(totals, pushed) == {3: D("10")}


@pytest.mark.parametrize(("text", "lead"), [
    ("30000001", 30000001), (" 42 ", 42), ("", None), (None, None), ("abc", None), ("0", None),
    ("-5", None), ("12.5", None), ("١٢", None),
])
def test_given_a_number_amocrm_attribute_when_parsing_then_lead_id_or_none(text, lead):
    assert t.parse_lead_id(text) == lead


def test_given_failures_when_computing_backoff_then_doubles_up_to_the_cap():
    assert [backoff_seconds(n, 60, 3600) for n in range(0, 9)] == [0, 60, 120, 240, 480, 960, 1920, 3600, 3600]
    assert backoff_seconds(10_000, 60, 3600) == 3600


def test_given_a_lead_with_a_push_in_flight_when_its_total_equals_the_pushed_one_then_it_is_pushed_again():
    totals = {1: D("150"), 2: D("150")}
    pushed = {1: D("150"), 2: D("150")}

    assert t.leads_to_push(totals, pushed, in_flight={2}) == {2: D("150")}
    assert t.leads_to_push(totals, pushed) == {}
