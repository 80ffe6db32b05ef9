"""The fault drill, small (issue 9): 50 registrations and 200 postings against the real daemon,
with at least 5 SIGKILL restarts and every kind of fault; nothing lost, nothing duplicated.

Run: .venv/bin/pytest -q -m drill tests/drill   (about 2-3 minutes per store on 2 cores)
Both stores (SQLite file, PostgreSQL scratch database), with the after-commit fault classes of
DEFAULT_FAULT_CLASSES (all of them now); AMO1C_DRILL_FAULTS (``none``, ``patch_lost,create_late``, …)
picks others. The user action classes (tests/support/drill_actions.py) of DEFAULT_ACTION_CLASSES
too: every class but OPEN_ACTION_CLASSES, which find holes not closed on main yet; AMO1C_DRILL_ACTIONS
(``all``, ``none``, ``patients,lifecycle``, …) picks others.
The big one is benchmarks/drill.py. The fast tests below check the drill's own parts (no marker).
"""

from __future__ import annotations

import os
import random
from datetime import date
from decimal import Decimal

import pytest

from tests.support.drill import (
    AFTER_COMMIT,
    DEFAULT_FAULT_CLASSES,
    FAULT_CLASSES,
    KILL_HOLDING_PATCH,
    ArrivalRecorder,
    DrillError,
    DrillOptions,
    Schedule,
    api_total,
    assert_loopback,
    expected_totals,
    make_chaos_plan,
    parse_action_classes,
    parse_fault_classes,
    run_drill,
)
from tests.support.drill_actions import (
    ACTION_CLASSES,
    CARD,
    DEFAULT_ACTION_CLASSES,
    ONEC,
    OPEN_ACTION_CLASSES,
    Patients,
    move_note_problems,
    phone_digits,
    plan_actions,
    spell_phone,
)


@pytest.mark.drill
@pytest.mark.timeout(420)
@pytest.mark.parametrize("store", ["sqlite", pytest.param("postgresql", marks=pytest.mark.postgres)])
def test_given_faults_and_kills_when_the_clinic_works_then_nothing_is_lost_or_duplicated(tmp_path, store):
    classes = parse_fault_classes(os.environ.get("AMO1C_DRILL_FAULTS", "default"))
    actions = parse_action_classes(os.environ.get("AMO1C_DRILL_ACTIONS", "default"))
    opts = DrillOptions(registrations=50, postings=200, seed=9, restarts=5, action_seconds=75,
                        converge_timeout=120, workdir=tmp_path / "drill", store=store, fault_classes=classes,
                        action_classes=actions)
    report = run_drill(opts, log=lambda m: print(m, flush=True))
    table = report.format_table()
    print(table)
    assert report.ok, table + "\n\nlast lines of daemon.log:\n" + report.daemon_log_tail
    assert report.check.duplicates == 0
    assert report.check.wrong_totals == 0
    assert report.restarts >= 5
    assert report.refresh_reuse == 0
    assert report.max_per_second <= 7
    assert report.faults.get("daemon SIGKILL", 0) >= 5
    for kind in ("1C 500", "1C dropped connection", "1C slow past read timeout", "amoCRM 429 storm",
                 "amoCRM token expiry", "amoCRM 403 block window"):
        assert report.faults.get(kind, 0) >= 1, f"no {kind} injected: {report.faults}"
    for cls in classes:
        label = AFTER_COMMIT[cls][2] if cls in AFTER_COMMIT else "daemon SIGKILL while amoCRM holds a written PATCH"
        assert report.faults.get(label, 0) >= 1, f"no {cls} injected: {report.faults}"
    assert report.settled_samples >= 10   # it kept checking after convergence
    if actions:
        assert report.check.actions is not None
        assert report.check.actions.ok, report.check.actions.summary()
        done = {k.split(".", 1)[1] for k in report.clinic_ops if k.startswith("action.")}
        wanted = {"lifecycle": {"move_1c", "cancel_card"}, "onec_edits": {"fix_lead_number", "delete_outright",
                                                                         "move_date"},
                  "onec_relink": {"hand_zayavka_relink"}}
        for cls in actions:
            assert wanted.get(cls, set()) <= done, f"{cls}: not every action was done: {sorted(done)}"
        if "patients" in actions:
            assert report.check.actions.clients_expected >= 5


# --- the drill's own parts (fast, no marker) ------------------------------------------------------

