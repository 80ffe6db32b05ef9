#!/usr/bin/env python3
"""Fault drill and load (issue 9): the real daemon (`amo1c-sync run`, a subprocess) against both
emulators (in this process, on 127.0.0.1) while this script plays the clinic and breaks things:
1C 500s and dropped connections (~10 %), 1C answers slower than the read timeout, amoCRM 429
storms, an access-token expiry, a 403 block window, and SIGKILL + restart of the daemon at random
moments. Then it waits for convergence and checks, from the emulators' own state, that every valid
flagged lead has exactly one «Заявка», every invalid one a note and none, and every lead's
«Сумма1С» and budget equal its 1C total; that no refresh token was reused and amoCRM never saw more
than 7 requests in a second. With --actions, the clinic's people also do what the user action
classes say (patients with phones, moves and cancels in 1C and from the card, the 1C user's edits)
and each is checked too. It prints a table and exits 0 only if everything held.

    .venv/bin/python benchmarks/drill.py                       # 1,000 registrations, 5,000 postings
    .venv/bin/python benchmarks/drill.py --registrations 200 --postings 1000
    .venv/bin/python benchmarks/drill.py --minutes 30          # soak: RSS every minute, no SIGKILL
    .venv/bin/python benchmarks/drill.py --registrations 60 --postings 200 --faults all --actions all

The pieces live in tests/support/drill.py (shared with tests/drill/test_drill.py); run this from
the checkout or anywhere: it puts the checkout first on sys.path to find them.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from tests.support.drill import (
    FAULT_CLASSES,
    STORES,
    DrillError,
    DrillOptions,
    parse_action_classes,
    parse_fault_classes,
    run_drill,
)
from tests.support.drill_actions import ACTION_CLASSES


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--registrations", type=int, default=1000, help="valid leads flagged (default 1000)")
    p.add_argument("--postings", type=int, default=5000,
                   help="«Оказание услуг» operations: create, re-post, unpost, delete (default 5000)")
    p.add_argument("--seed", type=int, default=1, help="random seed (default 1)")
    p.add_argument("--restarts", type=int, default=5, help="SIGKILL restarts of the daemon (default 5)")
    p.add_argument("--minutes", type=float, default=0.0,
                   help="soak mode: run the load for N minutes without SIGKILL (the second half only "
                        "re-posts and unposts, so the data set is steady), print the daemon's RSS every "
                        "minute, fail if it grows more than --rss-growth-mb while the data is steady")
    p.add_argument("--rss-growth-mb", type=float, default=20.0,
                   help="soak bound on RSS growth once the data set is steady (default 20 MB)")
    p.add_argument("--action-seconds", type=float, default=None,
                   help="length of the chaos phase (default: from the size)")
    p.add_argument("--converge-timeout", type=float, default=None,
                   help="seconds to wait for convergence after the last fault (default: from the size)")
    p.add_argument("--onec-fault-ratio", type=float, default=0.10, help="share of 1C requests failed (0.10)")
    p.add_argument("--appointment-minutes", type=int, default=15)
    p.add_argument("--workdir", type=Path, default=None, help="keep sync.ini, state.db and daemon.log here")
    p.add_argument("--keep", action="store_true", help="keep the temporary workdir even on success")
    p.add_argument("--store", choices=STORES, default="sqlite",
                   help="the daemon's store: a SQLite file in the workdir, or a scratch PostgreSQL "
                        "database on the local server (AMO1C_PG_URL) (default sqlite)")
    p.add_argument("--faults", default="default",
                   help="after-commit fault classes: all, default, none, or a comma list of "
                        f"{', '.join(FAULT_CLASSES)} (default: default)")
    p.add_argument("--per-class", type=int, default=2, help="events of each fault class (default 2)")
    p.add_argument("--actions", default="default",
                   help="user action classes: all, default, none, or a comma list of "
                        f"{', '.join(ACTION_CLASSES)} (default: default)")
    args = p.parse_args(argv)
    try:
        classes = parse_fault_classes(args.faults)
        actions = parse_action_classes(args.actions)
    except DrillError as exc:
        p.error(str(exc))
    if args.registrations < 1 or args.postings < 0:
        p.error("--registrations must be at least 1 and --postings not negative")

    opts = DrillOptions(registrations=args.registrations, postings=args.postings, seed=args.seed,
                        restarts=args.restarts, soak_minutes=args.minutes,
                        rss_growth_limit_mb=args.rss_growth_mb, action_seconds=args.action_seconds,
                        converge_timeout=args.converge_timeout, onec_fault_ratio=args.onec_fault_ratio,
                        appointment_minutes=args.appointment_minutes, workdir=args.workdir,
                        keep_workdir=args.keep, store=args.store, fault_classes=classes,
                        per_class=args.per_class, action_classes=actions)
    report = run_drill(opts)
    print(report.format_table())
    if not report.ok:
        print(f"\nworkdir (sync.ini, state.db, daemon.log): {report.workdir}")
        if report.daemon_log_tail:
            print("last lines of daemon.log:\n" + report.daemon_log_tail)
    return 0 if report.ok else 1


if __name__ == "__main__":
    raise SystemExit(main())
