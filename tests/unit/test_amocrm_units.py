"""Pure pieces of the amoCRM side: rate limiter, the response table, field value helpers."""

from __future__ import annotations

import threading
from datetime import date
from decimal import Decimal

import pytest

from amo1c_sync.amocrm.fields import FieldMap, date_to_ts, ts_to_date
from amo1c_sync.amocrm.ratelimit import RateLimiter
from amo1c_sync.amocrm.responses import Action, RESPONSE_ACTIONS, classify
from amo1c_sync.errors import ConfigError, ItemError


class FakeClock:
    def __init__(self):
        self.now = 1000.0
        self.lock = threading.Lock()

    def __call__(self):
        return self.now

    def sleep(self, s):
        with self.lock:
            self.now += s


def _max_in_window(times, window=1.0):
    times = sorted(times)
    best, j = 0, 0
    for i, t in enumerate(times):
        while times[j] <= t - window:
            j += 1
        best = max(best, i - j + 1)
    return best


def test_given_a_limit_of_7_when_100_requests_are_made_then_no_window_of_1s_holds_more_than_7():
    clock = FakeClock()
    rl = RateLimiter(7, margin=0.0, clock=clock, sleep=clock.sleep)
    sent = []
    for _ in range(100):
        rl.acquire()
        sent.append(clock.now)
    assert _max_in_window(sent) == 7
    assert sent[-1] - sent[0] == pytest.approx(14.0, abs=0.01)   # request 100 opens the 15th window


def test_given_a_fractional_rate_when_acquiring_then_it_spaces_requests():
    clock = FakeClock()
    rl = RateLimiter(0.5, margin=0.0, clock=clock, sleep=clock.sleep)
    sent = []
    for _ in range(3):
        rl.acquire()
        sent.append(clock.now)
    assert [b - a for a, b in zip(sent, sent[1:], strict=False)] == [pytest.approx(2.0), pytest.approx(2.0)]


@pytest.mark.parametrize(("status", "action"), [
    (200, Action.OK), (204, Action.EMPTY), (400, Action.FAIL_ITEM), (401, Action.REFRESH_AUTH),
    (402, Action.STOP), (403, Action.STOP), (404, Action.FAIL_ITEM), (429, Action.RETRY),
    (500, Action.RETRY), (502, Action.RETRY), (504, Action.RETRY), (599, Action.RETRY),
    (418, Action.FAIL_ITEM), (299, Action.OK)])
def test_given_a_status_when_classified_then_the_table_says_what_to_do(status, action):
    assert classify(status)[0] is action


def test_given_the_table_when_read_then_every_entry_has_a_reason():
    assert all(row.why for row in RESPONSE_ACTIONS.values())


FIELDS = [
    {"id": 1, "name": "Дата записи к врачу", "type": "date", "enums": None},
    {"id": 2, "name": "Врач", "type": "select",
     "enums": [{"id": 11, "value": "Ефимова Е.В.", "sort": 10}, {"id": 12, "value": "Ишаева М.И.", "sort": 20}]},
    {"id": 3, "name": "Сумма1С", "type": "numeric", "enums": None},
    {"id": 4, "name": "Зарегистрировать в 1С", "type": "checkbox", "enums": None},
    {"id": 5, "name": "ФИО клиента", "type": "text", "enums": None},
]


def test_given_fields_when_building_values_then_they_have_amocrm_wire_formats():
    fm = FieldMap(FIELDS, "Europe/Moscow")
    assert fm.cf("Дата записи к врачу", date(2021, 12, 22)) == {"field_id": 1, "values": [{"value": 1640120400}]}
    assert fm.cf("Врач", "Ишаева М.И.") == {"field_id": 2, "values": [{"enum_id": 12}]}
    assert fm.cf("Сумма1С", Decimal("1500.50")) == {"field_id": 3, "values": [{"value": "1500.50"}]}
    assert fm.cf("Зарегистрировать в 1С", False) == {"field_id": 4, "values": [{"value": False}]}
    assert fm.cf("ФИО клиента", None) == {"field_id": 5, "values": None}
    with pytest.raises(TypeError):
        fm.cf("Сумма1С", 1500.5)
    with pytest.raises(ItemError) as exc:
        fm.cf("Врач", "Нет такого")
    assert "Ефимова Е.В." in str(exc.value)
    assert exc.value.code == "amocrm:NotSupportedChoice"