def test_given_the_seed_schedule_when_slots_are_planned_then_they_are_distinct_inside_the_hours_and_22_12_first():
    sch = Schedule.seed()
    slots = sch.plan(300, 15, 5, random.Random(1))
    assert len(set(slots)) == 300
    assert slots[0].day == date(2021, 12, 22)
    for s in slots:
        spans = sch.intervals[(s.doctor, s.day)]
        m = s.start.hour * 60 + s.start.minute
        assert any(a <= m and m + 15 <= b for a, b in spans), s
    assert Schedule.seed().capacity(15, 5) == 829
    with pytest.raises(DrillError):
        sch.plan(10_000, 15, 5, random.Random(1))


def test_given_the_seed_schedule_when_invalid_combos_are_asked_then_they_are_really_invalid():
    sch, rng = Schedule.seed(), random.Random(3)
    for _ in range(20):
        doctor, day = sch.not_working(rng)
        assert not sch.works(doctor, day)
        assert day.month == 12
        doctor, day, t = sch.outside_hours(rng, 15)
        m = t.hour * 60 + t.minute
        assert all(m + 15 <= a or m >= b for a, b in sch.intervals[(doctor, day)])


def test_given_1c_documents_when_expected_totals_are_computed_then_only_posted_undeleted_with_a_lead_count():
    services = [
        {"lead": "7", "posted": True, "deletion_mark": False, "amount": "150.00"},
        {"lead": "7", "posted": True, "deletion_mark": False, "amount": "50.50"},
        {"lead": "7", "posted": False, "deletion_mark": False, "amount": "1000"},
        {"lead": "7", "posted": False, "deletion_mark": True, "amount": "1000"},
        {"lead": None, "posted": True, "deletion_mark": False, "amount": "999"},
        {"lead": "", "posted": True, "deletion_mark": False, "amount": "999"},
    ]
    assert expected_totals(services) == {7: Decimal("200.50")}


def test_given_a_span_when_the_chaos_plan_is_made_then_it_has_every_fault_and_the_block_comes_before_a_kill():
    plan = make_chaos_plan(random.Random(5), 75, restarts=5, onec_fault_ratio=0.1, onec_read_timeout=2)
    kinds = [k for _, k in plan.events]
    assert kinds.count("kill") == 5
    assert {"storm", "expire", "block", "slow"} <= set(kinds)
    block = next(t for t, k in plan.events if k == "block")
    assert any(t > block for t, k in plan.events if k == "kill")
    assert plan.slow_ms > 2000


def test_given_arrival_times_when_the_worst_window_is_asked_then_it_counts_a_sliding_second():
    class Fake:
        def requests(self):
            return {"log": [{"path": "/api/v4/leads", "at": t} for t in (0.0, 0.1, 0.2, 1.05, 1.1, 1.15, 1.16, 3.0)]
                    + [{"path": "/oauth2/access_token", "at": 1.12}]}

    rec = ArrivalRecorder(Fake())
    rec._offset = 0.0
    assert rec.worst_window() == (5, 0.2)


def test_given_an_address_that_is_not_loopback_when_the_drill_would_use_it_then_it_refuses():
    assert assert_loopback("http://127.0.0.1:8080/") == "http://127.0.0.1:8080"
    with pytest.raises(DrillError):
        assert_loopback("https://clinic.amocrm.ru")


def test_given_fault_class_lists_when_parsed_then_names_expand_and_an_unknown_one_is_refused():
    assert parse_fault_classes("default") == DEFAULT_FAULT_CLASSES
    assert parse_fault_classes("all") == FAULT_CLASSES
    assert parse_fault_classes("none") == ()
    assert parse_fault_classes("patch_lost,create_carried_out_late") == ("patch_lost", "create_carried_out_late")
    assert "create_carried_out_late" in DEFAULT_FAULT_CLASSES   # #14.1 closed: no open class left out
    assert parse_fault_classes("patch_lost, patch_lost") == ("patch_lost",)
    with pytest.raises(DrillError, match="unknown fault class 'patch_gone'.*patch_lost"):
        parse_fault_classes("patch_gone")


def test_given_fault_classes_when_the_chaos_plan_is_made_then_each_comes_per_class_times():
    plan = make_chaos_plan(random.Random(2), 75, restarts=5, onec_fault_ratio=0.1, onec_read_timeout=2,
                           fault_classes=("create_lost", KILL_HOLDING_PATCH), per_class=3, amo_read_timeout=5)
    kinds = [k for _, k in plan.events]
    assert kinds.count("create_lost") == 3
    assert kinds.count(KILL_HOLDING_PATCH) == 3
    assert plan.amo_late_ms > 5000
    assert plan.slow_ms > 2000


