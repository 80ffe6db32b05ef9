"""F2 rules, pure: reading a lead's fields, validation messages, fingerprint, notes, backoff."""

from __future__ import annotations

from datetime import date, datetime, time, timedelta, timezone
from zoneinfo import ZoneInfo

import pytest

from amo1c_sync.domain.dates import amo_date_to_day, local_date_to_amo
from amo1c_sync.domain.registration import (
    Invalid,
    Request,
    already_note,
    client_remark,
    created_note,
    display_number,
    fingerprint,
    finish_note,
    not_working_message,
    parse_request,
    plural,
    time_message,
    unknown_doctor_message,
    updated_note,
)
from amo1c_sync.domain.retry import backoff_seconds
from amo1c_sync.domain.slots import BUSY, OFF_GRID, OUTSIDE

MSK = ZoneInfo("Europe/Moscow")
NY = ZoneInfo("America/New_York")
SYD = ZoneInfo("Australia/Sydney")
SANTIAGO = ZoneInfo("America/Santiago")  # DST starts at midnight: 00:00 does not exist that day


def _req(**kw):
    base = dict(lead_id=1, day=date(2021, 12, 22), doctor="Ефимова Е.В.", time=time(9, 5), client_name="")
    base.update(kw)
    return Request(**base)


def test_given_seed_date_when_converting_both_ways_then_midnight_moscow_is_22_12_2021():
    ts = local_date_to_amo(date(2021, 12, 22), MSK)
    assert ts == int(datetime(2021, 12, 21, 21, 0, tzinfo=timezone.utc).timestamp())
    assert amo_date_to_day(ts, MSK) == date(2021, 12, 22)
    assert amo_date_to_day(str(ts), MSK) == date(2021, 12, 22)


@pytest.mark.parametrize(("tz", "day"), [
    (NY, date(2024, 3, 10)), (NY, date(2024, 3, 11)), (NY, date(2024, 11, 3)), (NY, date(2024, 11, 4)),
    (SYD, date(2024, 4, 7)), (SYD, date(2024, 10, 6)), (SYD, date(2024, 10, 5)),
    (SANTIAGO, date(2024, 9, 8)), (SANTIAGO, date(2024, 4, 6)), (MSK, date(2021, 1, 1)),
])
def test_given_dst_boundary_day_when_round_tripping_then_same_day(tz, day):
    assert amo_date_to_day(local_date_to_amo(day, tz), tz) == day


@pytest.mark.parametrize("tz", [NY, SYD, MSK])
def test_given_every_day_of_a_year_when_round_tripping_then_same_day(tz):
    d = date(2024, 1, 1)
    while d.year == 2024:
        assert amo_date_to_day(local_date_to_amo(d, tz), tz) == d
        d += timedelta(days=1)


def test_given_ts_one_second_before_or_after_midnight_when_converting_then_nearest_midnight_day():
    ts = local_date_to_amo(date(2024, 3, 10), NY)
    assert amo_date_to_day(ts - 1, NY) == date(2024, 3, 10)
    assert amo_date_to_day(ts + 1, NY) == date(2024, 3, 10)


def test_given_midnight_of_an_eastern_zone_when_read_in_a_western_zone_then_intended_day():
    # account in Sydney wrote midnight of 6 Oct 2024 (DST start day); clinic configured for Moscow
    ts = local_date_to_amo(date(2024, 10, 6), SYD)
    assert amo_date_to_day(ts, MSK) == date(2024, 10, 6)


def test_given_iso_or_typed_strings_when_converting_then_day():
    assert amo_date_to_day("22.12.2021", MSK) == date(2021, 12, 22)
    assert amo_date_to_day("2021-12-22", MSK) == date(2021, 12, 22)
    assert amo_date_to_day("2021-12-21T21:00:00+00:00", MSK) == date(2021, 12, 22)
    with pytest.raises(ValueError, match="is not a date"):
        amo_date_to_day("завтра", MSK)


def test_given_seed_lead_when_parsing_then_request():
    r = parse_request(7, date_value=local_date_to_amo(date(2021, 12, 22), MSK), doctor_value="Ефимова Е.В.",
                      time_value="9:05", client_value=None, tz=MSK)
    assert r == _req(lead_id=7)


def test_given_missing_fields_when_parsing_then_note_names_each_missing_field():
    r = parse_request(7, date_value=None, doctor_value=" ", time_value="9:05", client_value=None, tz=MSK)
    assert isinstance(r, Invalid)
    assert r.code == "missing_fields"
    assert "«Дата записи к врачу», «Врач»" in r.message
    assert "не заполнены поля" in r.message


@pytest.mark.parametrize(("length", "limit", "ok"), [(150, 150, True), (151, 150, False), (5000, 0, True)])
def test_given_a_client_name_of_some_length_when_parsing_then_only_one_longer_than_the_limit_is_invalid(
        length, limit, ok):
    r = parse_request(7, date_value="22.12.2021", doctor_value="X", time_value="9:05",
                      client_value="  " + "Я" * length + "  ", tz=MSK, client_name_max=limit)
    assert isinstance(r, Request) is ok
    if not ok:
        assert r.code == "client_name_too_long"
        assert "«ФИО клиента» слишком длинное — 151 символ" in r.message
        assert "не больше 150 символов" in r.message


