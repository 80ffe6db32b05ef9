"""A stand-in job for daemon tests: ``FAKE_JOB_ITEMS`` items of ``FAKE_JOB_ITEM_SECONDS`` each,
each committed with a journal entry naming the process, stopping between items when asked."""

import os
import time
from operator import attrgetter

from amo1c_sync.jobs import Job, journal


def run(ctx, result):
    items = int(os.environ.get("FAKE_JOB_ITEMS", "3"))
    item_seconds = float(os.environ.get("FAKE_JOB_ITEM_SECONDS", "0.01"))
    for i in range(items):
        if ctx.stopping():
            break
        time.sleep(item_seconds)  # the work of one item (not synchronisation)
        with ctx.store.session() as s:
            journal(s, job=result.job, system="store", action="fake.item", ref=str(i),
                    detail={"pid": os.getpid(), "i": i}, run_id=result.run_id)
        result.count("items")


def fail(ctx, result):
    """A job whose whole run fails, like one facing a system that is down."""
    from amo1c_sync.errors import RetriableError

    raise RetriableError("1C did not answer in 60 s: GET /odata/standard.odata/Catalog_Сотрудники")


def stuck(ctx, result):
    """A job stuck in one long remote call that does not look at the stop flag."""
    result.count("started")
    time.sleep(float(os.environ.get("FAKE_JOB_STUCK_SECONDS", "2")))


def jobs(run_one=None) -> tuple[Job, ...]:
    """The daemon's job list for a test: one fake "registration" job (``run`` unless given)."""
    return (Job("registration", run_one or run, attrgetter("sync.registration_interval"), needs_amocrm=False),)
