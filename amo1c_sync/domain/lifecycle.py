"""F7, pure: what happened to a «Заявка» since it was last mirrored to its lead, what the lead's
note and fields say about it, and whether the lead moves to another stage.

No I/O here. The job hands in the state last mirrored (kept in the store) and the state 1C shows
now; everything it writes follows from the answers below. Comparing against the state last
mirrored — which is also what amo1c-sync itself last wrote to 1C — is what keeps its own writes
from coming back as events (no echoes, no loops).
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import date, time
from typing import Any, Iterable, Mapping
from zoneinfo import ZoneInfo

from amo1c_sync.domain.dates import format_time, local_date_to_amo
from amo1c_sync.domain.registration import clean_name, display_number, fmt_day
from amo1c_sync.errors import ConfigError

# amoCRM's system stages, the same ids in every pipeline: won 142, lost 143
# (https://www.amocrm.ru/developers/content/crm_platform/leads_pipelines — «Успешно реализовано
# (ID = 142), Закрыто и не реализовано (ID = 143)»)
WON, LOST = 142, 143
CLOSED_STATUSES = frozenset({WON, LOST})

STAGE_KEYS = ("registered", "cancelled", "no_show", "paid")

MOVED, CANCELLED, NO_SHOW, RESTORED = "moved", "cancelled", "no_show", "restored"
# why a «Заявка» counts as cancelled, strongest first: 1C unposts a document it marks for deletion,
# so a deletion mark explains an unposting, not the other way round
DELETION_MARK, STATE, UNPOSTED, REMOVED = "deletion_mark", "state", "unposted", "removed"


# --- the state followed -------------------------------------------------------------------------


@dataclass(frozen=True)
class Appointment:
    """What of a «Заявка» the lead mirrors. ``state`` is the configured status attribute's value
    ("" when the base has none)."""

    number: str
    day: date
    start: time
    doctor: str
    posted: bool = True
    deleted: bool = False
    state: str = ""

    @property
    def where(self) -> str:
        """The appointment as a note names it: «22.12.2021 9:05 Ефимова Е.В.»."""
        return f"{fmt_day(self.day)} {format_time(self.start)} {clean_name(self.doctor)}"

    def same_place(self, other: "Appointment") -> bool:
        return (self.day, self.start, clean_name(self.doctor).casefold()) == (
            other.day, other.start, clean_name(other.doctor).casefold())


@dataclass(frozen=True)
class StateValues:
    """The values of the «Заявка»'s status attribute that mean cancelled or no-show (none = off)."""

    cancelled: tuple[str, ...] = ()
    no_show: tuple[str, ...] = ()

    @staticmethod
    def _has(values: Iterable[str], value: str) -> bool:
        wanted = clean_name(value).casefold()
        return bool(wanted) and any(clean_name(v).casefold() == wanted for v in values)

    def is_cancelled(self, value: str) -> bool:
        return self._has(self.cancelled, value)

    def is_no_show(self, value: str) -> bool:
        return self._has(self.no_show, value)


def cancel_reason(a: Appointment | None, values: StateValues = StateValues()) -> str | None:
    """Why ``a`` is cancelled (DELETION_MARK, STATE, UNPOSTED, REMOVED for a «Заявка» gone from
    1C), or None when it stands."""
    if a is None:
        return REMOVED
    if a.deleted:
        return DELETION_MARK
    if values.is_cancelled(a.state):
        return STATE
    if not a.posted:
        return UNPOSTED
    return None


# --- events -------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Event:
    """One thing that happened in 1C. ``before`` is the state last mirrored, ``after`` the state now
    (None when the «Заявка» is gone)."""

    kind: str
    before: Appointment
    after: Appointment | None
    reason: str = ""

    @property
    def stage(self) -> str | None:
        """The ``[stages]`` key this event moves the lead to, if any."""
        return {CANCELLED: "cancelled", NO_SHOW: "no_show"}.get(self.kind)

    @property
    def note(self) -> str:
        after = self.after or self.before  # only a cancellation can have no «Заявка» after
        if self.kind == MOVED:
            return moved_note(self.before, after)
        if self.kind == CANCELLED:
            return cancelled_note(after, self.reason)
        if self.kind == NO_SHOW:
            return no_show_note(after)
        return restored_note(after)


