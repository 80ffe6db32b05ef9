"""Bad inputs, part 4: amounts with many decimals and negative amounts (refunds) in «Оказание
услуг» (issue 9's table; README, Troubleshooting).

What the user sees is the lead in amoCRM: «Сумма1С» holds the exact 1C total (no float
rounding, no "1.5E+2"), the budget holds it rounded half up to whole roubles and never goes
below 0 (amoCRM takes no negative budget), and nothing is lost. The same amounts through the real
payments job against both emulators: tests/integration/test_bad_inputs_money_e2e.py.
"""

from __future__ import annotations

from decimal import Decimal

import pytest

from amo1c_sync.domain.totals import DocState, budget, sum_field_value, total

TOKEN = "bad-inputs-token"


# --- pure -------------------------------------------------------------------------------------------

@pytest.mark.parametrize(("amounts", "want_sum", "want_budget"), [
    (["150.123456789"], "150.123456789", 150),
    (["0.005", "0.005"], "0.01", 0),
    (["250.50"], "250.5", 251),                   # half up
    (["-0.50"], "-0.5", 0),                       # never a negative budget
    (["150.00", "-50.00"], "100", 100),           # payment and refund
    (["-150.00"], "-150", 0),                     # refund alone
    (["0.10", "0.20"], "0.3", 0),                 # float would give 0.30000000000000004
    (["1E+3"], "1000", 1000),                     # exponent notation from a JSON number
    (["99999999999.99"], "99999999999.99", 100000000000),
])
def test_given_odd_amounts_when_totalled_then_sum1c_is_exact_and_budget_rounds_half_up_never_below_0(
        amounts, want_sum, want_budget):
    docs = [DocState(ref=str(i), lead_id=1, amount=Decimal(a), posted=True, deletion_mark=False)
            for i, a in enumerate(amounts)]
    t = total(docs)
    assert sum_field_value(t) == want_sum
    assert budget(t) == want_budget


def test_given_a_float_amount_when_totalled_then_it_is_refused_loudly():
    with pytest.raises(TypeError):
        DocState(ref="x", lead_id=1, amount=150.1, posted=True, deletion_mark=False)  # type: ignore[arg-type]
