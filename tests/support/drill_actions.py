"""The fault drill's user ACTION classes (issues 14.3, 15, 17): what the clinic's people do besides
registering leads and posting «Оказание услуг», and the checks, from the emulators' own state,
that each came out right. Chosen like the fault classes (``DrillOptions.action_classes``,
``--actions``):

* ``patients`` (#17): a share of the valid leads carry a main contact with a phone in one of three
  spellings; some patients come twice (same name and phone: one client), some families share a
  phone (other names: separate clients). Checked: exactly one 1C client per patient, each
  «Заявка»'s ``client_ref`` that patient's client, «clients created» against the expected number.
* ``lifecycle`` (#15): the administrator moves «Заявки» in 1C (sometimes twice in a row), cancels
  some (deletion mark or unposting); the card cancels some (the cancel flag) and reschedules
  (the drill's card reschedules). Checked: the lead's date/doctor/time are what 1C says; the
  «Запись перенесена» notes agree with what the daemon could have seen (:func:`move_note_problems`);
  one cancel note and the «Отменена» stage for each cancel; no echo, no duplicate note.
* ``lifecycle_races`` (#15): the card reschedules a lead right after a move in 1C, before the
  daemon has mirrored it (the person saw the old time): the card's reschedule must win.
* ``onec_edits`` (#14.3): the 1C user enters a «Заявка» by hand with «Номер AmoCRM» empty or
  mistyped and corrects it later; deletes an «Оказание услуг» outright; moves a document's date
  back out of the hot window. ``onec_relink`` (#14.3): a hand-made «Заявка» first names another
  lead and is relinked to the right one later. Both are checked by the drill's totals check (each
  lead's «Сумма1С» and budget = its 1C total, as 1C links the documents now).

Nothing here imports the drill itself: the clinic, its plans and the control clients are handed in.
"""

from __future__ import annotations

import collections
import random
import time
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import TYPE_CHECKING, Any, Callable, Iterable
from zoneinfo import ZoneInfo

from amo1c_sync.domain import lifecycle as lc
from amo1c_sync.domain.patients import parse_phone, same_name

if TYPE_CHECKING:  # pragma: no cover
    from tests.support.drill import Clinic, LeadPlan, Slot

ACTION_CLASSES: tuple[str, ...] = ("patients", "lifecycle", "lifecycle_races", "onec_edits", "onec_relink")
# Classes left out of the default (the CI drill) while a hole they find is open on main: none now
# (lifecycle_races and onec_relink found the lifecycle's card races and the relinked money, fixed).
OPEN_ACTION_CLASSES: tuple[str, ...] = ()
DEFAULT_ACTION_CLASSES: tuple[str, ...] = tuple(c for c in ACTION_CLASSES if c not in OPEN_ACTION_CLASSES)

F_CANCEL = "Отменить запись в 1С"            # the sandbox's [fields] cancel_flag
STAGE_CANCELLED = "Отменена"                 # the sandbox's [stages] cancelled
BASELINED_STAGES = ("Записан на приём", "Оплачено")   # the lifecycle has seen the lead's «Заявка»
MOVED_HEAD, CANCELLED_1C_HEAD, CANCELLED_CARD_HEAD = "Запись перенесена: ", "Запись отменена в 1С", "Запись отменена: "
CARD, ONEC = "card", "1c"                    # who made a state of an appointment
HAND_SETTLE = 6.0                            # seconds a hand-made «Заявка» stands before it is fixed


def parse_action_classes(text: str) -> tuple[str, ...]:
    """``all``, ``default``, ``none`` or a comma list of ACTION_CLASSES; ValueError when unknown."""
    out: list[str] = []
    for part in (p.strip() for p in text.split(",") if p.strip()):
        names = {"all": ACTION_CLASSES, "default": DEFAULT_ACTION_CLASSES, "none": ()}.get(part, (part,))
        for name in names:
            if name not in ACTION_CLASSES:
                raise ValueError(f"unknown action class {name!r}; the classes are: {', '.join(ACTION_CLASSES)} "
                                 "(or all, default, none)")
            if name not in out:
                out.append(name)
    return tuple(out)