@pytest.mark.parametrize(("n", "word"), [(1, "символ"), (2, "символа"), (5, "символов"), (11, "символов"),
                                     (12, "символов"), (21, "символ"), (22, "символа"), (111, "символов"),
                                     (3000, "символов")])
def test_given_a_number_when_choosing_the_russian_noun_form_then_it_agrees(n, word):
    assert plural(n, "символ", "символа", "символов") == word


def test_given_a_sentence_ending_in_a_name_with_its_own_period_when_the_note_is_finished_then_one_period():
    assert finish_note("22.12.2021 работают: Ефимова Е.В., Ишаева М.И..") == \
        "22.12.2021 работают: Ефимова Е.В., Ишаева М.И."
    # a value in «…» is shown as typed, and an ellipsis stays
    assert finish_note("Поле «Время записи»: «9..05» — не время. И так далее...") == \
        "Поле «Время записи»: «9..05» — не время. И так далее..."


def test_given_unreadable_time_when_parsing_then_note_shows_the_value_and_an_example():
    r = parse_request(7, date_value="22.12.2021", doctor_value="X", time_value="25:99", client_value="",
                      tz=MSK)
    assert isinstance(r, Invalid)
    assert r.code == "bad_time"
    assert "«25:99»" in r.message
    assert "9:05" in r.message


def test_given_same_data_with_other_spacing_when_fingerprinting_then_equal_and_changes_otherwise():
    a = parse_request(1, date_value="22.12.2021", doctor_value="Ефимова  Е.В.", time_value="09:05",
                      client_value=" Петров П.П. ", tz=MSK)
    b = _req(client_name="Петров П.П.")
    assert fingerprint(a) == fingerprint(b)
    assert len(fingerprint(a)) == 64
    assert fingerprint(b) != fingerprint(_req(client_name="Петров П.П.", time=time(9, 10)))
    assert fingerprint(b) != fingerprint(_req())


def test_given_numbers_when_writing_notes_then_no_leading_zeros():
    assert created_note("00000000219") == "Создан документ Заявка № 219"
    assert updated_note("00000000219") == "Изменён документ Заявка № 219"
    assert display_number("0000") == "0000"
    assert display_number("АБ-00012") == "АБ-00012"
    assert "уже зарегистрирована" in already_note("00000000219", _req())
    assert "№ 219" in already_note(
        "00000000219", _req())


def test_given_unknown_or_off_duty_doctor_when_writing_note_then_doctors_working_that_day_listed():
    m = unknown_doctor_message("Иванов И.И.", date(2021, 12, 22), ["Ефимова Е.В.", "Ишаева М.И."])
    assert "«Иванов И.И.» нет в 1С" in m
    assert "22.12.2021 работают: Ефимова Е.В., Ишаева М.И." in m
    m = not_working_message("Петрова А.С.", date(2021, 12, 22), ["Ефимова Е.В.", "Ишаева М.И."])
    assert "не работает 22.12.2021" in m
    assert "Ефимова Е.В., Ишаева М.И." in m
    assert "ни один врач" in not_working_message("Петрова А.С.", date(2021, 12, 25), [])


def test_given_busy_off_grid_or_outside_time_when_writing_note_then_reason_and_nearest_free_times():
    kw = dict(doctor="Ефимова Е.В.", day=date(2021, 12, 22), t=time(9, 5),
              intervals=[(time(8, 15), time(13, 0))], step_minutes=5)
    m = time_message(BUSY, free_near=[time(8, 50), time(9, 20)], **kw)
    assert "время 9:05 занято" in m
    assert "Ближайшее свободное время: 8:50, 9:20." in m
    m = time_message(OFF_GRID, free_near=[time(9, 5)], **{**kw, "t": time(9, 7)})
    assert "9:07 не попадает в сетку" in m
    assert "каждые 5 мин" in m
    assert "8:15" in m
    m = time_message(OUTSIDE, free_near=[], **{**kw, "t": time(14, 0)})
    assert "вне графика" in m
    assert "8:15–13:00" in m
    assert "Свободного времени у врача в этот день нет" in m


def test_given_client_choice_when_remarking_then_only_new_or_ambiguous_is_said():
    assert client_remark(name="Петров П.П.", created=False, matches=1) is None
    assert "создан новый клиент" in client_remark(name="Петров П.П.", created=True, matches=0)
    assert "найдено клиентов «Петров П.П.»: 2; выбран первый по коду (000000002)" in client_remark(
        name="Петров П.П.", created=False, matches=2, chosen_code="000000002")


def test_given_attempts_when_backing_off_then_doubles_up_to_max():
    assert [backoff_seconds(n, 60, 3600) for n in range(0, 9)] == [0, 60, 120, 240, 480, 960, 1920, 3600, 3600]
    assert backoff_seconds(10_000, 60, 3600) == 3600
