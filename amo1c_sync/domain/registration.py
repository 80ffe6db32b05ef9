"""F2, pure: what a flagged lead asks for, whether it is valid, and the notes written back.

No I/O here. Messages are Russian, for the clinic's staff reading the lead's notes: each names the
problem and what would be valid (the doctors who work that day, the nearest free times …).
"""

from __future__ import annotations

import hashlib
import re
from dataclasses import dataclass
from datetime import date, datetime, time
from typing import Any, Sequence
from zoneinfo import ZoneInfo

from amo1c_sync.domain.dates import amo_date_to_day, format_time, parse_user_time
from amo1c_sync.domain.slots import (BUSY, OFF_GRID, OUTSIDE, NotWorking, TimeRange, UnknownDoctor,
                                     format_intervals)

# --- date fields ------------------------------------------------------------------------------


def one_c_datetime(day: date, t: time) -> datetime:
    """1C keeps naive local date-times: no zone, no conversion."""
    return datetime.combine(day, t)


# --- what the lead asks for ---------------------------------------------------------------------


def clean_name(text: Any) -> str:
    """Trim and collapse whitespace: «  Петров   П.П. » -> «Петров П.П.»."""
    return re.sub(r"\s+", " ", str(text or "")).strip()


@dataclass(frozen=True)
class Request:
    """A valid-looking request: every required field present and parsed."""

    lead_id: int
    day: date
    doctor: str
    time: time
    client_name: str  # "" = the default client

    @property
    def fingerprint(self) -> str:
        return fingerprint(self)


@dataclass(frozen=True)
class Invalid:
    """A reason not to touch 1C; ``message`` goes into the lead's note as is."""

    code: str
    message: str


@dataclass(frozen=True)
class FieldLabels:
    """The lead fields as the clinic names them, for the notes."""

    date: str = "Дата записи к врачу"
    doctor: str = "Врач"
    time: str = "Время записи"
    client_name: str = "ФИО клиента"

    @classmethod
    def from_settings(cls, fields: Any) -> "FieldLabels":
        return cls(date=fields.date, doctor=fields.doctor, time=fields.time, client_name=fields.client_name)


def _blank(value: Any) -> bool:
    return value is None or (isinstance(value, str) and not value.strip()) or value is False


def parse_request(lead_id: int, *, date_value: Any, doctor_value: Any, time_value: Any,
                  client_value: Any, tz: ZoneInfo, labels: FieldLabels = FieldLabels(),
                  client_name_max: int = 0) -> Request | Invalid:
    """Raw field values (as amoCRM returns them) -> a Request, or Invalid naming what is missing,
    unreadable or too long. ``client_name_max`` is the longest client name 1C can hold (the
    Description length of its clients catalog; ``[sync] client_name_max_length``); 0 = no limit."""
    missing = [label for label, value in ((labels.date, date_value), (labels.doctor, doctor_value),
                                          (labels.time, time_value)) if _blank(value)]
    if missing:
        return Invalid("missing_fields", missing_message(missing))
    try:
        day = amo_date_to_day(date_value, tz)
    except (ValueError, OverflowError, OSError):
        return Invalid("bad_date", f"Поле «{labels.date}»: «{date_value}» — не дата. "
                                   "Выберите дату в календаре и нажмите кнопку ещё раз.")
    try:
        t = parse_user_time(str(time_value))
    except ValueError:
        return Invalid("bad_time", f"Поле «{labels.time}»: «{time_value}» — не время. "
                                   "Выберите время из списка (например, 9:05) и нажмите кнопку ещё раз.")
    client_name = clean_name(client_value)
    if client_name_max and len(client_name) > client_name_max:
        return Invalid("client_name_too_long",
                       too_long_message(labels.client_name, len(client_name), client_name_max))
    return Request(lead_id=int(lead_id), day=day, doctor=clean_name(doctor_value), time=t,
                   client_name=client_name)


def fingerprint(req: Request) -> str:
    """What makes two registrations "the same data": date, doctor, time and client name.
    64 hex characters (fits Registration.fingerprint)."""
    text = "\x1f".join((req.day.isoformat(), req.doctor.casefold(), format_time(req.time),
                        req.client_name.casefold()))
    return hashlib.sha256(text.encode("utf-8")).hexdigest()


# --- validation messages ------------------------------------------------------------------------


def fmt_day(d: date) -> str:
    return d.strftime("%d.%m.%Y")


def _quoted(names: Sequence[str]) -> str:
    return ", ".join(f"«{n}»" for n in names)


def _times(ts: Sequence[time]) -> str:
    return ", ".join(format_time(t) for t in ts)


def plural(n: int, one: str, few: str, many: str) -> str:
    """The Russian noun form for ``n``: 1 символ, 2 символа, 5 символов (11-14: символов)."""
    n = abs(n)
    if n % 10 == 1 and n % 100 != 11:
        return one
    if 2 <= n % 10 <= 4 and not 12 <= n % 100 <= 14:
        return few
    return many