def plan_actions(classes: Iterable[str], registrations: int, postings: int, span: float,
                 rng: random.Random) -> list[tuple[float, str]]:
    """The classes' entries in the clinic's timetable: ``(seconds from the start, "act:<name>")``."""
    classes = set(classes)
    counts: list[tuple[str, int, float, float]] = []
    if "lifecycle" in classes:
        counts += [("move_1c", max(4, round(registrations * 0.08)), 0.4, 0.95),
                   ("cancel_1c", max(2, round(registrations * 0.04)), 0.5, 0.95),
                   ("cancel_card", max(2, round(registrations * 0.04)), 0.5, 0.95)]
    if "lifecycle_races" in classes:
        counts += [("move_then_reschedule", max(2, round(registrations * 0.04)), 0.4, 0.9)]
    hand = max(2, round(registrations * 0.04))
    if "onec_edits" in classes:
        counts += [("hand_zayavka", hand, 0.3, 0.6), ("fix_lead_number", hand, 0.7, 0.95),
                   ("delete_outright", max(2, round(postings * 0.01)), 0.3, 0.9),
                   ("move_date", max(2, round(postings * 0.01)), 0.3, 0.9)]
    if "onec_relink" in classes:
        counts += [("hand_relink", hand, 0.3, 0.6), ("fix_lead_number", hand, 0.7, 0.95)]
    return [(rng.uniform(lo * span, hi * span), f"act:{name}") for name, n, lo, hi in counts for _ in range(n)]


def extra_slots(classes: Iterable[str], registrations: int) -> int:
    """Free slots the classes take besides registrations and card reschedules (1C moves, hand-made
    «Заявки»)."""
    classes = set(classes)
    n = 0
    if "lifecycle" in classes:
        n += 2 * max(4, round(registrations * 0.08))
    if "lifecycle_races" in classes:
        n += 2 * max(2, round(registrations * 0.04))
    n += sum(max(2, round(registrations * 0.04)) for c in ("onec_edits", "onec_relink") if c in classes)
    return n


def where(slot: "Slot") -> str:
    """The appointment as the lifecycle's notes name it («22.12.2021 9:05 Ефимова Е.В.»)."""
    return lc.Appointment(number="", day=slot.day, start=slot.start, doctor=slot.doctor).where


# =============================================================================================
# patients
# =============================================================================================
_ROOTS = ("Орлов", "Волков", "Зайцев", "Морозов", "Лебедев", "Соколов", "Новиков", "Павлов", "Козлов",
          "Макаров", "Андреев", "Богданов", "Григорьев", "Денисов", "Жуков", "Захаров", "Титов", "Фролов",
          "Яковлев", "Тарасов", "Белов", "Комаров", "Медведев", "Никитин", "Осипов")
_WOMEN = ("Ольга Петровна", "Анна Сергеевна", "Мария Ивановна", "Елена Андреевна", "Татьяна Юрьевна")
_MEN = ("Пётр Иванович", "Игорь Олегович", "Дмитрий Павлович", "Сергей Николаевич", "Юрий Ильич")


@dataclass(frozen=True)
class Person:
    """A patient: a name and the 11 digits of the phone (``79215550101``) the family shares."""

    name: str
    phone: str


def spell_phone(digits: str, how: int) -> str:
    """One number, three spellings: «8 (921) 555-01-01», «+7 921 5550101», «79215550101»."""
    d = digits[1:]
    return (f"8 ({d[:3]}) {d[3:6]}-{d[6:8]}-{d[8:]}", f"+7 {d[:3]} {d[3:]}", digits)[how % 3]


def phone_digits(text: str) -> str:
    """The number's international digits, as the product would read it ("" when unreadable)."""
    parsed = parse_phone(text, "RU")
    return getattr(parsed, "digits", "")


