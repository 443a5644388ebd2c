"""The autoscaler: replicas from in-flight requests and Kafka consumer-group lag, and scale to
zero when idle.

In-flight counts come from the gateways (``/fn/…`` and the function ports), sampled on every
reconcile pass; lag comes from :class:`~.lag.LagMonitor` (every ~1 s, also for functions at
zero). Desired replicas = the larger of

- ceil(peak in-flight over the window / spec.targetInFlight), and
- ceil(peak lag over spec.lagWindow / spec.targetLag), capped at the partitions the function's
  consumers can share (a consumer beyond the topic's partition count gets none and idles),

clamped to [minReplicas, maxReplicas]. Using the peak over a window means a count rises on the
first high sample and falls only once the whole window was low: no flapping. A lag that cannot
be read (brokers down) is never guessed: the lag rule holds what it last saw.

With minReplicas 0 a function that saw no request and no lag for ``scaleToZeroIdleTime`` goes to
zero; it comes back when a request is held by the gateway (:meth:`Autoscaler.wake`), when its lag
rises above zero, or before a cron firing (``wake.py`` calls :meth:`Autoscaler.wake` with the
firing time). A fixed count (``replicas: N`` or min == max) is never changed.
"""

from __future__ import annotations

import math
import time
from collections import deque
from dataclasses import dataclass, field
from typing import Any

from tickrun.functions.spec import FunctionSpec

# Lag samples are kept this long whatever a spec's lagWindow (its upper bound).
MAX_LAG_WINDOW_S = 3600.0


@dataclass(frozen=True)
class Decision:
    """A desired count and why, for the API (``"scale"`` in a function's JSON)."""

    replicas: int
    reason: str
    lag: int | None = None
    partitions: int | None = None

    def to_dict(self) -> dict[str, Any]:
        return {
            "desired": self.replicas,
            "reason": self.reason,
            "lag": self.lag,
            "partitions": self.partitions,
        }


@dataclass
class _History:
    samples: deque[tuple[float, int]] = field(default_factory=deque)
    last_active: float = field(default_factory=time.monotonic)
    woken: bool = False
    # Set by a scheduled wake (a cron firing): why the function is kept up until last_active.
    wake_why: str = ""
    lag: deque[tuple[float, int]] = field(default_factory=deque)
    lag_at: float | None = None
    # False while the monitor cannot read the lag: the rule then holds its last samples.
    lag_known: bool = True
    partitions: int | None = None
    decision: Decision | None = None


