"""Prometheus metrics of a processor, aggregated over its worker processes.

Per-event statistics live in :mod:`.stats` (cheap on the hot path). Other metrics — the
supervisor's restarts, trigger-specific ones — use prometheus_client directly; the supervisor
points ``PROMETHEUS_MULTIPROC_DIR`` at a private folder before workers start, so ``/metrics`` on
any worker sums every process's values.
"""

from __future__ import annotations

import os

from prometheus_client import (
    CONTENT_TYPE_LATEST,
    REGISTRY,
    CollectorRegistry,
    Counter,
    generate_latest,
    multiprocess,
)

from .stats import StatsBook, StatsCollector

STATS = StatsBook()
"""This process's event statistics (see :mod:`.stats`)."""


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
    """The exposition text for ``/metrics`` and its content type.

    Event statistics come from :data:`STATS`; anything else registered with prometheus_client
    (trigger-specific metrics such as Kafka lag) is included as well, summed over workers.
    """
    registry = CollectorRegistry()
    registry.register(StatsCollector(STATS))
    if os.environ.get("PROMETHEUS_MULTIPROC_DIR"):
        multiprocess.MultiProcessCollector(registry)  # type: ignore[no-untyped-call]
        return generate_latest(registry), CONTENT_TYPE_LATEST
    return generate_latest(registry) + generate_latest(REGISTRY), CONTENT_TYPE_LATEST