def test_given_a_lead_when_reading_values_then_they_are_typed():
    fm = FieldMap(FIELDS, "Europe/Moscow")
    lead = {"custom_fields_values": [
        {"field_id": 1, "values": [{"value": 1640120400}]},
        {"field_id": 2, "values": [{"value": "Ефимова Е.В.", "enum_id": 11}]},
        {"field_id": 3, "values": [{"value": "1500.50"}]},
    ]}
    assert fm.get(lead, "Дата записи к врачу") == date(2021, 12, 22)
    assert fm.get(lead, "Врач") == "Ефимова Е.В."
    assert fm.get(lead, "Сумма1С") == Decimal("1500.50")
    assert fm.get(lead, "Зарегистрировать в 1С") is False
    assert fm.get(lead, "ФИО клиента") is None
    assert fm.get({"custom_fields_values": None}, "Врач") is None


def test_given_an_unknown_name_when_required_then_config_error_names_it_and_lists_the_rest():
    with pytest.raises(ConfigError) as exc:
        FieldMap(FIELDS).require(["Врач", "Доктор"])
    assert "«Доктор»" in str(exc.value)
    assert "«ФИО клиента»" in str(exc.value)


def test_given_midnight_in_moscow_when_converting_then_round_trips():
    from zoneinfo import ZoneInfo

    tz = ZoneInfo("Europe/Moscow")
    assert date_to_ts(date(2021, 12, 22), tz) == 1640120400
    assert ts_to_date(1640120400, tz) == date(2021, 12, 22)
    assert ts_to_date(1640120400 + 3600, tz) == date(2021, 12, 22)
    assert ts_to_date(1640120400 + 23 * 3600, tz) == date(2021, 12, 23)  # the nearest midnight


def test_given_requests_delayed_in_transit_when_sent_through_slots_then_the_server_never_sees_more_than_7_per_second():
    """Arrival jitter: a request may reach the server up to its completion time after its slot
    was granted. Stamping slots at completion keeps the server's sliding window within the rate."""
    import random

    clock = FakeClock()
    rl = RateLimiter(7, margin=0.0, clock=clock, sleep=clock.sleep)
    rnd = random.Random(7)
    arrivals = []
    for _ in range(200):
        with rl.slot():
            transit = rnd.choice([0.0, 0.0, 0.3])  # some requests are held up before they arrive
            clock.sleep(transit)
            arrivals.append(clock.now)
            clock.sleep(0.01)  # the answer comes back
    assert _max_in_window(arrivals) <= 7


def test_given_a_prefilled_limiter_when_a_restarted_process_starts_then_its_first_request_waits_a_window():
    clock = FakeClock()
    rl = RateLimiter(7, margin=0.0, prefill=True, clock=clock, sleep=clock.sleep)
    assert rl.acquire() == pytest.approx(1.0)


def test_given_seven_slow_answers_when_the_eighth_request_comes_then_it_waits_a_second_from_their_arrival_not_from_their_answers():  # noqa: E501 - the name says it all
    """amoCRM counts arrivals: seven requests that arrived at once and took 0.8 s to answer free
    their slots ``per`` after their latest possible arrival (``max_transit`` after sending), not
    ``per`` after their answers."""
    from contextlib import ExitStack

    clock = FakeClock()
    rl = RateLimiter(7, margin=0.0, max_transit=0.5, clock=clock, sleep=clock.sleep)
    with ExitStack() as held:
        for _ in range(7):
            held.enter_context(rl.slot())
        clock.sleep(0.8)   # amoCRM works on them; their answers come back now
    assert rl.acquire() == pytest.approx(0.7)   # 0.5 + 1.0 after they were sent, not 0.8 + 1.0


def test_given_a_fast_answer_when_its_slot_is_reused_then_it_counts_from_the_answer():
    clock = FakeClock()
    rl = RateLimiter(1, margin=0.0, max_transit=0.5, clock=clock, sleep=clock.sleep)
    with rl.slot():
        clock.sleep(0.2)   # answered within max_transit: it arrived by then at the latest
    assert rl.acquire() == pytest.approx(1.0)
