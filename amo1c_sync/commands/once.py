"""`amo1c-sync once [JOB…] [--dry-run] [--since DATE]`: one manual pass."""

from __future__ import annotations

import sys

from amo1c_sync.commands.common import open_store, settings_from
from amo1c_sync.domain.dates import parse_user_date
from amo1c_sync.errors import ConfigError
from amo1c_sync.jobs import JobContext, run_job
from amo1c_sync.leader import leader_lock_for


def main(args) -> int:
    known = {job.name: job for job in args.job_list}
    unknown = [j for j in args.jobs if j not in known]
    if unknown:
        print(f"unknown job(s) {', '.join(unknown)}; jobs are: {', '.join(known)}", file=sys.stderr)
        return 2
    since = None
    if args.since:
        try:
            since = parse_user_date(args.since)
        except ValueError as exc:
            raise ConfigError(f"--since: {exc}") from None
    settings = settings_from(args)
    store = open_store(settings, upgrade=True)
    # the same lock as the daemon's leader: two writers could race a «Заявка» create for one lead
    lock = leader_lock_for(store)
    if not lock.try_acquire():
        print("amo1c-sync once: the daemon is running as the leader on this store and does this "
              "work itself; see `amo1c-sync status`, or stop it (systemctl stop amo1c-sync) to run "
              "jobs by hand", file=sys.stderr)
        return 1
    try:
        ctx = JobContext(settings, store, dry_run=args.dry_run, since=since)
        results = [run_job(ctx, known[name]) for name in (args.jobs or list(known))]
    finally:
        lock.release()
    for r in results:
        for plan in r.planned:
            print("would write:", plan)
    return 0 if all(r.ok for r in results) else 1
