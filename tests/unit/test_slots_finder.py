"""SlotFinder over a fake 1C gateway (no HTTP): caching, ordering, own-«Заявка» exclusion, errors;
and the directory job's pure option planning."""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass
from datetime import date, datetime, time


from amo1c_sync.domain.slots import NotWorking, UnknownDoctor
from amo1c_sync.domain.directory import plan_doctor_options, plan_time_options
from amo1c_sync.services.slots import SlotFinder
from amo1c_sync.onec.gateway import ScheduleLine as Line

DAY = date(2021, 12, 22)


@dataclass
class Item:
    ref: str
    code: str
    name: str


@dataclass
class Zay:
    ref: str
    start: time
    end: time | None
    doctor_ref: str
    deletion_mark: bool = False
    posted: bool = True


class FakeOneC:
    def __init__(self):
        self.calls = Counter()
        self.catalog = [Item("a", "1", "Ишаева М.И."), Item("b", "2", "Ефимова Е.В."), Item("c", "3", "Петрова А.С.")]
        self.lines = [
            Line("d1", "00000000006", datetime(2021, 12, 8), 1, "b", DAY, time(8, 15), time(13, 0)),
            Line("d1", "00000000006", datetime(2021, 12, 8), 2, "a", DAY, time(8, 0), time(16, 0)),
            Line("d1", "00000000006", datetime(2021, 12, 8), 3, "c", date(2021, 12, 23), time(8, 15), time(13, 0)),
        ]
        self.booked = [Zay("z1", time(9, 5), None, "b"), Zay("z2", time(10, 0), time(10, 30), "b", True)]

    def doctors(self):
        self.calls["doctors"] += 1
        return self.catalog

    def schedule_lines(self, month):
        self.calls["schedule_lines"] += 1
        assert month == date(2021, 12, 1)
        return self.lines

    def zayavki_on(self, day, doctor_ref=None):
        self.calls["zayavki_on"] += 1
        return [z for z in self.booked if doctor_ref is None or z.doctor_ref == doctor_ref]


def test_given_catalog_in_code_order_when_listing_doctors_then_alphabetical_and_only_working():
    assert SlotFinder(FakeOneC()).doctors(DAY) == ["Ефимова Е.В.", "Ишаева М.И."]


def test_given_own_zayavka_when_excluded_then_its_time_is_free_and_deleted_ones_never_count():
    onec = FakeOneC()
    finder = SlotFinder(onec, step_minutes=5, appointment_minutes=15)
    assert time(9, 5) not in finder.free_times(DAY, "Ефимова Е.В.")
    assert time(9, 5) in finder.free_times(DAY, "ефимова  е.в.", exclude_refs=["Z1"])
    assert time(10, 0) in finder.free_times(DAY, "Ефимова Е.В.")  # z2 is marked for deletion


def test_given_ttl_when_clock_moves_then_month_and_catalog_reread_only_after_ttl():
    now = [0.0]
    onec = FakeOneC()
    finder = SlotFinder(onec, cache_ttl=60, clock=lambda: now[0])
    for _ in range(3):
        finder.doctors(DAY)
        finder.free_times(DAY, "Ишаева М.И.")
    assert onec.calls == Counter(doctors=1, schedule_lines=1, zayavki_on=3)
    now[0] = 61
    finder.doctors(DAY)
    assert onec.calls["schedule_lines"] == 2
    assert onec.calls["doctors"] == 2


def test_given_doctor_not_working_or_unknown_when_asking_then_codes_and_working_list():
    finder = SlotFinder(FakeOneC())
    off = finder.free_times(DAY, "Петрова А.С.")
    assert isinstance(off, NotWorking)
    assert off.code == "not_working"
    assert off.working == ("Ефимова Е.В.", "Ишаева М.И.")
    unknown = finder.free_times(DAY, "Никто")
    assert isinstance(unknown, UnknownDoctor)
    assert unknown.code == "unknown_doctor"


def test_given_later_document_when_listing_then_it_replaces_the_earlier_for_that_day_only():
    onec = FakeOneC()
    onec.lines.append(Line("d2", "00000000007", datetime(2021, 12, 9), 1, "b", DAY, time(15, 30), time(16, 0)))
    finder = SlotFinder(onec, step_minutes=5, appointment_minutes=15)
    assert finder.free_times(DAY, "Ефимова Е.В.") == [time(15, 30), time(15, 35), time(15, 40), time(15, 45)]
    assert finder.free_times(DAY, "Ишаева М.И.")[0] == time(8, 0)


def test_given_existing_options_when_planning_doctors_then_ids_kept_new_added_renamed_in_place():
    enums = [{"id": 1, "value": "Ефимова Е.В.", "sort": 10}, {"id": 2, "value": "Ишаева М.И.", "sort": 20},
             {"id": 3, "value": "Уволен", "sort": 30}]
    payload, added, renamed, known = plan_doctor_options(
        enums, [("a", "Ишаева-Смирнова М.И."), ("b", "Ефимова Е.В."), ("c", "Петрова А.С.")], {"a": 2})
    assert added == ["Петрова А.С."]
    assert renamed == [("Ишаева М.И.", "Ишаева-Смирнова М.И.")]
    assert [(e.get("id"), e["value"]) for e in payload] == [
        (1, "Ефимова Е.В."), (2, "Ишаева-Смирнова М.И."), (3, "Уволен"), (None, "Петрова А.С.")]
    assert known == {"a": 2, "b": 1}


def test_given_time_options_when_planning_then_existing_kept_missing_added_sorted_nothing_deleted():
    enums = [{"id": 5, "value": "08:20", "sort": 10}, {"id": 6, "value": "08:15", "sort": 20},
             {"id": 7, "value": "Другое", "sort": 30}]
    payload, added, changed = plan_time_options(enums, [time(8, 10), time(8, 15), time(8, 20)])
    assert changed
    assert added == ["8:10"]
    assert [(e.get("id"), e["value"]) for e in payload] == [(None, "8:10"), (6, "08:15"), (5, "08:20"), (7, "Другое")]
    same = [{"id": i + 1, "value": v, "sort": (i + 1) * 10} for i, v in enumerate(["8:10", "08:15", "08:20"])]
    assert plan_time_options(same, [time(8, 10), time(8, 15)])[2] is False
