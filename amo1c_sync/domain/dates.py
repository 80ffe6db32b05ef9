"""Dates and times as people type them and as both systems store them."""

from __future__ import annotations

import re
from datetime import date, datetime, time, timedelta, timezone
from typing import Any
from zoneinfo import ZoneInfo

_DMY = re.compile(r"^\s*(\d{1,2})\.(\d{1,2})\.(\d{4})\s*$")
_ISO = re.compile(r"^\s*(\d{4})-(\d{1,2})-(\d{1,2})\s*$")
_HM = re.compile(r"^\s*(\d{1,2}):(\d{2})\s*$")


def parse_user_date(text: str) -> date:
    """'22.12.2021' or '2021-12-22'."""
    m = _DMY.match(text or "")
    try:
        if m:
            return date(int(m.group(3)), int(m.group(2)), int(m.group(1)))
        m = _ISO.match(text or "")
        if m:
            return date(int(m.group(1)), int(m.group(2)), int(m.group(3)))
    except ValueError:
        raise ValueError(f'"{text}" is not a real date; use 22.12.2021 or 2021-12-22') from None
    raise ValueError(f'"{text}" is not a date; use 22.12.2021 or 2021-12-22')


def parse_user_time(text: str) -> time:
    """'9:05' or '09:05'."""
    m = _HM.match(text or "")
    if not m or int(m.group(1)) > 23 or int(m.group(2)) > 59:
        raise ValueError(f'"{text}" is not a time; use 9:05 or 09:05')
    return time(int(m.group(1)), int(m.group(2)))


def format_time(t: time) -> str:
    """As the seed shows times: 8:15, 9:05, 13:00."""
    return f"{t.hour}:{t.minute:02d}"


def local_date_to_amo(d: date, tz: ZoneInfo) -> int:
    """amoCRM stores a date field as the unix time of midnight in the account's zone."""
    return int(datetime.combine(d, time(0, 0), tzinfo=tz).timestamp())


def amo_date_to_day(value: Any, tz: ZoneInfo) -> date:
    """An amoCRM ``date`` field value -> the calendar day in the clinic's zone.

    amoCRM keeps a date as the unix time of midnight in the account's zone. We take the local
    midnight NEAREST to that instant, so that a value written at midnight of a slightly different
    zone (account zone != [sync] timezone, a DST shift, a zone where midnight does not exist on the
    day clocks go forward) still lands on the intended day. Accepts an int, a numeric string, or an
    ISO date/datetime string (as some API versions return).
    """
    if isinstance(value, bool):
        raise ValueError(f"{value!r} is not a date")
    if isinstance(value, (int, float)) or (isinstance(value, str) and re.fullmatch(r"\s*-?\d+\s*", value)):
        local = datetime.fromtimestamp(int(value), tz=timezone.utc).astimezone(tz)
        day = local.date()
        # nearest midnight: compare to this day's and the next day's local midnight
        this_mid = datetime.combine(day, time(0), tzinfo=tz)
        if day == date.max:   # 31.12.9999: no next day to compare with
            return day
        next_mid = datetime.combine(day + timedelta(days=1), time(0), tzinfo=tz)
        if (next_mid - local) < (local - this_mid):
            day += timedelta(days=1)
        return day
    if isinstance(value, datetime):
        return (value.astimezone(tz) if value.tzinfo else value).date()
    if isinstance(value, date):
        return value
    if isinstance(value, str):
        text = value.strip()
        try:
            return parse_user_date(text)
        except ValueError:
            pass
        try:
            dt = datetime.fromisoformat(text.replace("Z", "+00:00"))
        except ValueError:
            raise ValueError(f'"{value}" is not a date') from None
        return (dt.astimezone(tz) if dt.tzinfo else dt).date()
    raise ValueError(f"{value!r} is not a date")
