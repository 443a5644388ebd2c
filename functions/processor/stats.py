"""Per-event statistics kept as plain integers on the hot path, exposed through Prometheus.

prometheus_client's multiprocess values cost ~8 µs per event (mmap writes behind locks) — a
tenth of a no-op request. Workers instead count in memory and write one small JSON snapshot a
second into the supervisor's folder; ``/metrics`` on any worker reads every snapshot and renders
them with prometheus_client's metric families. Counters of dead workers stay (totals never go
backwards); their in-flight gauges are dropped.
"""

from __future__ import annotations

import bisect
import contextlib
import json
import os
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, HistogramMetricFamily
from prometheus_client.registry import Collector

from .. import settings
from ..processes import pid_alive

LATENCY_BUCKETS_S = (
    0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0
)  # fmt: skip
OUTCOMES = ("ok", "error", "timeout", "unavailable")
STATS_DIR_ENV = settings.STATS_DIR.name


class TriggerStats:
    """Counters of one trigger in one worker. Only the event loop thread touches it."""

    __slots__ = ("buckets", "count", "in_flight", "labels", "outcomes", "sum_s")

    def __init__(self, labels: tuple[str, str, str]) -> None:
        self.labels = labels
        self.outcomes = dict.fromkeys(OUTCOMES, 0)
        self.buckets = [0] * (len(LATENCY_BUCKETS_S) + 1)
        self.sum_s = 0.0
        self.count = 0
        self.in_flight = 0

    def observe(self, seconds: float) -> None:
        self.buckets[bisect.bisect_left(LATENCY_BUCKETS_S, seconds)] += 1
        self.sum_s += seconds
        self.count += 1

    def to_dict(self) -> dict[str, Any]:
        return {
            "labels": list(self.labels),
            "outcomes": self.outcomes,
            "buckets": self.buckets,
            "sum_s": self.sum_s,
            "count": self.count,
            "in_flight": self.in_flight,
        }


class StatsBook:
    """All trigger stats of this process, and their snapshot file."""

    def __init__(self, directory: str | None = None) -> None:
        self.directory = directory if directory is not None else settings.STATS_DIR.get()
        self._stats: dict[tuple[str, str, str], TriggerStats] = {}

    def trigger(self, function: str, trigger: str, kind: str) -> TriggerStats:
        key = (function, trigger, kind)
        stats = self._stats.get(key)
        if stats is None:
            stats = self._stats[key] = TriggerStats(key)
        return stats

    def snapshot(self) -> dict[str, Any]:
        return {"pid": os.getpid(), "triggers": [s.to_dict() for s in self._stats.values()]}

    def flush(self) -> None:
        """Write this process's snapshot atomically (readers never see half a file)."""
        if not self.directory:
            return
        path = Path(self.directory, f"stats-{os.getpid()}.json")
        tmp = path.with_suffix(".tmp")
        tmp.write_text(json.dumps(self.snapshot()))
        tmp.replace(path)

    def snapshots(self) -> list[dict[str, Any]]:
        if not self.directory:
            return [self.snapshot()]
        self.flush()  # this worker's view is always current
        out = []
        for path in Path(self.directory).glob("stats-*.json"):
            with contextlib.suppress(OSError, ValueError):
                out.append(json.loads(path.read_text()))
        return out


class StatsCollector(Collector):
    """Renders every worker's snapshot as Prometheus metric families."""

    def __init__(self, book: StatsBook) -> None:
        self.book = book

    def collect(self) -> Iterator[Any]:
        names = ["function", "trigger", "kind"]
        events = CounterMetricFamily(
            "tickrun_events", "Events handled, by outcome.", labels=[*names, "outcome"]
        )
        latency = HistogramMetricFamily(
            "tickrun_event_duration_seconds", "Handler wall time per event.", labels=names
        )
        in_flight = GaugeMetricFamily(
            "tickrun_events_in_flight", "Events being handled now.", labels=names
        )
        totals: dict[tuple[str, ...], dict[str, Any]] = {}
        for snap in self.book.snapshots():
            alive = pid_alive(int(snap.get("pid", 0)))
            for t in snap.get("triggers", []):
                key = tuple(t["labels"])
                agg = totals.setdefault(
                    key,
                    {
                        "outcomes": dict.fromkeys(OUTCOMES, 0),
                        "buckets": [0] * (len(LATENCY_BUCKETS_S) + 1),
                        "sum_s": 0.0,
                        "in_flight": 0,
                    },
                )
                for o, n in t["outcomes"].items():
                    agg["outcomes"][o] = agg["outcomes"].get(o, 0) + n
                agg["buckets"] = [a + b for a, b in zip(agg["buckets"], t["buckets"], strict=True)]
                agg["sum_s"] += t["sum_s"]
                if alive:
                    agg["in_flight"] += t["in_flight"]
        for key, agg in sorted(totals.items()):
            labels = list(key)
            for outcome, n in agg["outcomes"].items():
                events.add_metric([*labels, outcome], n)
            cumulative, running = [], 0
            for bound, n in zip((*LATENCY_BUCKETS_S, float("inf")), agg["buckets"], strict=True):
                running += n
                cumulative.append((str(bound) if bound != float("inf") else "+Inf", running))
            latency.add_metric(labels, cumulative, agg["sum_s"])
            in_flight.add_metric(labels, agg["in_flight"])
        yield events
        yield latency
        yield in_flight
