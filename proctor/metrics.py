"""Prometheus metrics: API latency measured here, job figures read from the database."""

from __future__ import annotations

import os
from collections.abc import Iterator

from prometheus_client import CollectorRegistry, Histogram
from prometheus_client.core import GaugeMetricFamily, HistogramMetricFamily, Metric
from prometheus_client.multiprocess import MultiProcessCollector
from prometheus_client.registry import Collector

from proctor import db, exceptions, jobs, store
from proctor.config import Settings

METRICS_DIR_ENV = "PROMETHEUS_MULTIPROC_DIR"  # set by `serve` when it runs several processes
LATENCY_BUCKETS_SECONDS = (0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5)


class JobCollector(Collector):
    """Reads job counts and phase durations at scrape time, so every API process agrees."""

    def __init__(self, settings: Settings) -> None:
        self._settings = settings

    def collect(self) -> Iterator[Metric]:
        try:
            with db.session_scope(self._settings) as session:
                counts = store.counts_by_status(session)
                phases = store.phase_histograms(session)
        except exceptions.ServiceUnavailable:
            return
        by_state = GaugeMetricFamily("proctor_jobs", "Jobs by state.", labels=["status"])
        for status in jobs.Status:
            by_state.add_metric([status.value], counts.get(status.value, 0))
        yield by_state
        yield GaugeMetricFamily(
            "proctor_queue_depth",
            "Jobs waiting for a worker.",
            value=counts.get(jobs.Status.QUEUED.value, 0),
        )
        durations = HistogramMetricFamily(
            "proctor_job_phase_seconds", "Time jobs spent in each phase.", labels=["phase"]
        )
        for phase, values in sorted(phases.items()):
            buckets = [
                (label, values.get(label, 0.0))
                for label in (store.bucket_label(b) for b in store.PHASE_BUCKETS_SECONDS)
            ]
            durations.add_metric([phase], buckets, values.get("sum", 0.0))
        yield durations


class Metrics:
    """The registry of one API app.

    When `serve` runs several processes it names a folder in PROMETHEUS_MULTIPROC_DIR:
    each process then writes its latency histogram there, and a scrape, whichever
    process answers it, adds up every process's figures.
    """

    def __init__(self, settings: Settings) -> None:
        self.registry = CollectorRegistry()
        shared = os.environ.get(METRICS_DIR_ENV)
        self.latency = Histogram(
            "proctor_api_request_seconds",
            "API request latency.",
            ["method", "route", "status"],
            buckets=LATENCY_BUCKETS_SECONDS,
            registry=None if shared else self.registry,
        )
        if shared:
            MultiProcessCollector(self.registry, path=shared)  # type: ignore[no-untyped-call]
        self.registry.register(JobCollector(settings))