# --- the user action classes' own parts (fast, no marker) ---------------------------------------

def _states(*spec: str) -> list[tuple[str, str]]:
    """"c:A" = the card made A, "1:B" = 1C made B."""
    return [(s[2:], CARD if s[0] == "c" else ONEC) for s in spec]


def test_given_moves_in_1c_when_the_daemon_saw_each_then_one_note_per_move_in_a_chain_passes():
    history = _states("c:A", "1:B", "1:C")
    assert move_note_problems(history, [("A", "B"), ("B", "C")]) == []


def test_given_two_moves_in_1c_between_two_reads_when_one_note_covers_both_then_it_passes():
    assert move_note_problems(_states("c:A", "1:B", "1:C"), [("A", "C")]) == []


def test_given_a_move_in_1c_when_no_note_ends_at_the_last_state_then_it_is_missing():
    problems = move_note_problems(_states("c:A", "1:B", "1:C"), [("A", "B")])
    assert problems
    assert "no «Запись перенесена: … -> C»" in problems[0]
    assert move_note_problems(_states("c:A", "1:B"), []) != []
    # a cancel after the move: 1C's cancel note covers it
    assert move_note_problems(_states("c:A", "1:B"), [], cancelled=True) == []


def test_given_notes_when_one_is_an_echo_a_duplicate_or_goes_back_then_each_is_named():
    echo = move_note_problems(_states("c:A", "1:B", "c:C"), [("A", "B"), ("B", "C")])
    assert any("echo" in p for p in echo)
    twice = move_note_problems(_states("c:A", "1:B"), [("A", "B"), ("A", "B")])
    assert any("twice" in p for p in twice)
    back = move_note_problems(_states("c:A", "1:B", "1:C"), [("A", "C"), ("A", "B")])
    assert any("goes back" in p for p in back)
    unknown = move_note_problems(_states("c:A", "1:B"), [("X", "B")])
    assert any("never had" in p for p in unknown)


def test_given_a_card_reschedule_between_moves_when_the_baseline_is_the_cards_or_the_old_one_then_both_pass():
    history = _states("c:A", "1:B", "c:C", "1:D")
    assert move_note_problems(history, [("A", "B"), ("C", "D")]) == []   # the daemon saw C
    assert move_note_problems(history, [("A", "B"), ("B", "D")]) == []   # it had not seen C yet
    assert move_note_problems(history, [("C", "D")]) == []               # B overwritten before it looked
    # but not from a state the daemon's baseline can no longer be
    assert move_note_problems(history, [("A", "B"), ("A", "D")]) != []
    assert move_note_problems(_states("c:A", "1:B", "1:C"), [("A", "B"), ("A", "C")]) != []


def test_given_a_history_with_a_state_twice_when_checked_then_the_drill_says_it_is_its_own_bug():
    assert "drill bug" in move_note_problems(_states("c:A", "1:A"), [])[0]


def test_given_action_class_lists_when_parsed_then_names_expand_and_an_unknown_one_is_refused():
    assert parse_action_classes("all") == ACTION_CLASSES
    assert parse_action_classes("default") == DEFAULT_ACTION_CLASSES
    assert parse_action_classes("none") == ()
    assert parse_action_classes("lifecycle, patients,lifecycle") == ("lifecycle", "patients")
    assert not set(OPEN_ACTION_CLASSES) & set(DEFAULT_ACTION_CLASSES)
    with pytest.raises(DrillError, match="unknown action class 'patient'.*patients"):
        parse_action_classes("patient")


def test_given_action_classes_when_the_timetable_is_made_then_each_class_has_its_actions_inside_the_span():
    acts = plan_actions(ACTION_CLASSES, 60, 200, 75, random.Random(4))
    names = {a.split(":", 1)[1] for _, a in acts}
    assert {"move_1c", "cancel_1c", "cancel_card", "hand_zayavka", "hand_relink", "fix_lead_number",
            "delete_outright", "move_date", "move_then_reschedule"} <= names
    assert all(0 <= t <= 75 for t, _ in acts)
    fixes = sum(1 for _, a in acts if a == "act:fix_lead_number")
    hands = sum(1 for _, a in acts if a in ("act:hand_zayavka", "act:hand_relink"))
    assert fixes == hands
    assert plan_actions((), 60, 200, 75, random.Random(4)) == []


