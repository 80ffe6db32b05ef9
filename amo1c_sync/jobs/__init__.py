"""Jobs compose the gateways, the pure domain and the store. Each is a ``Job(name, run,
interval)``; ``JOBS`` lists the product's jobs once, in the order `once` runs them, and the daemon
is given them (tests give it others). ``run_job`` wraps a run with the run record, the summary log
line and error handling."""

from operator import attrgetter

from amo1c_sync.jobs.base import Job, JobContext, JobResult, run_job
from amo1c_sync.store.journal import journal
from amo1c_sync.jobs import directory, lifecycle, payments, registration

JOBS: tuple[Job, ...] = (
    Job("directory", directory.run, attrgetter("sync.directory_interval")),
    Job("registration", registration.run, attrgetter("sync.registration_interval")),
    Job("payments", payments.run, attrgetter("sync.payments_interval")),
    Job("lifecycle", lifecycle.run, attrgetter("sync.lifecycle_interval")),
)


def job_named(name: str, jobs: tuple[Job, ...] = JOBS) -> Job:
    """The job called ``name``; KeyError naming the jobs there are."""
    for job in jobs:
        if job.name == name:
            return job
    raise KeyError(f"unknown job {name!r}; jobs are: {', '.join(j.name for j in jobs)}")


__all__ = ["JOBS", "Job", "JobContext", "JobResult", "job_named", "journal", "run_job"]
