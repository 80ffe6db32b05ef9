"""F1 rules, pure: free start times, why a time is not free, which schedule document wins."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import date, datetime, time

import pytest

from amo1c_sync.domain.slots import (
    BUSY,
    FREE,
    OFF_GRID,
    OUTSIDE,
    classify,
    day_grid,
    free_starts,
    grid_starts,
    nearest,
    winning_intervals,
)

T = time


def test_given_seed_interval_when_no_bookings_then_grid_starts_at_8_15_every_5_minutes():
    free = free_starts([(T(8, 15), T(13, 0))], [], 5, 15)
    assert free[:6] == [T(8, 15), T(8, 20), T(8, 25), T(8, 30), T(8, 35), T(8, 40)]
    assert free[-1] == T(12, 45)  # 12:45 + 15 min = 13:00 fits; 12:50 does not


def test_given_booking_without_end_when_listing_then_it_occupies_appointment_minutes():
    free = free_starts([(T(8, 15), T(13, 0))], [(T(9, 5), None)], 5, 15)
    # [t, t+15) must not overlap [9:05, 9:20)
    assert T(8, 50) in free
    assert T(8, 55) not in free
    assert T(9, 5) not in free
    assert T(9, 15) not in free
    assert T(9, 20) in free


def test_given_booking_with_end_when_listing_then_it_occupies_start_to_end():
    free = free_starts([(T(8, 0), T(16, 0))], [(T(10, 0), T(11, 0))], 5, 15)
    assert T(9, 45) in free
    assert T(9, 50) not in free
    assert T(10, 55) not in free
    assert T(11, 0) in free


def test_given_two_intervals_when_listing_then_each_has_its_own_anchor():
    free = grid_starts([(T(8, 13), T(8, 40)), (T(15, 30), T(16, 0))], 5, 15)
    assert free == [T(8, 13), T(8, 18), T(8, 23), T(15, 30), T(15, 35), T(15, 40), T(15, 45)]


def test_given_interval_ending_at_midnight_when_listing_then_last_start_fits_before_midnight():
    free = grid_starts([(T(23, 0), T(0, 0))], 15, 15)
    assert free == [T(23, 0), T(23, 15), T(23, 30), T(23, 45)]


def test_given_interval_shorter_than_appointment_when_listing_then_nothing_is_free():
    assert grid_starts([(T(8, 0), T(8, 10))], 5, 15) == []


def test_given_invalid_step_when_listing_then_value_error():
    with pytest.raises(ValueError, match="must be positive"):
        free_starts([(T(8, 0), T(9, 0))], [], 0, 15)


@pytest.mark.parametrize(("t", "expected"), [
    (T(9, 5), BUSY), (T(8, 55), BUSY), (T(9, 20), FREE), (T(9, 7), OFF_GRID),
    (T(7, 0), OUTSIDE), (T(12, 50), OUTSIDE), (T(12, 45), FREE), (T(13, 0), OUTSIDE),
])
def test_given_seed_day_when_classifying_a_time_then_reason_is_named(t, expected):
    assert classify(t, [(T(8, 15), T(13, 0))], [(T(9, 5), None)], 5, 15) == expected


def test_given_free_times_when_asking_nearest_then_closest_in_time_order():
    free = free_starts([(T(8, 15), T(13, 0))], [(T(9, 5), None)], 5, 15)
    assert nearest(free, T(9, 5), 4) == [T(8, 45), T(8, 50), T(9, 20), T(9, 25)]
    assert nearest([], T(9, 5)) == []


@dataclass
class Line:
    doc_ref: str
    doc_number: str
    doc_date: datetime
    doctor_ref: str
    day: date
    start: time
    end: time
    line_number: int = 1


def test_given_two_posted_documents_when_choosing_then_latest_by_date_wins():
    d = date(2021, 12, 22)
    lines = [Line("a", "00000000006", datetime(2021, 12, 8), "doc1", d, T(8, 15), T(13, 0)),
             Line("b", "00000000002", datetime(2021, 12, 10), "doc1", d, T(15, 30), T(20, 0))]
    won = winning_intervals(lines)
    assert won[("doc1", d)].intervals == ((T(15, 30), T(20, 0)),)


def test_given_same_document_date_when_choosing_then_higher_number_wins_numerically():
    d = date(2021, 12, 22)
    lines = [Line("a", "00000000010", datetime(2021, 12, 8), "doc1", d, T(8, 0), T(9, 0)),
             Line("b", "9", datetime(2021, 12, 8), "doc1", d, T(10, 0), T(11, 0))]
    assert winning_intervals(lines)[("doc1", d)].doc_ref == "a"


def test_given_one_document_with_two_lines_for_a_day_when_choosing_then_both_intervals_kept():
    d = date(2021, 12, 22)
    lines = [Line("a", "1", datetime(2021, 12, 8), "doc1", d, T(15, 0), T(18, 0), 2),
             Line("a", "1", datetime(2021, 12, 8), "doc1", d, T(8, 0), T(12, 0), 1),
             Line("a", "1", datetime(2021, 12, 8), "doc2", d, T(8, 0), T(9, 0), 3)]
    won = winning_intervals(lines)
    assert won[("doc1", d)].intervals == ((T(8, 0), T(12, 0)), (T(15, 0), T(18, 0)))
    assert won[("doc2", d)].intervals == ((T(8, 0), T(9, 0)),)


def test_given_step_when_building_day_grid_then_every_step_from_start_to_end():
    assert day_grid(30)[:3] == [T(0, 0), T(0, 30), T(1, 0)]
    assert len(day_grid(5)) == 288
    assert day_grid(15, T(8, 0), T(9, 0)) == [T(8, 0), T(8, 15), T(8, 30), T(8, 45), T(9, 0)]


def test_given_a_start_when_the_appointment_ends_then_its_end_or_none_after_midnight():
    from amo1c_sync.domain.slots import end_time

    assert end_time(time(9, 5), 15) == time(9, 20)
    assert end_time(time(23, 50), 15) is None