class Autoscaler:
    """Pure bookkeeping (no I/O): the reconciler feeds it samples and asks for counts."""

    def __init__(self, window_s: float = 30.0) -> None:
        self.window_s = window_s
        self._history: dict[str, _History] = {}

    def _get(self, name: str, now: float) -> _History:
        return self._history.setdefault(name, _History(last_active=now))

    def observe(
        self, name: str, in_flight: int, requests_seen: bool, now: float | None = None
    ) -> None:
        now = time.monotonic() if now is None else now
        h = self._get(name, now)
        h.samples.append((now, in_flight))
        while h.samples and h.samples[0][0] < now - self.window_s:
            h.samples.popleft()
        if in_flight or requests_seen:
            h.last_active = max(h.last_active, now)
            h.woken = False

    def observe_lag(
        self, name: str, lag: int | None, partitions: int | None, now: float | None = None
    ) -> None:
        """A lag reading (records behind, summed over partitions; None = unknown) taken at
        ``now``; the same reading fed twice counts once."""
        now = time.monotonic() if now is None else now
        h = self._get(name, now)
        if h.lag_at == now:
            return
        h.lag_at = now
        if lag is None:
            h.lag_known = False
            return
        if not h.lag_known or lag > 0:
            # A backlog is work: it keeps the function up and wakes it from zero. After an
            # unreadable spell nothing is known of it, so the idle time counts from now.
            h.last_active = max(h.last_active, now)
        h.lag_known = True
        h.partitions = partitions
        h.lag.append((now, lag))
        while h.lag and h.lag[0][0] < now - MAX_LAG_WINDOW_S:
            h.lag.popleft()

    def wake(
        self, name: str, now: float | None = None, *, until: float | None = None, why: str = ""
    ) -> None:
        """Bring a function at zero back to one replica.

        Without ``until``: a request arrived and is held; one replica stays until traffic is
        seen and stops. With ``until`` (a cron firing, on the monotonic clock): one replica
        stays until ``until`` plus ``scaleToZeroIdleTime``, so the firing runs and finishes.
        """
        now = time.monotonic() if now is None else now
        h = self._get(name, now)
        if until is None:
            h.last_active = max(h.last_active, now)
            h.woken = True
        elif until > h.last_active:
            h.last_active = until
            h.wake_why = why

    def forget(self, name: str) -> None:
        self._history.pop(name, None)

    def explain(self, name: str) -> dict[str, Any] | None:
        """The last decision for ``name`` and its reason, or None before the first."""
        h = self._history.get(name)
        if h is None or h.decision is None:
            return None
        return h.decision.to_dict()

    @staticmethod
    def scales_to_zero(spec: FunctionSpec) -> bool:
        """minReplicas 0 with room to grow (``replicas: 0`` means stopped, not scaled)."""
        s = spec.spec
        if s.replicas == 0 and s.min_replicas is None and s.max_replicas is None:
            return False
        lo, hi = s.replica_bounds()
        return bool(lo == 0 < hi)

    def desired(self, name: str, spec: FunctionSpec, now: float | None = None) -> int:
        return self.decide(name, spec, now).replicas

    def decide(self, name: str, spec: FunctionSpec, now: float | None = None) -> Decision:
        s = spec.spec
        now = time.monotonic() if now is None else now
        h = self._get(name, now)
        lag_now = h.lag[-1][1] if h.lag and h.lag_known else None
        if s.replicas == 0 and s.min_replicas is None and s.max_replicas is None:
            return self._keep(h, Decision(0, "replicas: 0 (stopped)", lag_now, h.partitions))
        lo, hi = (int(v) for v in s.replica_bounds())
        if lo == hi:
            n = max(lo, 1)
            return self._keep(h, Decision(n, f"fixed at {n}", lag_now, h.partitions))
        peak = max((v for _, v in h.samples), default=0)
        flight = math.ceil(peak / s.target_in_flight) if peak else 0
        lag_want, lag_why = self._lag_rule(h, spec, now)
        # Unreadable lag is no evidence of idleness either: never scale to zero on a guess.
        idle = now - h.last_active >= s.idle_timeout_s and h.lag_known
        floor = lo if (lo > 0 or (idle and not h.woken)) else 1
        want = max(flight, lag_want)
        n = max(floor, min(hi, want))
        if want and want >= floor:
            why = lag_why
            if flight > lag_want:
                why = f"in-flight {peak} / targetInFlight {s.target_in_flight} → {flight}"
            if want > hi:
                why += f"; maxReplicas {hi}"
        elif floor == lo:
            why = f"minReplicas {lo}"
            if lo == 0:
                why = f"idle for scaleToZeroIdleTime {s.idle_timeout_s:g} s: scaled to zero"
        elif h.woken:
            why = "woken: a request is held"
        elif h.wake_why and now < h.last_active:
            why = h.wake_why
        elif not h.lag_known:
            why = "lag unknown (brokers unreachable): kept up"
        else:
            why = f"active within scaleToZeroIdleTime {s.idle_timeout_s:g} s"
        return self._keep(h, Decision(n, why, lag_now, h.partitions))

    @staticmethod
    def _keep(h: _History, decision: Decision) -> Decision:
        h.decision = decision
        return decision

    @staticmethod
    def _lag_rule(h: _History, spec: FunctionSpec, now: float) -> tuple[int, str]:
        """(replicas the lag asks for, why); (0, "") when there is no lag to act on."""
        s = spec.spec
        if h.lag_known:
            window = [v for t, v in h.lag if t >= now - s.lag_window_s]
        else:  # frozen: the samples of the window before the lag became unknown
            last = h.lag[-1][0] if h.lag else now
            window = [v for t, v in h.lag if t >= last - s.lag_window_s]
        peak = max(window, default=0)
        if not peak:
            return 0, ""
        want = math.ceil(peak / s.target_lag)
        why = f"lag {peak} (peak over lagWindow {s.lag_window_s:g} s) / targetLag {s.target_lag}"
        why += f" → {want}"
        if h.partitions:
            # Each worker process of a replica is one consumer of the group.
            cap = max(1, math.ceil(h.partitions / s.workers))
            if want > cap:
                want = cap
                why += f"; capped at {h.partitions} partitions → {cap}"
        if not h.lag_known:
            why = "lag unknown (brokers unreachable), holding: " + why
        return want, why
