"""CronWaker: a function at zero is woken a lead before its cron firing (fake clocks)."""

from __future__ import annotations

import datetime as dt
from typing import Any

from tickrun.controller.autoscaler import Autoscaler
from tickrun.controller.wake import CronWaker
from tickrun.functions.spec import FunctionSpec, parse_spec

T0 = dt.datetime(2026, 1, 5, 12, 0, 0, tzinfo=dt.UTC)


class Clocks:
    def __init__(self) -> None:
        self.t = 0.0  # seconds since T0, on both clocks

    def wall(self) -> dt.datetime:
        return T0 + dt.timedelta(seconds=self.t)

    def mono(self) -> float:
        return 1000.0 + self.t


def _spec(cron: dict[str, Any], **spec: Any) -> FunctionSpec:
    return parse_spec(
        {
            "metadata": {"name": "f"},
            "spec": {
                "minReplicas": 0,
                "maxReplicas": 2,
                "scaleToZeroIdleTime": "5s",
                "triggers": {"tick": {"kind": "cron", "attributes": cron}},
                **spec,
            },
        }
    )


def _setup(spec: FunctionSpec, lead_s: float = 3.0) -> tuple[Autoscaler, CronWaker, Clocks]:
    clocks = Clocks()
    auto = Autoscaler()
    waker = CronWaker(auto, lead_s, wall=clocks.wall, monotonic=clocks.mono)
    auto.observe("f", 0, False, now=clocks.mono())
    return auto, waker, clocks


def _desired_at(auto: Autoscaler, waker: CronWaker, clocks: Clocks, spec: FunctionSpec) -> int:
    waker.check([("f", spec)])
    return auto.desired("f", spec, now=clocks.mono())


def test_woken_a_lead_before_each_firing_and_kept_through_idle_time() -> None:
    spec = _spec({"schedule": "0 * * * * *"})  # second 0 of every minute (seconds first)
    auto, waker, clocks = _setup(spec)
    seen, reasons = {}, {}
    for t in range(0, 130):
        clocks.t = float(t)
        seen[t] = _desired_at(auto, waker, clocks, spec)
        reasons[t] = (auto.explain("f") or {})["reason"]
    # The 12:00:00 firing (t=0) is in the lead at once: up until 0 + 5 s idle.
    assert [seen[t] for t in range(0, 5)] == [1] * 5
    assert [seen[t] for t in range(5, 57)] == [0] * 52
    # Woken 3 s before 12:01:00, kept until 5 s after it.
    assert [seen[t] for t in range(57, 65)] == [1] * 8
    assert [seen[t] for t in range(65, 117)] == [0] * 52
    assert seen[117] == 1
    assert reasons[117] == "cron trigger 'tick' fires at 2026-01-05T12:02:00Z"
    assert reasons[129] == "idle for scaleToZeroIdleTime 5 s: scaled to zero"


def test_schedules_in_their_timezone() -> None:
    spec = _spec({"schedule": "30 14 * * *", "timezone": "Europe/Paris"})  # 13:30 UTC in Jan
    auto, waker, clocks = _setup(spec, lead_s=60)
    clocks.t = 3600 + 28 * 60.0  # 13:28 UTC
    assert _desired_at(auto, waker, clocks, spec) == 0
    clocks.t = 3600 + 29 * 60.0 + 1  # 59 s before the firing
    assert _desired_at(auto, waker, clocks, spec) == 1


def test_only_functions_that_scale_to_zero_are_woken() -> None:
    spec = _spec({"schedule": "0 * * * * *"}, minReplicas=1)
    auto, waker, clocks = _setup(spec)
    assert waker.check([("f", spec)]) == []
    assert auto.desired("f", spec, now=clocks.mono()) == 1


def test_interval_triggers_are_kept_up_for_an_interval_after_the_wake() -> None:
    spec = _spec({"interval": "20s"})
    auto, waker, clocks = _setup(spec)
    woken_at = []
    for t in range(0, 70):
        clocks.t = float(t)
        if waker.check([("f", spec)]):
            woken_at.append(t)
    # Anchored at the first sight (t=0): firings due at 20, 40, 60; woken 3 s before each.
    assert woken_at == [17, 37, 57]
    # The replica started at 57 fires 20 s later: kept until 57 + 20 + 3 (+ 5 s idle).
    assert auto.desired("f", spec, now=clocks.mono() + 10) == 1


def test_an_invalid_schedule_is_not_woken_for_and_does_not_raise() -> None:
    spec = _spec({"schedule": "61 * * * *"})
    auto, waker, clocks = _setup(spec)
    assert waker.check([("f", spec)]) == []
