from __future__ import annotations

from tickrun.controller.autoscaler import Autoscaler
from tickrun.functions.spec import parse_spec


def _spec(**spec: object):  # type: ignore[no-untyped-def]
    return parse_spec({"metadata": {"name": "f"}, "spec": spec})


def test_fixed_counts_are_never_changed() -> None:
    a = Autoscaler()
    a.observe("f", 500, True, now=0)
    assert a.desired("f", _spec(replicas=3), now=0) == 3
    assert a.desired("f", _spec(minReplicas=2, maxReplicas=2), now=0) == 2
    assert a.desired("f", _spec(replicas=0), now=0) == 0


def test_in_flight_over_the_window_sets_replicas_within_bounds() -> None:
    a = Autoscaler(window_s=10)
    spec = _spec(minReplicas=1, maxReplicas=4, targetInFlight=8)
    a.observe("f", 0, False, now=0)
    assert a.desired("f", spec, now=0) == 1
    a.observe("f", 20, True, now=1)  # 20 in flight / 8 per replica → 3
    assert a.desired("f", spec, now=1) == 3
    a.observe("f", 100, True, now=2)
    assert a.desired("f", spec, now=2) == 4  # clamped to max
    a.observe("f", 0, False, now=20)  # the peak left the window
    assert a.desired("f", spec, now=20) == 1


def test_scale_to_zero_after_idle_and_back_on_wake() -> None:
    a = Autoscaler(window_s=5)
    spec = _spec(minReplicas=0, maxReplicas=2, scaleToZeroIdleTime="10s")
    a.observe("f", 0, True, now=0)
    assert a.desired("f", spec, now=5) == 1  # not idle long enough
    a.observe("f", 0, False, now=11)
    assert a.desired("f", spec, now=11) == 0
    a.wake("f", now=12)  # a request is being held by the gateway
    assert a.desired("f", spec, now=12) == 1
    assert a.desired("f", spec, now=30) == 1  # stays up until traffic is seen and stops
    a.observe("f", 1, True, now=31)
    a.observe("f", 0, False, now=45)
    assert a.desired("f", spec, now=45) == 0
