"""Unit tests of the 1C emulator's $filter parser and evaluator."""

from decimal import Decimal

import pytest

from amo1c_sync.sandbox.onec_emulator import ODataError, _evaluate, _truth, parse_filter

TYPES = {"Description": "string", "Ref_Key": "guid", "Date": "datetime", "Posted": "bool",
         "DeletionMark": "bool", "Сумма": "number", "НомерAmoCRM": "string"}
ROW = {"Description": "O'Brien", "Ref_Key": "17ea7497-3722-57f0-a01b-874c0d221bcc",
       "Date": "2021-12-22T09:05:00", "Posted": True, "DeletionMark": False, "Сумма": Decimal("150.00"),
       "НомерAmoCRM": "30000001"}


def matches(text: str, row=ROW) -> bool:
    return _truth(_evaluate(parse_filter(text, lambda n: n in TYPES), row, TYPES))


@pytest.mark.parametrize(("text", "expected"), [
    ("Description eq 'O''Brien'", True),
    ("Description eq 'o''brien  '", True),  # 1C collations: case-insensitive, trailing spaces ignored
    ("Description ne 'O''Brien'", False),
    ("Ref_Key eq guid'17EA7497-3722-57F0-A01B-874C0D221BCC'", True),
    ("Date ge datetime'2021-12-22T00:00:00' and Date lt datetime'2021-12-23T00:00:00'", True),
    ("Date gt datetime'2021-12-22T09:05'", False),
    ("Posted eq true and not (DeletionMark eq true)", True),
    ("Posted eq false or Сумма gt 100", True),
    ("Сумма eq 150", True),
    ("Сумма le 149.99", False),
    ("substringof('bri', Description)", True),
    ("substringof('Иванов'') or 1=1', Description)", False),
    ("(Posted eq false or DeletionMark eq false) and НомерAmoCRM eq '30000001'", True),
    ("Posted eq false or DeletionMark eq false and Description eq 'x'", False),  # and binds tighter
    ("startswith(Description, 'o''') and endswith(Description, 'IEN')", True),
])
def test_given_a_filter_when_evaluated_then_it_follows_odata_rules(text, expected):
    assert matches(text) is expected


@pytest.mark.parametrize("text", [
    "Description eq 'O'Brien'",          # unescaped quote
    "Description eq 'open",              # unterminated literal
    "Ref_Key eq guid'nope'",
    "Date eq datetime'22.12.2021'",
    "(Posted eq true",
    "Posted eq true)",
    "Posted eq",
    "Posted and and Posted",
    "Unknown eq 1",
    "nosuchfunc(Description)",
    "Description eq 'x' ; drop",
    "",
])
def test_given_a_broken_filter_when_parsing_then_400_with_code_14(text):
    with pytest.raises(ODataError) as err:
        parse_filter(text, lambda n: n in TYPES)
    assert err.value.status == 400
    assert err.value.code == "14"


def test_given_incompatible_types_when_comparing_then_400_code_14():
    with pytest.raises(ODataError) as err:
        matches("Posted eq 'yes'")
    assert err.value.code == "14"
