"""A function's live numbers for the UI, from its replicas' own ``/metrics`` (Prometheus text).

Every ready replica is scraped (in parallel, 2 s each at most) and the samples summed: events
by outcome, the handler latency histogram, events in flight. Rates need two readings: the last
scrape of each function is kept, and a first look (or one older than two minutes) takes a second
scrape a second later. Latency quantiles come from the histogram's buckets of the events in that
window (interpolated inside a bucket), or since start when the window saw none.
"""

from __future__ import annotations

import asyncio
import time
from dataclasses import dataclass, field
from typing import Any

import aiohttp
from prometheus_client.parser import text_string_to_metric_families

SCRAPE_TIMEOUT_S = 2.0
MAX_AGE_S = 120.0
FIRST_WINDOW_S = 1.0
MAX_METRICS_BYTES = 4 * 1024 * 1024


@dataclass
class Reading:
    """One replica's counters: outcomes per trigger, latency buckets (le → cumulative count)."""

    outcomes: dict[tuple[str, str], float] = field(default_factory=dict)  # (trigger, outcome)
    buckets: dict[float, float] = field(default_factory=dict)
    latency_sum: float = 0.0
    latency_count: float = 0.0
    in_flight: float = 0.0


def parse(text: str) -> Reading:
    out = Reading()
    for family in text_string_to_metric_families(text):
        for s in family.samples:
            labels = s.labels
            if s.name == "tickrun_events_total":
                key = (labels.get("trigger", ""), labels.get("outcome", ""))
                out.outcomes[key] = out.outcomes.get(key, 0.0) + s.value
            elif s.name == "tickrun_event_duration_seconds_bucket":
                le = float(labels.get("le", "inf").replace("+Inf", "inf"))
                out.buckets[le] = out.buckets.get(le, 0.0) + s.value
            elif s.name == "tickrun_event_duration_seconds_sum":
                out.latency_sum += s.value
            elif s.name == "tickrun_event_duration_seconds_count":
                out.latency_count += s.value
            elif s.name == "tickrun_events_in_flight":
                out.in_flight += s.value
    return out


def _minus(now: Reading, before: Reading | None) -> Reading:
    """``now - before``; a replica that restarted (a counter went down) counts from zero."""
    if before is None or any(v < before.outcomes.get(k, 0.0) for k, v in now.outcomes.items()):
        return now
    return Reading(
        outcomes={k: v - before.outcomes.get(k, 0.0) for k, v in now.outcomes.items()},
        buckets={k: v - before.buckets.get(k, 0.0) for k, v in now.buckets.items()},
        latency_sum=now.latency_sum - before.latency_sum,
        latency_count=now.latency_count - before.latency_count,
        in_flight=now.in_flight,
    )


def quantile(buckets: dict[float, float], q: float) -> float | None:
    """The ``q`` quantile of a cumulative histogram (seconds), or None if it is empty."""
    bounds = sorted(buckets)
    if not bounds:
        return None
    total = buckets[bounds[-1]]
    if total <= 0:
        return None
    rank = q * total
    prev_bound, prev_count = 0.0, 0.0
    for b in bounds:
        count = buckets[b]
        if count >= rank:
            if b == float("inf"):
                return prev_bound  # beyond the last finite bucket: its bound is all we know
            inside = count - prev_count
            frac = (rank - prev_count) / inside if inside > 0 else 1.0
            return prev_bound + (b - prev_bound) * frac
        prev_bound, prev_count = b, count
    return prev_bound


def _sum(readings: list[Reading]) -> Reading:
    out = Reading()
    for r in readings:
        for k, v in r.outcomes.items():
            out.outcomes[k] = out.outcomes.get(k, 0.0) + v
        for le, n in r.buckets.items():
            out.buckets[le] = out.buckets.get(le, 0.0) + n
        out.latency_sum += r.latency_sum
        out.latency_count += r.latency_count
        out.in_flight += r.in_flight
    return out


async def scrape(session: aiohttp.ClientSession, url: str) -> Reading | None:
    try:
        async with session.get(
            url.rstrip("/") + "/metrics", timeout=aiohttp.ClientTimeout(total=SCRAPE_TIMEOUT_S)
        ) as resp:
            if resp.status != 200:
                return None
            raw = await resp.content.read(MAX_METRICS_BYTES)
    except (aiohttp.ClientError, TimeoutError, OSError):
        return None
    try:
        return parse(raw.decode("utf-8", "replace"))
    except ValueError:
        return None


class MetricsBook:
    """The last readings of each function's replicas, for rates between two looks."""

    def __init__(self) -> None:
        self._last: dict[str, tuple[float, dict[str, Reading]]] = {}

    async def _read_all(self, endpoints: list[tuple[str, str]]) -> dict[str, Reading | None]:
        async with aiohttp.ClientSession() as session:
            got = await asyncio.gather(*(scrape(session, url) for _, url in endpoints))
        return {rid: r for (rid, _), r in zip(endpoints, got, strict=True)}

    async def summary(self, name: str, endpoints: list[tuple[str, str]]) -> dict[str, Any]:
        """Rates and latency of ``name`` over its ``(replica id, url)`` endpoints."""
        now_t = time.monotonic()
        last = self._last.get(name)
        if last is None or now_t - last[0] > MAX_AGE_S:
            first = await self._read_all(endpoints)
            last = (time.monotonic(), {k: v for k, v in first.items() if v is not None})
            await asyncio.sleep(FIRST_WINDOW_S)
        current = await self._read_all(endpoints)
        t = time.monotonic()
        window = max(t - last[0], 1e-3)
        ok = {k: v for k, v in current.items() if v is not None}
        self._last[name] = (t, ok)
        deltas = _sum([_minus(v, last[1].get(k)) for k, v in ok.items()])
        totals = _sum(list(ok.values()))
        events = sum(deltas.outcomes.values())
        errors = sum(v for (_, o), v in deltas.outcomes.items() if o != "ok")
        hist = deltas.buckets if deltas.latency_count > 0 else totals.buckets
        triggers: dict[str, dict[str, float]] = {}
        for (trigger, outcome), v in totals.outcomes.items():
            triggers.setdefault(trigger, {})[outcome] = v
        p50, p99 = quantile(hist, 0.5), quantile(hist, 0.99)
        return {
            "function": name,
            "window_s": round(window, 3),
            "replicas": [
                {"replica": rid, "scraped": current.get(rid) is not None} for rid, _ in endpoints
            ],
            "request_rate": round(events / window, 3),
            "error_rate": round(errors / events, 4) if events else 0.0,
            "errors_per_s": round(errors / window, 3),
            "latency_ms": {
                "p50": None if p50 is None else round(p50 * 1000, 3),
                "p99": None if p99 is None else round(p99 * 1000, 3),
                "mean": round(totals.latency_sum / totals.latency_count * 1000, 3)
                if totals.latency_count
                else None,
                "window": "recent" if deltas.latency_count > 0 else "since start",
            },
            "in_flight": totals.in_flight,
            "totals": {"by_trigger": triggers, "events": sum(totals.outcomes.values())},
        }


__all__ = ["MetricsBook", "Reading", "parse", "quantile", "scrape"]
