import uuid

import pytest

from amo1c_sync.sandbox.onec_emulator import _evaluate, _key_lookup, _truth, parse_filter

TYPES = {"Ref_Key": "guid", "Number": "string"}
ROWS = [{"Ref_Key": str(uuid.UUID(int=i)), "Number": f"{i:011d}"} for i in range(1, 30)]


def _slow(text):
    tree = parse_filter(text, lambda n: n in TYPES)
    return [r for r in ROWS if _truth(_evaluate(tree, r, TYPES))]


@pytest.mark.parametrize("text", [
    " or ".join(f"Ref_Key eq guid'{uuid.UUID(int=i)}'" for i in (3, 7, 11, 99)),
    f"guid'{str(uuid.UUID(int=5)).upper()}' eq Ref_Key",
    f"(Ref_Key eq guid'{uuid.UUID(int=2)}') or (Ref_Key eq guid'{uuid.UUID(int=4)}')",
])
def test_given_a_batched_key_filter_when_answered_by_key_then_it_matches_full_evaluation(text):
    keys = _key_lookup(parse_filter(text, lambda n: n in TYPES))
    assert keys is not None
    fast = [r for r in ROWS if r["Ref_Key"].casefold() in keys]
    assert fast == _slow(text)
    assert fast


@pytest.mark.parametrize("text", [
    f"Ref_Key eq guid'{uuid.UUID(int=3)}' and Number eq '00000000003'",
    f"Ref_Key ne guid'{uuid.UUID(int=3)}'",
    f"Ref_Key eq guid'{uuid.UUID(int=3)}' or Number eq '00000000004'",
])
def test_given_any_other_filter_when_planned_then_it_is_evaluated_row_by_row(text):
    assert _key_lookup(parse_filter(text, lambda n: n in TYPES)) is None