def detect(last: Appointment | None, now: Appointment | None, values: StateValues = StateValues(), *,
           written: Appointment | None = None) -> tuple[Event, ...]:
    """The events between the state last mirrored and the state 1C shows now.

    ``written`` is what amo1c-sync itself wrote to 1C since (an update or a cancel from the card):
    it replaces ``last`` as the baseline, so 1C showing it back is no event. A «Заявка» seen for the
    first time (no baseline) is only a baseline: nothing is known to have happened to it. A
    cancelled one that is moved stays cancelled: the move says nothing to the lead.
    """
    base = written or last
    if base is None:
        return ()
    was, now_reason = cancel_reason(base, values), cancel_reason(now, values)
    if now_reason and not was:
        return (Event(CANCELLED, base, now, now_reason),)
    if now is None or now_reason:
        return ()
    events: list[Event] = []
    if was:
        events.append(Event(RESTORED, base, now, was))
    if not base.same_place(now):
        events.append(Event(MOVED, base, now))
    if values.is_no_show(now.state) and not values.is_no_show(base.state):
        events.append(Event(NO_SHOW, base, now))
    return tuple(events)


def lead_values(a: Appointment, tz: ZoneInfo) -> dict[str, Any]:
    """The lead's «Дата записи к врачу», «Врач», «Время записи» (by ``[fields]`` key) as 1C has
    them: the date as amoCRM keeps it (midnight in the clinic's zone), the time as the grid shows."""
    return {"date": local_date_to_amo(a.day, tz), "doctor": clean_name(a.doctor),
            "time": format_time(a.start)}


# --- notes --------------------------------------------------------------------------------------


def _zayavka(number: str) -> str:
    return f"Заявка № {display_number(number)}"


def moved_note(before: Appointment, after: Appointment) -> str:
    return f"Запись перенесена: {before.where} -> {after.where}"


_CANCELLED_WHY = {
    DELETION_MARK: "{z} помечена на удаление",
    UNPOSTED: "проведение документа {z} отменено",
    STATE: "{z}: состояние «{state}»",
    REMOVED: "{z} удалена",
}


def cancelled_note(a: Appointment, reason: str) -> str:
    why = _CANCELLED_WHY[reason].format(z=_zayavka(a.number), state=clean_name(a.state))
    return f"Запись отменена в 1С ({why}): {a.where}"


def no_show_note(a: Appointment) -> str:
    return (f"Пациент не пришёл на приём {a.where} ({_zayavka(a.number)}: состояние "
            f"«{clean_name(a.state)}»)")


def restored_note(a: Appointment) -> str:
    return f"Запись снова действует в 1С ({_zayavka(a.number)}): {a.where}"


def card_cancelled_note(number: str) -> str:
    """After the cancel button: the «Заявка» is marked for deletion (or unposted) in 1C."""
    return f"Запись отменена: {_zayavka(number)}"


CARD_CANCEL_REFUSED_HEAD = "Запись не отменена в 1С: "


def card_cancel_refused_note(number: str, reason: str) -> str:
    """1C refuses the cancel pressed on the card: said once; the cancel is retried."""
    return (f"{CARD_CANCEL_REFUSED_HEAD}{_zayavka(number)} — 1С отказала ({reason[:300]}). "
            "Отмена будет повторяться автоматически; эта заметка не повторится.")


def card_already_cancelled_note(number: str) -> str:
    return f"Запись уже отменена: {_zayavka(number)}; в 1С ничего не менялось."


def nothing_to_cancel_note() -> str:
    return "Отменять нечего: у сделки нет записи в 1С."


# --- stages -------------------------------------------------------------------------------------


@dataclass(frozen=True)
class StageName:
    """A stage as the clinic names it in ``[stages]``: «Запись к врачу / Отменена»."""

    pipeline: str
    stage: str

    def __str__(self) -> str:
        return f"{self.pipeline} / {self.stage}"


def parse_stage_name(text: str) -> StageName | None:
    """«Pipeline name / Stage name» -> StageName; empty -> None (no move). A name holding «/» itself
    is told apart by the spaces around the separator: «Запись / перезапись / Отменена» is ambiguous,
    «Запись/перезапись / Отменена» is not."""
    text = (text or "").strip()
    if not text:
        return None
    parts = text.split(" / ") if " / " in text else text.split("/")
    if len(parts) != 2 or not all(clean_name(p) for p in parts):
        raise ValueError(f'"{text}" is not "Pipeline name / Stage name" (one «/» between the two, '
                         "e.g. Запись к врачу / Отменена); leave it empty for no move")
    return StageName(clean_name(parts[0]), clean_name(parts[1]))


