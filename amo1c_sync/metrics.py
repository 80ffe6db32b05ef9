"""Prometheus metrics on a dedicated registry (served by the web endpoint at /metrics).

Names:
  amo1c_job_runs_total{job,status}                 counter   finished job runs
  amo1c_job_duration_seconds{job}                  histogram job run wall time
  amo1c_job_items_total{job,item}                  counter   the run's counts (created, pushed…)
  amo1c_job_last_success_timestamp_seconds{job}    gauge     unix time of the last ok/partial run
  amo1c_leader                                     gauge     1 while this process is the leader
  amo1c_requests_total{system,method,status}       counter   HTTP requests to amoCRM / 1C
                                                             (status "error" = no response)
  amo1c_request_duration_seconds{system}           histogram HTTP request latency
"""

from __future__ import annotations

import time
from typing import Any

from prometheus_client import (
    CONTENT_TYPE_LATEST,
    CollectorRegistry,
    Counter,
    Gauge,
    Histogram,
    generate_latest,
)

REGISTRY = CollectorRegistry(auto_describe=True)

JOB_RUNS = Counter("amo1c_job_runs", "Finished job runs by job and status", ["job", "status"],
                   registry=REGISTRY)
JOB_DURATION = Histogram("amo1c_job_duration_seconds", "Job run wall time", ["job"], registry=REGISTRY,
                         buckets=(0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 120, 300, 600))
JOB_ITEMS = Counter("amo1c_job_items", "Items handled by jobs, by the run's count names "
                    "(e.g. payments pushed, registration created)", ["job", "item"], registry=REGISTRY)
JOB_LAST_SUCCESS = Gauge("amo1c_job_last_success_timestamp_seconds",
                         "Unix time of the last ok or partial run", ["job"], registry=REGISTRY)
LEADER = Gauge("amo1c_leader", "1 while this process holds the leader lock", registry=REGISTRY)
REQUESTS = Counter("amo1c_requests", "HTTP requests to the external systems",
                   ["system", "method", "status"], registry=REGISTRY)
REQUEST_LATENCY = Histogram("amo1c_request_duration_seconds", "HTTP request latency",
                            ["system"], registry=REGISTRY,
                            buckets=(0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60))

def observe_job(result: Any, duration: float) -> None:
    """Record one finished ``JobResult`` (from amo1c_sync.jobs.run_job)."""
    job = result.job
    JOB_RUNS.labels(job=job, status=result.status).inc()
    JOB_DURATION.labels(job=job).observe(duration)
    for item, n in dict(result.counts).items():
        if isinstance(n, (int, float)) and n > 0:
            JOB_ITEMS.labels(job=job, item=str(item)).inc(n)
    if result.status in ("ok", "partial"):
        JOB_LAST_SUCCESS.labels(job=job).set(time.time())


def set_leader(is_leader: bool) -> None:
    LEADER.set(1 if is_leader else 0)


def on_response(system: str, method: str, path: str, status: str, seconds: float) -> None:
    """The transports' metrics hook: one answered (or failed, status ``"error"``) request."""
    REQUESTS.labels(system=system, method=method, status=status).inc()
    REQUEST_LATENCY.labels(system=system).observe(seconds)


def instrument_gateway(gateway: Any, system: str) -> bool:
    """Point the gateway's transport (its public ``transport``) at ``on_response``, counted under
    ``system``; False for an object without one."""
    from amo1c_sync.transport import Transport

    transport = getattr(gateway, "transport", None)
    if not isinstance(transport, Transport):
        return False

    def hook(_system: str, method: str, path: str, status: str, seconds: float) -> None:
        on_response(system, method, path, status, seconds)

    transport.on_response = hook
    return True


def render() -> tuple[bytes, str]:
    """The Prometheus text exposition and its content type, for /metrics."""
    return generate_latest(REGISTRY), CONTENT_TYPE_LATEST