def test_given_one_phone_when_spelled_three_ways_then_the_product_reads_them_as_one_number():
    spellings = {spell_phone("79215550101", k) for k in range(3)}
    assert spellings == {"8 (921) 555-01-01", "+7 921 5550101", "79215550101"}
    assert {phone_digits(s) for s in spellings} == {"79215550101"}


def test_given_patients_when_visits_are_drawn_then_relatives_share_a_phone_and_names_stay_apart():
    book = Patients(random.Random(7), share=1.0)
    people = [book.visit()[0] for _ in range(120)]
    by_phone: dict[str, set[str]] = {}
    for p in people:
        by_phone.setdefault(p.phone, set()).add(p.name)
    assert any(len(names) > 1 for names in by_phone.values())          # a family
    assert len(set(people)) < len(people)                                # someone came twice
    from amo1c_sync.domain.patients import names_match
    everyone = sorted(set(people), key=lambda p: p.name)
    for a in everyone:                                                   # no two patients a match could merge
        assert not any(a != b and a.phone == b.phone and names_match(a.name, b.name) for b in everyone)
    assert len({p.phone for p in people}) == len(by_phone)


def _cancelled_lead(how: str, notes: list[str], status: str = "Отменена", flag: bool = False):
    from datetime import time as dtime

    from tests.support.drill import F_DATE, F_DOCTOR, F_TIME, LeadPlan, Slot

    slot = Slot(date(2026, 12, 3), "Ефимова Е.В.", dtime(9, 5))
    plan = LeadPlan(id=7, kind="valid", slot=slot, history=[(slot, CARD)], cancelled=how)
    lead = {"id": 7, "notes": notes, "status": status,
            "fields": {F_DATE: "03.12.2026", F_DOCTOR: "Ефимова Е.В.", F_TIME: "09:05", "Отменить запись в 1С": flag}}
    own = [{"ref": "r", "number": "00000000219", "deletion_mark": how != "1c_unpost", "posted": False}]
    return plan, lead, own


@pytest.mark.parametrize(("how", "notes", "status", "flag", "problems"), [
    ("card", ["Запись отменена: Заявка № 219"], "Отменена", False, 0),
    ("card", ["Запись отменена: Заявка № 219",
              "Запись отменена в 1С (Заявка № 219 помечена на удаление): 03.12.2026 9:05 Ефимова Е.В."],
     "Отменена", False, 1),                                                    # an echo
    ("card", ["Запись отменена: Заявка № 219"], "Записан на приём", False, 1),  # no stage move
    ("card", ["Запись отменена: Заявка № 219"], "Отменена", True, 1),            # flag left set
    ("1c_delete", ["Запись отменена в 1С (Заявка № 219 помечена на удаление): 03.12.2026 9:05 Ефимова Е.В."],
     "Отменена", False, 0),
    ("1c_unpost", ["Запись отменена в 1С (проведение документа Заявка № 219 отменено): 03.12.2026 9:05 Ефимова Е.В."],
     "Отменена", False, 0),
    ("1c_unpost", [], "Отменена", False, 1),                                   # no note
])
def test_given_a_cancelled_lead_when_checked_then_its_one_note_stage_and_flag_are_required(
        how, notes, status, flag, problems):
    from tests.support.drill_actions import ActionCheck, check_lead

    res, said = ActionCheck(), []
    check_lead(res, said.append, *_cancelled_lead(how, notes, status, flag))
    assert res.cancel_problems == problems, said


def test_given_a_lifecycle_note_twice_when_checked_then_it_is_a_duplicate():
    from tests.support.drill_actions import ActionCheck, check_lead

    res = ActionCheck()
    check_lead(res, lambda _: None, *_cancelled_lead("card", ["Запись отменена: Заявка № 219"] * 2))
    assert res.duplicate_notes == 1


def test_given_an_emulators_request_counts_when_api_requests_are_totalled_then_the_control_api_is_left_out():
    traffic = {"counts": {"PATCH /api/v4/leads": 40, "GET /api/v4/events": 7, "GET /_sandbox/leads": 900,
                          "POST /oauth2/access_token": 3}}

    assert api_total(traffic, "/api/") == 47
    assert api_total({}, "/odata/") == 0
