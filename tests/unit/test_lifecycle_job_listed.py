"""The lifecycle job is one of the product's jobs: `run` schedules it and `once` with no job named
runs it, after payments (so a payment pushed in the same `once` moves the lead to «paid»)."""

from amo1c_sync.config import load_settings
from amo1c_sync.jobs import JOBS, job_named


def test_given_the_product_jobs_when_listed_then_lifecycle_runs_after_payments_on_its_own_interval():
    names = [j.name for j in JOBS]
    assert names.index("lifecycle") == names.index("payments") + 1
    settings = load_settings(None, overrides={"sync": {"lifecycle_interval": "45s"}})
    assert job_named("lifecycle").interval(settings) == 45.0