class Patients:
    """The clinic's patients: families (one phone each), visits that repeat a patient, and the
    contact of each visit (a new one in another spelling, or the patient's earlier contact)."""

    def __init__(self, rng: random.Random, share: float = 0.6):
        self.rng, self.share = rng, share
        self.families: list[list[Person]] = []
        self.contacts: dict[Person, list[int]] = collections.defaultdict(list)   # amoCRM contact ids
        self._free_names: list[tuple[str, ...]] = []
        self._names_of: dict[str, list[str]] = {}   # a family's phone -> the relatives yet to come
        for i, root in enumerate(_ROOTS):
            self._free_names.append((f"{root}а {_WOMEN[i % 5]}", f"{root} {_MEN[i % 5]}",
                                     f"{root}а {_WOMEN[(i + 2) % 5]}"))
        self.rng.shuffle(self._free_names)

    def _new_family(self) -> Person | None:
        if not self._free_names:
            return None
        names = self._free_names.pop()
        phone = f"7921{len(self.families) + 100:03d}{self.rng.randint(0, 9999):04d}"
        self.families.append([Person(names[0], phone)])
        self._names_of[phone] = list(names[1:])
        return self.families[-1][0]

    def visit(self) -> tuple[Person, dict] | None:
        """Who comes next (or None: this lead has no contact) and the lead's body for it: its
        ``contact`` or ``contacts`` and, sometimes, «ФИО клиента» with a contact named loosely."""
        if self.rng.random() >= self.share:
            return None
        roll = self.rng.random()
        known = [p for fam in self.families for p in fam]
        growable = [fam for fam in self.families if self._names_of.get(fam[0].phone)]
        if roll < 0.4 and known:
            person = self.rng.choice(known)                       # the same patient again
        elif roll < 0.6 and growable:
            fam = self.rng.choice(growable)                       # a relative, same phone
            person = Person(self._names_of[fam[0].phone].pop(0), fam[0].phone)
            fam.append(person)
        else:
            person = self._new_family() or self.rng.choice(known)
        return person, self._body(person)

    def _body(self, person: Person) -> dict:
        fam = next(f for f in self.families if f[0].phone == person.phone)
        reuse = [cid for p in fam for cid in self.contacts.get(p, [])]
        if reuse and self.rng.random() < 0.35:
            # the same amoCRM contact again (a relative's, for a child): the lead's field names who
            own = self.contacts.get(person)
            cid = self.rng.choice(own) if own and self.rng.random() < 0.6 else self.rng.choice(reuse)
            return {"contacts": [{"id": cid}], "client": person.name}
        phone = spell_phone(person.phone, self.rng.randrange(3))
        if self.rng.random() < 0.3:   # a web form's contact: the first name only; the card has the full one
            return {"contact": {"name": person.name.split()[1], "phones": [phone]}, "client": person.name}
        return {"contact": {"name": person.name, "phones": [phone]}, "client": None}

    def remember(self, person: Person, lead_view: dict) -> None:
        contact = lead_view.get("contact") or {}
        if contact.get("id") is not None and contact["id"] not in self.contacts[person]:
            self.contacts[person].append(int(contact["id"]))


# =============================================================================================
# the actions
# =============================================================================================
@dataclass
class HandZayavka:
    """A «Заявка» a 1C user entered by hand: its «Номер AmoCRM» as typed, and what it becomes."""

    ref: str
    typed: str          # "" or a mistyped lead number, or another lead (a relink)
    final: int          # the lead the visit was for: «Номер AmoCRM» names it in the end
    at: float
    fixed: bool = False


@dataclass
class ActionLog:
    ops: collections.Counter = field(default_factory=collections.Counter)
    hand: dict[str, HandZayavka] = field(default_factory=dict)