def missing_message(missing: Sequence[str]) -> str:
    what = "не заполнено поле" if len(missing) == 1 else "не заполнены поля"
    return (f"Запись в 1С не создана: {what} {_quoted(missing)}. "
            "Заполните и нажмите кнопку ещё раз.")


def too_long_message(label: str, length: int, maximum: int) -> str:
    return (f"Запись в 1С не создана: поле «{label}» слишком длинное — {length} "
            f"{plural(length, 'символ', 'символа', 'символов')}, а в 1С помещается не больше {maximum} "
            f"{plural(maximum, 'символа', 'символов', 'символов')}. Сократите его и нажмите кнопку ещё раз.")


def working_list(day: date, working: Sequence[str]) -> str:
    if not working:
        return f"{fmt_day(day)} по графику не работает ни один врач — выберите другую дату."
    return f"{fmt_day(day)} работают: {', '.join(working)}."


def no_such_doctor_text(answer: UnknownDoctor | NotWorking) -> str:
    """For a person asking for a doctor's free times (CLI, widget): who works that day instead."""
    if isinstance(answer, UnknownDoctor):
        return finish_note(f"Врача «{answer.doctor}» нет в 1С. " + working_list(answer.day, answer.working))
    return finish_note(f"Врач «{answer.doctor}» не работает {fmt_day(answer.day)} по графику. "
                       + working_list(answer.day, answer.working))


def unknown_doctor_message(doctor: str, day: date, working: Sequence[str]) -> str:
    return f"Запись в 1С не создана: врача «{doctor}» нет в 1С. " + working_list(day, working)


def not_working_message(doctor: str, day: date, working: Sequence[str]) -> str:
    return (f"Запись в 1С не создана: врач «{doctor}» не работает {fmt_day(day)} по графику. "
            + working_list(day, working))


def free_list(free_near: Sequence[time]) -> str:
    if not free_near:
        return "Свободного времени у врача в этот день нет — выберите другой день или врача."
    return f"Ближайшее свободное время: {_times(free_near)}."


def time_message(reason: str, *, doctor: str, day: date, t: time, intervals: Sequence[TimeRange],
                 step_minutes: int, free_near: Sequence[time]) -> str:
    """The note for a time that is not free; ``reason`` from ``domain.slots.classify``."""
    head = f"Запись в 1С не создана: {fmt_day(day)} у врача «{doctor}» "
    if reason == BUSY:
        what = f"время {format_time(t)} занято."
    elif reason == OFF_GRID:
        starts = ", ".join(format_time(s) for s, _ in intervals)
        what = (f"время {format_time(t)} не попадает в сетку записи (каждые {step_minutes} мин "
                f"от начала приёма: {starts}).")
    elif reason == OUTSIDE:
        what = (f"время {format_time(t)} вне графика или приём не успевает закончиться "
                f"(график: {format_intervals(intervals)}).")
    else:
        what = f"время {format_time(t)} недоступно."
    return head + what + " " + free_list(free_near)


# --- notes after writing to 1C ------------------------------------------------------------------


def display_number(number: str) -> str:
    """A 1C document number as the clinic sees it: «219» from «00000000219» (1C zero-fills a
    numeric number; people do not), but a number with a prefix as it is: «МС00-000232»,
    «0000-000001». Padding spaces never count."""
    text = (number or "").strip()
    return (text.lstrip("0") or text) if text.isdigit() else text


def created_note(number: str) -> str:
    return f"Создан документ Заявка № {display_number(number)}"


def updated_note(number: str) -> str:
    return f"Изменён документ Заявка № {display_number(number)}"


def already_note(number: str, req: Request) -> str:
    return (f"Запись уже зарегистрирована: документ Заявка № {display_number(number)} "
            f"({fmt_day(req.day)} {format_time(req.time)}, {req.doctor}); данные не изменились, "
            "в 1С ничего не менялось.")


def client_remark(*, name: str, created: bool, matches: int, chosen_code: str = "") -> str | None:
    """A second line for the note about how the client was chosen, or None when nothing to say."""
    if created:
        return f"Клиент «{name}» не найден в 1С — создан новый клиент."
    if matches > 1:
        return (f"В 1С найдено клиентов «{name}»: {matches}; выбран первый по коду"
                + (f" ({chosen_code})." if chosen_code else "."))
    return None


def with_remarks(text: str, *remarks: str | None) -> str:
    return finish_note("\n".join([text, *[r for r in remarks if r]]))


_QUOTED = re.compile(r"(«[^«»]*»)")
_DOUBLE_PERIOD = re.compile(r"(?<!\.)\.\.(?!\.)")


def finish_note(text: str) -> str:
    """The note as it goes to the lead. Sentences end with a period, and some end with a name that
    already has one («… работают: Ишаева М.И.» + «.»): such a doubled period is written once.
    Text in «…» (a value as the user typed it or 1C holds it) and an ellipsis «...» are kept as is."""
    parts = _QUOTED.split(text)
    return "".join(p if i % 2 else _DOUBLE_PERIOD.sub(".", p) for i, p in enumerate(parts))