@dataclass(frozen=True)
class Stage:
    """A resolved stage: amoCRM's ids and the names for notes and logs."""

    pipeline_id: int
    status_id: int
    pipeline: str
    name: str

    def __str__(self) -> str:
        return f"{self.pipeline} / {self.name}"


def _pipelines(listing: Mapping[str, Any]) -> list[Mapping[str, Any]]:
    return list((listing.get("_embedded") or {}).get("pipelines") or [])


def _statuses(pipeline: Mapping[str, Any]) -> list[Mapping[str, Any]]:
    return list((pipeline.get("_embedded") or {}).get("statuses") or [])


def describe_pipelines(listing: Mapping[str, Any]) -> str:
    """«Запись к врачу»: «Новая заявка», «Отменена», …; «Воронка»: … — for error messages."""
    parts = [f"«{p.get('name')}»: " + ", ".join(f"«{s.get('name')}»" for s in _statuses(p))
             for p in _pipelines(listing)]
    return "; ".join(parts) or "(none)"


def _one(items: list[Mapping[str, Any]], name: str) -> list[Mapping[str, Any]]:
    wanted = clean_name(name).casefold()
    return [i for i in items if clean_name(str(i.get("name") or "")).casefold() == wanted]


def resolve_stage(key: str, name: StageName, listing: Mapping[str, Any], where: str) -> Stage:
    """``[stages] key`` against ``GET /api/v4/leads/pipelines``; a name that matches nothing or
    more than one stage is a ConfigError that lists the pipelines and stages there are."""
    head = f"{where} [stages] {key}: «{name}»"
    exist = f"pipelines and stages in amoCRM: {describe_pipelines(listing)}"
    pipelines = _one(_pipelines(listing), name.pipeline)
    if not pipelines:
        raise ConfigError(f"{head}: no pipeline «{name.pipeline}»; {exist}")
    if len(pipelines) > 1:
        raise ConfigError(f"{head}: {len(pipelines)} pipelines are named «{name.pipeline}»; rename "
                          f"one in amoCRM; {exist}")
    pipeline = pipelines[0]
    statuses = _one(_statuses(pipeline), name.stage)
    if len(statuses) != 1:
        what = "no stage" if not statuses else f"{len(statuses)} stages named"
        raise ConfigError(f"{head}: {what} «{name.stage}» in pipeline «{pipeline.get('name')}»; {exist}")
    return Stage(pipeline_id=int(pipeline["id"]), status_id=int(statuses[0]["id"]),
                 pipeline=str(pipeline.get("name")), name=str(statuses[0].get("name")))


def resolve_stages(names: Mapping[str, StageName | None], listing: Mapping[str, Any],
                   where: str = "sync.ini") -> dict[str, Stage]:
    """Every configured ``[stages]`` key resolved; keys left empty are absent (no move)."""
    return {key: resolve_stage(key, name, listing, where) for key, name in names.items() if name}


@dataclass(frozen=True)
class LeadStage:
    """Where the lead is now."""

    pipeline_id: int
    status_id: int


@dataclass(frozen=True)
class Move:
    """Move the lead to the stage ``to`` (``key`` names the rule)."""

    key: str
    to: Stage


@dataclass(frozen=True)
class Stay:
    """No move, and why: not_configured, already_there, closed, other_pipeline, already_passed."""

    key: str
    reason: str


def decide_move(key: str, lead: LeadStage, stages: Mapping[str, Stage], *,
                passed: Iterable[int] = (), move_closed: bool = False) -> Move | Stay:
    """Whether an event's ``[stages] key`` moves the lead. ``passed`` are the stage ids this
    «Заявка» has already moved the lead to: it never sends the lead back to one of them (a re-post
    is not a new registration). A lead closed (won/lost) or in another pipeline is the clinic's
    decision and is left alone unless ``[stages] move_closed = yes``."""
    target = stages.get(key)
    if target is None:
        return Stay(key, "not_configured")
    if (lead.pipeline_id, lead.status_id) == (target.pipeline_id, target.status_id):
        return Stay(key, "already_there")
    if not move_closed and lead.status_id in CLOSED_STATUSES:
        return Stay(key, "closed")
    if not move_closed and lead.pipeline_id != target.pipeline_id:
        return Stay(key, "other_pipeline")
    if target.status_id in set(passed):
        return Stay(key, "already_passed")
    return Move(key, target)


def lead_patch(lead_id: int, move: Move) -> dict[str, int]:
    """The element of a batched ``PATCH /api/v4/leads`` that moves the lead."""
    return {"id": int(lead_id), "pipeline_id": move.to.pipeline_id, "status_id": move.to.status_id}