class Actions:
    """Does the classes' actions on behalf of the clinic, through the control APIs only."""

    def __init__(self, clinic: "Clinic", classes: Iterable[str]):
        self.clinic = clinic
        self.classes = tuple(classes)
        self.rng = clinic.rng
        self.patients = Patients(random.Random(clinic.rng.random())) if "patients" in self.classes else None
        self.log = ActionLog()
        self.clients_at_start = {c["ref"] for c in clinic.onec.get("/_sandbox/clients")}

    def do(self, name: str) -> Any:
        return getattr(self, f"_a_{name}")()

    # -- helpers ------------------------------------------------------------------------------
    def _candidates(self) -> list["LeadPlan"]:
        """Registered leads nobody else acts on: not an anchor of a busy lead, not edited by hand
        in 1C, not cancelled or deleted."""
        return [p for p in self.clinic._ready_leads() if not (p.anchor or p.edited or p.cancelled or p.deleted)]

    def settled(self, plans: list["LeadPlan"]) -> list["LeadPlan"]:
        """The leads whose card shows their last move in 1C (when there was one): a reschedule from
        the card then cannot race the lifecycle's mirror of it (lifecycle_races does that)."""
        from tests.support.drill import F_DATE, F_DOCTOR, F_TIME

        out = []
        for plan in plans:
            if not plan.history or plan.history[-1][1] != ONEC:
                out.append(plan)
                continue
            lead = self.clinic.amo.get(f"/_sandbox/leads/{plan.id}")
            f, s = lead.get("fields") or {}, plan.slot
            notes = moved_notes(lead.get("notes") or [])
            if (f.get(F_DATE), f.get(F_DOCTOR)) == (s.date_text, s.doctor) and _same_time(f.get(F_TIME), s) \
                    and notes and notes[-1][1] == where(s):
                out.append(plan)
        return out

    def _baselined(self, tries: int = 8) -> tuple["LeadPlan", dict] | None:
        """A candidate whose «Заявка» the lifecycle has seen (its stage moved on), with its «Заявка»:
        before that, a change in 1C is only the baseline, by design."""
        pool = self._candidates()
        self.rng.shuffle(pool)
        for plan in pool[:tries]:
            if self.clinic.amo.get(f"/_sandbox/leads/{plan.id}").get("status") not in BASELINED_STAGES:
                continue
            own = [z for z in self.clinic.onec.get("/_sandbox/zayavki", params={"lead": plan.id})
                   if not z["deletion_mark"] and z["ref"] not in self.log.hand]
            if len(own) == 1:
                return plan, own[0]
        return None

    def _count(self, op: str, *leads: int, detail: str = "") -> str:
        self.log.ops[op] += 1
        self.clinic.ops[f"action.{op}"] += 1
        for lid in leads:
            self.clinic.touched[lid] += 1
        self.clinic.log(f"drill: action {op}: lead(s) {', '.join(map(str, leads)) or '-'}"
                        + (f": {detail}" if detail else ""))
        return op

    # -- lifecycle ----------------------------------------------------------------------------
    def _a_move_1c(self) -> str | None:
        """The administrator moves the visit in 1C (a third of the time twice in a row, faster than
        the daemon looks: one note for both is right then)."""
        found = self._baselined()
        if found is None or len(self.clinic._free_slots) < 2:
            return None
        plan, z = found
        for _ in range(2 if self.rng.random() < 0.33 else 1):
            slot = self.clinic._free_slots.pop(0)
            self.clinic.onec.call("PATCH", f"/_sandbox/zayavki/{z['ref']}",
                                  {"start": slot.start_iso, "doctor": slot.doctor})
            plan.slot = slot
            plan.history.append((slot, ONEC))
            self._count("move_1c", plan.id, detail=f"«Заявка» {z['number']} -> {where(slot)}")
        return "move_1c"

    def _a_move_then_reschedule(self) -> str | None:
        """A move in 1C and, at once, a reschedule from the card that still shows the old time."""
        found = self._baselined()
        if found is None or len(self.clinic._free_slots) < 2:
            return None
        plan, z = found
        slot = self.clinic._free_slots.pop(0)
        self.clinic.onec.call("PATCH", f"/_sandbox/zayavki/{z['ref']}",
                              {"start": slot.start_iso, "doctor": slot.doctor})
        plan.slot = slot
        plan.history.append((slot, ONEC))
        self.clinic.reschedule(plan)
        return self._count("move_then_reschedule", plan.id, detail=f"«Заявка» {z['number']} -> {where(slot)}, "
                                                                  f"then the card -> {where(plan.slot)}")

    def _a_cancel_1c(self) -> str | None:
        found = self._baselined()
        if found is None:
            return None
        plan, z = found
        how = self.rng.choice(("delete", "unpost"))
        self.clinic.onec.post(f"/_sandbox/zayavki/{z['ref']}/{how}")
        plan.cancelled = f"1c_{how}"
        self.clinic.retire(plan.id)
        return self._count(f"cancel_1c_{how}", plan.id, detail=f"«Заявка» {z['number']}")

    def _a_cancel_card(self) -> str | None:
        found = self._baselined()
        if found is None:
            return None
        plan, z = found
        self.clinic.amo.call("PATCH", f"/_sandbox/leads/{plan.id}", {"fields": {F_CANCEL: True}})
        plan.cancelled = "card"
        self.clinic.retire(plan.id)
        return self._count("cancel_card", plan.id, detail=f"«Заявка» {z['number']}")

    # -- 1C user's edits ----------------------------------------------------------------------
    def _a_hand_zayavka(self) -> str | None:
        """A «Заявка» entered by hand for a registered lead, its «Номер AmoCRM» left empty or
        mistyped (fixed later), with a payment based on it."""
        return self._hand(self.rng.choice(("empty", "typo")))

    def _a_hand_relink(self) -> str | None:
        """The same, its «Номер AmoCRM» naming another lead (relinked to the right one later)."""
        return self._hand("relink")

    def _hand(self, kind: str) -> str | None:
        pool = self._candidates()
        if len(pool) < 2 or not self.clinic._free_slots:
            return None
        plan, other = self.rng.sample(pool, 2)
        typed = {"empty": "", "typo": f"{str(plan.id)[:-1]}О", "relink": str(other.id)}[kind]
        slot = self.clinic._free_slots.pop(0)
        ref = self.clinic.onec.post("/_sandbox/zayavki", {"lead": typed or None, "doctor": slot.doctor,
                                                          "start": slot.start_iso, "posted": True})["ref"]
        self.log.hand[ref] = HandZayavka(ref, typed, plan.id, time.monotonic())
        plan.edited = other.edited = True
        service = self.clinic.add_service(ref, other.id if kind == "relink" else None)
        return self._count(f"hand_zayavka_{kind}", plan.id, other.id,
                           detail=f"«Заявка» {ref} «Номер AmoCRM» {typed!r}, service {service} "
                                  f"{self.clinic.services[service].amount}")

    def _a_fix_lead_number(self) -> str | None:
        """The user corrects «Номер AmoCRM» (a relink: names the lead the visit really was for)."""
        due = [h for h in self.log.hand.values() if not h.fixed and time.monotonic() - h.at >= HAND_SETTLE]
        if not due:
            return None
        h = self.rng.choice(due)
        self.clinic.onec.call("PATCH", f"/_sandbox/zayavki/{h.ref}", {"lead": str(h.final)})
        h.fixed = True
        old = [int(h.typed)] if h.typed.isdigit() else []
        return self._count("fix_lead_number", h.final, *old, detail=f"«Заявка» {h.ref} {h.typed!r} -> {h.final}")

    def _a_delete_outright(self) -> str | None:
        live = [s for s in self.clinic.services.values() if not s.deleted]
        if not live:
            return None
        s = self.rng.choice(live)
        self.clinic.onec.call("DELETE", f"/_sandbox/services/{s.ref}")
        s.deleted, s.posted = True, False
        return self._count("delete_outright", *([s.lead] if s.lead else []), detail=f"service {s.ref} {s.amount}")

    def _a_move_date(self) -> str | None:
        """A document's date moved back 4-40 days: out of the hot window, inside the lookback."""
        live = [s for s in self.clinic.services.values() if not s.deleted]
        if not live:
            return None
        s = self.rng.choice(live)
        when = (datetime.now(ZoneInfo("Europe/Moscow")).replace(tzinfo=None)
                - timedelta(days=self.rng.uniform(4, 40))).replace(microsecond=0)
        self.clinic.onec.call("PATCH", f"/_sandbox/services/{s.ref}", {"date": when.isoformat()})
        return self._count("move_date", *([s.lead] if s.lead else []), detail=f"service {s.ref} -> {when}")


