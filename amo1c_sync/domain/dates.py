"""Dates and times as people type them and as both systems store them."""

from __future__ import annotations

import re
from datetime import date, datetime, time
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
