"""Prometheus metrics for the worker, in a registry of its own (not the global one)."""

from __future__ import annotations

from collections.abc import Callable

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, generate_latest

# From a 1 ms sleep to the largest CPU job (a few seconds) and timed-out waits.
RUN_SECONDS_BUCKETS = (0.001, 0.005, 0.01, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0)


class WorkerMetrics:
    """Every metric the worker exports; :meth:`render` gives the text exposition."""

    def __init__(self) -> None:
        self.registry = CollectorRegistry()
        self.jobs = Counter(
            "worker_jobs",
            "Jobs finished, by task, mode used and outcome "
            "(ok, timeout, failed, echo_error, pool_broken, rejected, cancelled)",
            ["task", "mode", "outcome"],
            registry=self.registry,
        )
        self.queue_depth = Gauge(
            "worker_queue_depth", "Jobs waiting in the queue", registry=self.registry
        )
        self.running = Gauge(
            "worker_jobs_running", "Jobs a consumer is running now", registry=self.registry
        )
        self.abandoned = Gauge(
            "worker_jobs_abandoned",
            "Timed-out thread or process jobs still running (they end by themselves)",
            registry=self.registry,
        )
        self.run_seconds = Histogram(
            "worker_job_run_seconds",
            "Time a job spent running (not queued), by task and mode",
            ["task", "mode"],
            buckets=RUN_SECONDS_BUCKETS,
            registry=self.registry,
        )
        self.pool_rebuilds = Counter(
            "worker_process_pool_rebuilds",
            "Process pools rebuilt after BrokenProcessPool",
            registry=self.registry,
        )
        self.rejected_requests = Counter(
            "worker_requests_rejected",
            "POST /jobs requests refused before queueing, by reason",
            ["reason"],
            registry=self.registry,
        )

    def track_queue(self, depth: Callable[[], int]) -> None:
        """Read the queue depth from ``depth`` at every scrape."""
        self.queue_depth.set_function(lambda: float(depth()))

    def render(self) -> bytes:
        return generate_latest(self.registry)