# =============================================================================================
# the checks
# =============================================================================================
def move_note_problems(history: list[tuple[str, str]], notes: list[tuple[str, str]], *,
                       cancelled: bool = False) -> list[str]:
    """Which «Запись перенесена: X -> Y» notes cannot be right, for an appointment whose states were
    ``history`` (``[(where, CARD | ONEC)]`` in order, each state distinct; the first is the
    registration) and whose notes are ``notes`` (``[(X, Y)]`` in the order written).

    The daemon sees only some states (two moves in 1C between two of its reads are one move) and
    silently takes a state the card wrote as its new baseline, when it sees it. So, exactly:

    * every Y is a state 1C made (a Y the card made is an echo); no (X, Y) twice;
    * the notes go forward: Y's indices increase;
    * the first X is a state the card made before the first Y (the lifecycle's first baseline is
      taken before 1C changes anything: the drill waits for the lead's stage to say so); each next
      X is the previous Y, or a state the card made since;
    * when the last state is one 1C made and the visit was not cancelled after it, a note ends at
      it (the daemon, converged, has seen it).
    """
    index = {w: i for i, (w, _) in enumerate(history)}
    out: list[str] = []
    if len(index) != len(history):
        return [f"drill bug: the appointment's states are not distinct: {history}"]
    seen: set[tuple[str, str]] = set()
    prev_b: int | None = None
    for before, after in notes:
        tag = f"«{MOVED_HEAD}{before} -> {after}»"
        if (before, after) in seen:
            out.append(f"{tag} twice")
            continue
        seen.add((before, after))
        b, a = index.get(after), index.get(before)
        if b is None or a is None:
            out.append(f"{tag} names a state the appointment never had ({[w for w, _ in history]})")
            continue
        if history[b][1] == CARD:
            out.append(f"{tag} is an echo: the card made {after!r}")
            continue
        if prev_b is not None and b <= prev_b:
            out.append(f"{tag} goes back: after the note ending at {history[prev_b][0]!r}")
            continue
        lo = 0 if prev_b is None else prev_b
        allowed = {i for i in range(lo, b) if history[i][1] == CARD}
        if prev_b is not None:
            allowed.add(prev_b)
        if a not in allowed:
            out.append(f"{tag}: the move started from {before!r}, but the daemon's baseline then could "
                       f"only be one of {[history[i][0] for i in sorted(allowed)]}")
        prev_b = b
    last = len(history) - 1
    if history and history[last][1] == ONEC and not cancelled and prev_b != last and not out:
        out.append(f"no «{MOVED_HEAD}… -> {history[last][0]}» note for the last move in 1C")
    return out


