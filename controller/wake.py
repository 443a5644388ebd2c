"""Wake a function scaled to zero for its cron firings.

A cron trigger runs inside the function's replica, so a function at zero replicas would never
fire (Nuclio's issue #1339). On every reconcile pass :meth:`CronWaker.check` computes, for each
function that scales to zero, the next firing of each of its cron triggers with the trigger's
own schedule code (``triggers/cron/config.py``: croniter, seconds field, timezone) and, once the
firing is less than ``TICKRUN_CRON_WAKE_LEAD_S`` away, tells the autoscaler to keep one replica
up until the firing plus ``scaleToZeroIdleTime`` (:meth:`Autoscaler.wake` with ``until``): the
replica starts before the firing, its trigger fires it, and it is kept while the firing runs.

An ``interval`` trigger counts from its replica's start, not from a wall-clock time: its
firings are anchored at the controller's first sight of the function, and a woken replica is
kept for the interval after it starts (plus the lead and the idle time).
"""

from __future__ import annotations

import datetime as dt
import logging
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass

from tickrun.functions.errors import TickrunError
from tickrun.functions.spec import FunctionSpec
from tickrun.triggers.cron.spec import CronTriggerSpec

from .autoscaler import Autoscaler

logger = logging.getLogger(__name__)


@dataclass(frozen=True)
class _Schedule:
    trigger: str
    next_fire: Callable[[dt.datetime], dt.datetime]
    interval_s: float | None


class CronWaker:
    """Pure bookkeeping over the clocks it is given (no I/O; croniter loads on first use)."""

    def __init__(
        self,
        autoscaler: Autoscaler,
        lead_s: float = 10.0,
        *,
        wall: Callable[[], dt.datetime] = lambda: dt.datetime.now(dt.UTC),
        monotonic: Callable[[], float] = time.monotonic,
    ) -> None:
        self.autoscaler = autoscaler
        self.lead_s = lead_s
        self._wall = wall
        self._monotonic = monotonic
        self._schedules: dict[str, tuple[FunctionSpec, list[_Schedule]]] = {}
        self._unusable: set[str] = set()
        # Interval triggers: (function, trigger) → where their firing count starts.
        self._anchors: dict[tuple[str, str], dt.datetime] = {}

    def check(self, functions: Iterable[tuple[str, FunctionSpec]]) -> list[str]:
        """Wake the functions whose next cron firing is within the lead; their names."""
        now = self._wall()
        mono = self._monotonic()
        woken: list[str] = []
        seen: set[str] = set()
        for name, spec in functions:
            seen.add(name)
            if not self.autoscaler.scales_to_zero(spec):
                continue
            for sched in self._schedules_of(name, spec):
                anchor = self._anchors.setdefault((name, sched.trigger), now)
                due = _due(sched, anchor, now)
                ahead_s = (due - now).total_seconds()
                if ahead_s > self.lead_s:
                    continue
                hold_s = ahead_s
                if sched.interval_s is not None:
                    # The replica fires interval_s after it starts, which is about now.
                    hold_s = sched.interval_s + self.lead_s
                    self._anchors[(name, sched.trigger)] = due
                self.autoscaler.wake(
                    name,
                    mono,
                    until=mono + hold_s,
                    why=f"cron trigger {sched.trigger!r} fires at {due:%Y-%m-%dT%H:%M:%SZ}",
                )
                woken.append(name)
        for gone in set(self._schedules) - seen:
            del self._schedules[gone]
        for key in [k for k in self._anchors if k[0] not in seen]:
            del self._anchors[key]
        return woken

    def _schedules_of(self, name: str, spec: FunctionSpec) -> list[_Schedule]:
        cached = self._schedules.get(name)
        if cached is not None and cached[0] is spec:
            return cached[1]
        schedules: list[_Schedule] = []
        try:
            # The trigger's own schedule code (croniter is the cron extra, loaded here).
            from tickrun.triggers.cron.config import CronConfig

            for trigger in spec.spec.effective_triggers():
                if isinstance(trigger, CronTriggerSpec):
                    config = CronConfig.from_spec(trigger)
                    schedules.append(_Schedule(config.name, config.next_fire, config.interval_s))
        except (ImportError, TickrunError) as exc:
            if name not in self._unusable:
                self._unusable.add(name)
                logger.warning(
                    "cannot compute the cron firings of a function; it is not woken for them",
                    extra={"function": name, "error": str(exc)[:300]},
                )
            schedules = []
        else:
            self._unusable.discard(name)
        self._schedules[name] = (spec, schedules)
        return schedules


def _due(sched: _Schedule, anchor: dt.datetime, now: dt.datetime) -> dt.datetime:
    if sched.interval_s is None:
        return sched.next_fire(now)
    # Interval firings counted from the anchor: the next one not in the past.
    step = sched.interval_s
    missed = max(0, int((now - anchor).total_seconds() // step))
    return anchor + dt.timedelta(seconds=step * (missed + 1))
