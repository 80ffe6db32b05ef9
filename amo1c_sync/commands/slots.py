"""`amo1c-sync slots DATE [--doctor NAME] [--json]`: who works that day, or one doctor's free times.

Exit codes: 0 ok; 1 the doctor is unknown or does not work that day (the message lists who does),
or 1C failed; 2 a bad date or config.
"""

from __future__ import annotations

import sys

from amo1c_sync.commands.common import print_json, settings_from
from amo1c_sync.domain.dates import format_time, parse_user_date
from amo1c_sync.domain.registration import finish_note, no_such_doctor_text
from amo1c_sync.domain.slots import NotWorking, UnknownDoctor
from amo1c_sync.errors import ItemError, RetriableError


def main(args) -> int:
    try:
        day = parse_user_date(args.date)
    except ValueError as exc:
        print(f"amo1c-sync slots: {exc}", file=sys.stderr)
        return 2
    settings = settings_from(args)
    from amo1c_sync import onec as onec_pkg
    from amo1c_sync.services.slots import SlotFinder

    finder = SlotFinder.from_settings(settings, onec_pkg.from_settings(settings))
    as_json = getattr(args, "json", False)
    try:
        if not args.doctor:
            return _doctors(day, finder.doctors(day), as_json)
        info = finder.day_of(day, args.doctor)
    except ItemError as exc:
        return _failed(as_json, day, args.doctor, finish_note(str(exc)), exc.code)
    except RetriableError as exc:
        # the gateway's message already names 1C and the request; add where 1C was looked for
        return _failed(as_json, day, args.doctor, f"{exc} (at {settings.onec.base_url})", "unreachable")
    if isinstance(info, (UnknownDoctor, NotWorking)):
        return _failed(as_json, day, args.doctor, no_such_doctor_text(info), info.code)
    times = [format_time(t) for t in info.free]
    if as_json:
        print_json({"date": day.isoformat(), "doctor": info.doctor, "times": times,
                    "working_hours": [[format_time(s), format_time(e)] for s, e in info.intervals],
                    "step_minutes": finder.step_minutes,
                    "appointment_minutes": finder.appointment_minutes})
    else:
        for t in times:
            print(t)
        if not times:
            print(f"{info.doctor}, {day:%d.%m.%Y}: свободного времени нет", file=sys.stderr)
    return 0


def _doctors(day, doctors: list[str], as_json: bool) -> int:
    if as_json:
        print_json({"date": day.isoformat(), "doctors": doctors})
    elif doctors:
        for name in doctors:
            print(name)
    else:
        print(f"{day:%d.%m.%Y}: по графику не работает ни один врач")
    return 0


def _failed(as_json: bool, day, doctor: str | None, message: str, code: str | None) -> int:
    """Exit 1 with the reason: on stdout as JSON when --json was asked (a script reads one place),
    else on stderr."""
    if as_json:
        print_json({"date": day.isoformat(), "doctor": doctor, "error": message, "code": code})
    else:
        print(f"amo1c-sync slots: {message}", file=sys.stderr)
    return 1