def moved_notes(texts: Iterable[str]) -> list[tuple[str, str]]:
    out = []
    for t in texts:
        if t.startswith(MOVED_HEAD) and " -> " in t:
            before, _, after = t[len(MOVED_HEAD):].partition(" -> ")
            out.append((before.strip(), after.strip()))
    return out


def _same_time(shown: Any, slot: "Slot") -> bool:
    return str(shown or "").strip().lstrip("0") == f"{slot.start.hour}:{slot.start.minute:02d}".lstrip("0")


@dataclass
class ActionCheck:
    """The action classes' part of the drill's check."""

    wrong_lead_fields: int = 0          # date/doctor/time on the lead differ from its «Заявка» in 1C
    move_note_problems: int = 0         # «Запись перенесена» notes that cannot be right, or missing
    cancel_problems: int = 0            # a cancel without its one note, its stage, or with an echo
    duplicate_notes: int = 0            # a lifecycle note written twice on a lead
    second_zayavka_after_cancel: int = 0
    patients: int = 0                   # patients who came (each must have exactly one client)
    patient_duplicates: int = 0         # extra 1C clients for a patient
    patients_missing: int = 0           # a patient without a 1C client of their name and phone
    wrong_patient_clients: int = 0      # a «Заявка» booked on another client than its patient's
    families_merged: int = 0            # of those: booked on a relative's client
    clients_created: int = 0            # new 1C clients with a drill patient's phone
    clients_expected: int = 0
    name_only_duplicates: int = 0       # new clients without a phone, named alike twice

    @property
    def ok(self) -> bool:
        return not (self.wrong_lead_fields or self.move_note_problems or self.cancel_problems
                    or self.duplicate_notes or self.second_zayavka_after_cancel or self.patient_duplicates
                    or self.patients_missing or self.wrong_patient_clients
                    or self.clients_created != self.clients_expected or self.name_only_duplicates)

    def summary(self) -> str:
        return (f"lead fields {self.wrong_lead_fields}, move notes {self.move_note_problems}, cancels "
                f"{self.cancel_problems}, duplicate notes {self.duplicate_notes}, second «Заявка» after a "
                f"cancel {self.second_zayavka_after_cancel}; patients {self.patients}: clients created "
                f"{self.clients_created} (expected {self.clients_expected}), duplicates "
                f"{self.patient_duplicates}, missing {self.patients_missing}, wrong client "
                f"{self.wrong_patient_clients} (a relative's {self.families_merged}), name-only "
                f"duplicates {self.name_only_duplicates}")


