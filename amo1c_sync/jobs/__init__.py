"""Jobs compose the gateways, the pure domain and the store. Each job module exposes
``run(ctx: JobContext, result: JobResult) -> None``; ``run_job`` wraps it with the run record,
the summary log line and error handling."""

from amo1c_sync.jobs.base import JOBS, JobContext, JobResult, journal, run_job

__all__ = ["JOBS", "JobContext", "JobResult", "journal", "run_job"]
