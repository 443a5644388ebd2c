"""The autoscaler: replicas from in-flight requests per replica, and scale to zero when idle.

In-flight counts come from the gateways (``/fn/…`` and the function ports), sampled on every
reconcile pass. Desired replicas = ceil(peak in-flight over the window / spec.targetInFlight),
clamped to [minReplicas, maxReplicas]; with minReplicas 0 a function that saw no request for
``scaleToZeroIdleTime`` goes to zero, and the gateway holds the next request while it comes back.
A fixed count (``replicas: N`` or min == max) is never changed. Kafka-lag scaling is not here yet:
``observe`` is the place to add a lag source.
"""

from __future__ import annotations

import math
import time
from collections import deque
from dataclasses import dataclass, field

from tickrun.functions.spec import FunctionSpec


@dataclass
class _History:
    samples: deque[tuple[float, int]] = field(default_factory=deque)
    last_active: float = field(default_factory=time.monotonic)
    woken: bool = False


class Autoscaler:
    """Pure bookkeeping (no I/O): the reconciler feeds it samples and asks for counts."""

    def __init__(self, window_s: float = 30.0) -> None:
        self.window_s = window_s
        self._history: dict[str, _History] = {}

    def observe(
        self, name: str, in_flight: int, requests_seen: bool, now: float | None = None
    ) -> None:
        now = time.monotonic() if now is None else now
        h = self._history.setdefault(name, _History(last_active=now))
        h.samples.append((now, in_flight))
        while h.samples and h.samples[0][0] < now - self.window_s:
            h.samples.popleft()
        if in_flight or requests_seen:
            h.last_active = now
            h.woken = False

    def wake(self, name: str, now: float | None = None) -> None:
        """A request arrived for a function scaled to zero: bring one replica back."""
        now = time.monotonic() if now is None else now
        h = self._history.setdefault(name, _History(last_active=now))
        h.last_active = now
        h.woken = True

    def forget(self, name: str) -> None:
        self._history.pop(name, None)

    @staticmethod
    def scales_to_zero(spec: FunctionSpec) -> bool:
        """minReplicas 0 with room to grow (``replicas: 0`` means stopped, not scaled)."""
        s = spec.spec
        if s.replicas == 0 and s.min_replicas is None and s.max_replicas is None:
            return False
        lo, hi = s.replica_bounds()
        return bool(lo == 0 < hi)

    def desired(self, name: str, spec: FunctionSpec, now: float | None = None) -> int:
        s = spec.spec
        if s.replicas == 0 and s.min_replicas is None and s.max_replicas is None:
            return 0  # stopped on purpose
        lo, hi = (int(v) for v in s.replica_bounds())
        if lo == hi:
            return max(lo, 1)
        now = time.monotonic() if now is None else now
        h = self._history.setdefault(name, _History(last_active=now))
        peak = max((v for _, v in h.samples), default=0)
        want = math.ceil(peak / s.target_in_flight) if peak else 0
        idle = now - h.last_active >= s.idle_timeout_s
        floor = lo if (lo > 0 or (idle and not h.woken)) else 1
        return max(floor, min(hi, want))