def check_lead(res: ActionCheck, problem: Callable[[str], None], plan: "LeadPlan", lead: dict,
               own: list[dict]) -> None:
    """One valid, live lead: its fields, its lifecycle notes, its cancel. ``own`` are the lead's
    «Заявки» in 1C (deleted ones too), not counting those a 1C user made by hand."""
    notes = list(lead.get("notes") or [])
    lifecycle_notes = [n for n in notes if n.startswith((MOVED_HEAD, CANCELLED_1C_HEAD, CANCELLED_CARD_HEAD))]
    twice = [n for n, k in collections.Counter(lifecycle_notes).items() if k > 1]
    if twice:
        res.duplicate_notes += len(twice)
        problem(f"lead {plan.id}: note written twice: {twice[0]!r}")
    fields = lead.get("fields") or {}
    if not plan.cancelled and plan.slot is not None:
        from tests.support.drill import F_DATE, F_DOCTOR, F_TIME

        s = plan.slot
        shown = (fields.get(F_DATE), fields.get(F_DOCTOR))
        if shown != (s.date_text, s.doctor) or not _same_time(fields.get(F_TIME), s):
            res.wrong_lead_fields += 1
            problem(f"lead {plan.id}: the card shows {fields.get(F_DATE)} {fields.get(F_TIME)} "
                    f"{fields.get(F_DOCTOR)}, 1C has {s.date_text} {s.time_text} {s.doctor}")
    history = [(where(s), src) for s, src in plan.history]
    for p in move_note_problems(history, moved_notes(notes), cancelled=bool(plan.cancelled)):
        res.move_note_problems += 1
        problem(f"lead {plan.id}: {p}")
    if plan.cancelled:
        _check_cancel(res, problem, plan, lead, notes, own)


