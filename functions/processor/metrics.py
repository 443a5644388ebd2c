"""Prometheus metrics of a processor, aggregated over its worker processes.

The supervisor points ``PROMETHEUS_MULTIPROC_DIR`` at a private folder before any worker imports
prometheus_client, so every worker writes its own files and ``/metrics`` on any worker sums them.
"""

from __future__ import annotations

import os

from prometheus_client import (
    CONTENT_TYPE_LATEST,
    REGISTRY,
    CollectorRegistry,
    Counter,
    Gauge,
    Histogram,
    generate_latest,
    multiprocess,
)

LABELS = ("function", "trigger", "kind")
LATENCY_BUCKETS_S = (
    0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0
)  # fmt: skip

EVENTS = Counter("tickrun_events_total", "Events handled, by outcome.", [*LABELS, "outcome"])
LATENCY = Histogram(
    "tickrun_event_duration_seconds",
    "Handler wall time per event.",
    LABELS,
    buckets=LATENCY_BUCKETS_S,
)
IN_FLIGHT = Gauge(
    "tickrun_events_in_flight",
    "Events being handled now.",
    LABELS,
    multiprocess_mode="livesum",
)

OUTCOMES = ("ok", "error", "timeout", "unavailable")


def supervisor_restarts_counter() -> Counter:
    """The supervisor's restart counter, written to the multiprocess folder like the workers'.

    prometheus_client picks its value class when first imported, which in the supervisor may be
    before the folder was chosen; this counter is made afterwards with the mmap-backed class.
    """
    from prometheus_client import values

    values.ValueClass = values.MultiProcessValue()  # type: ignore[no-untyped-call]
    return Counter(
        "tickrun_worker_restarts_total",
        "Worker processes restarted by the supervisor.",
        ["function"],
        registry=None,
    )


def render() -> tuple[bytes, str]:
    """The exposition text for ``/metrics`` and its content type."""
    if os.environ.get("PROMETHEUS_MULTIPROC_DIR"):
        registry = CollectorRegistry()
        multiprocess.MultiProcessCollector(registry)  # type: ignore[no-untyped-call]
        return generate_latest(registry), CONTENT_TYPE_LATEST
    return generate_latest(REGISTRY), CONTENT_TYPE_LATEST