def _check_cancel(res: ActionCheck, problem: Callable[[str], None], plan: "LeadPlan", lead: dict,
                  notes: list[str], own: list[dict]) -> None:
    standing = [z for z in own if not z["deletion_mark"]]
    mine = own[-1] if own else None
    if mine is None:
        res.cancel_problems += 1
        problem(f"lead {plan.id}: cancelled ({plan.cancelled}) but has no «Заявка» at all")
        return
    want_standing = 1 if plan.cancelled == "1c_unpost" else 0
    if len(standing) > want_standing:
        res.second_zayavka_after_cancel += len(standing) - want_standing
        problem(f"lead {plan.id}: cancelled ({plan.cancelled}), yet «Заявки» stand: "
                f"{[z['number'] for z in standing]}")
    from_1c = [n for n in notes if n.startswith(CANCELLED_1C_HEAD)]
    from_card = [n for n in notes if n.startswith(CANCELLED_CARD_HEAD)]
    why = []
    if plan.cancelled == "card":
        want = lc.card_cancelled_note(mine["number"])
        if from_card != [want]:
            why.append(f"card cancel notes {from_card}, expected [{want!r}]")
        if from_1c:
            why.append(f"an echo «{from_1c[0]}»")
        if (lead.get("fields") or {}).get(F_CANCEL) is True:
            why.append("the cancel flag is still set")
        if not mine["deletion_mark"]:
            why.append(f"«Заявка» {mine['number']} is not marked for deletion")
    else:
        reason = lc.DELETION_MARK if plan.cancelled == "1c_delete" else lc.UNPOSTED
        a = lc.Appointment(number=mine["number"], day=plan.slot.day, start=plan.slot.start,
                           doctor=plan.slot.doctor, posted=False, deleted=reason == lc.DELETION_MARK)
        want = lc.cancelled_note(a, reason)
        if from_1c != [want]:
            why.append(f"cancel notes {from_1c}, expected [{want!r}]")
        if from_card:
            why.append(f"a card's cancel note «{from_card[0]}»")
    if lead.get("status") != STAGE_CANCELLED:
        why.append(f"stage «{lead.get('status')}», expected «{STAGE_CANCELLED}»")
    if why:
        res.cancel_problems += 1
        problem(f"lead {plan.id}: cancelled ({plan.cancelled}): " + "; ".join(why))


def check_patients(res: ActionCheck, problem: Callable[[str], None], plans: Iterable["LeadPlan"],
                   zayavki_of: Callable[[int], list[dict]], clients: list[dict], known: set[str]) -> None:
    """Exactly one live 1C client per patient who came (their name, their phone), each patient's
    «Заявка» booked on it; the new clients with a patient's phone are as many as the patients."""
    visits = [p for p in plans if p.person is not None]
    persons = sorted({p.person for p in visits}, key=lambda x: (x.phone, x.name))
    res.patients = len(persons)
    live = [c for c in clients if not c["deletion_mark"]]
    digits = {c["ref"]: {phone_digits(x) for x in c.get("phones") or []} for c in live}
    client_of: dict[Any, str] = {}
    for person in persons:
        hits = [c for c in live if person.phone in digits[c["ref"]] and same_name(c["name"], person.name)]
        if not hits:
            res.patients_missing += 1
            problem(f"patient {person.name} {person.phone}: no 1C client with that name and phone")
        elif len(hits) > 1:
            res.patient_duplicates += len(hits) - 1
            problem(f"patient {person.name} {person.phone}: {len(hits)} clients ({', '.join(c['code'] for c in hits)})")
        if hits:
            client_of[person] = hits[0]["ref"]
    relatives = {ref: person for person, ref in client_of.items()}
    for plan in visits:
        want = client_of.get(plan.person)
        for z in zayavki_of(plan.id):
            if want is not None and z.get("client_ref") != want:
                res.wrong_patient_clients += 1
                other = relatives.get(z.get("client_ref"))
                if other is not None and other.phone == plan.person.phone:
                    res.families_merged += 1
                problem(f"lead {plan.id}: «Заявка» {z['number']} is booked on {z.get('client')!r}, "
                        f"the patient is {plan.person.name}")
    phones = {p.phone for p in persons}
    new = [c for c in clients if c["ref"] not in known]
    res.clients_created = sum(1 for c in new if digits.get(c["ref"], set()) & phones)
    res.clients_expected = len(persons)
    if res.clients_created != res.clients_expected:
        problem(f"clients created for the patients: {res.clients_created}, expected {res.clients_expected}")
    names: collections.Counter = collections.Counter(
        " ".join(c["name"].casefold().replace("ё", "е").split()) for c in new if not c.get("phones"))
    res.name_only_duplicates = sum(k - 1 for k in names.values() if k > 1)
    if res.name_only_duplicates:
        problem(f"clients without a phone created twice: {[n for n, k in names.items() if k > 1][:3]}")
