"""The autoscaler's Kafka-lag rule, on a fake clock (``now=``)."""

from __future__ import annotations

from typing import Any

import pytest
from pydantic import ValidationError

from tickrun.controller.autoscaler import Autoscaler
from tickrun.controller.platforms.base import unacted_fields
from tickrun.functions.errors import SpecError
from tickrun.functions.spec import FunctionSpec, parse_spec


def _spec(**spec: Any) -> FunctionSpec:
    return parse_spec({"metadata": {"name": "f"}, "spec": spec})


def test_lag_sets_replicas_capped_at_partitions_and_max() -> None:
    a = Autoscaler()
    spec = _spec(minReplicas=1, maxReplicas=8, targetLag=100, lagWindow="10s")
    a.observe_lag("f", 250, 16, now=0)
    assert a.desired("f", spec, now=0) == 3  # ceil(250 / 100)
    a.observe_lag("f", 5000, 4, now=1)
    decision = a.decide("f", spec, now=1)
    assert decision.replicas == 4  # 50 wanted, but only 4 partitions to share
    assert "capped at 4 partitions" in decision.reason
    assert (decision.lag, decision.partitions) == (5000, 4)
    a.observe_lag("f", 5000, 64, now=2)
    decision = a.decide("f", spec, now=2)
    assert decision.replicas == 8  # maxReplicas
    assert "maxReplicas 8" in decision.reason


def test_partition_cap_counts_each_worker_as_a_consumer() -> None:
    a = Autoscaler()
    spec = _spec(minReplicas=1, maxReplicas=8, targetLag=10, workers=2)
    a.observe_lag("f", 10_000, 6, now=0)
    assert a.desired("f", spec, now=0) == 3  # 6 partitions over 2 consumers per replica


def test_scales_down_only_once_the_whole_window_was_low() -> None:
    a = Autoscaler()
    spec = _spec(minReplicas=1, maxReplicas=4, targetLag=100, lagWindow="10s")
    a.observe_lag("f", 400, 4, now=0)
    assert a.desired("f", spec, now=0) == 4
    a.observe_lag("f", 0, 4, now=1)  # drained at once
    assert a.desired("f", spec, now=1) == 4
    a.observe_lag("f", 0, 4, now=9)
    assert a.desired("f", spec, now=9) == 4  # the peak is still in the window
    a.observe_lag("f", 0, 4, now=11)
    decision = a.decide("f", spec, now=11)
    assert decision.replicas == 1
    assert decision.reason == "minReplicas 1"


def test_no_flapping_on_an_oscillating_lag() -> None:
    a = Autoscaler()
    spec = _spec(minReplicas=1, maxReplicas=4, targetLag=100, lagWindow="10s")
    counts = []
    for t in range(40):
        a.observe_lag("f", 300 if t % 4 == 0 else 0, 4, now=float(t))
        counts.append(a.desired("f", spec, now=float(t)))
    assert counts == [3] * 40  # a high sample every 4 s keeps the count steady
    for t in range(40, 52):
        a.observe_lag("f", 0, 4, now=float(t))
        counts.append(a.desired("f", spec, now=float(t)))
    changes = sum(1 for x, y in zip(counts, counts[1:], strict=False) if x != y)
    assert changes == 1 and counts[-1] == 1


def test_unknown_lag_holds_the_count_and_never_scales_to_zero() -> None:
    a = Autoscaler()
    spec = _spec(
        minReplicas=0, maxReplicas=4, targetLag=100, lagWindow="5s", scaleToZeroIdleTime="10s"
    )
    a.observe_lag("f", 300, 4, now=0)
    assert a.desired("f", spec, now=0) == 3
    a.observe_lag("f", None, None, now=1)  # brokers down
    decision = a.decide("f", spec, now=60)
    assert decision.replicas == 3  # held, long past the window and the idle time
    assert "lag unknown" in decision.reason
    assert decision.lag is None
    a.observe_lag("f", 0, 4, now=61)  # readable again: drained
    assert a.desired("f", spec, now=61) == 1  # the window is low; not idle for 10 s yet
    a.observe_lag("f", 0, 4, now=62)
    assert a.desired("f", spec, now=75) == 0


def test_a_function_at_zero_wakes_on_lag() -> None:
    a = Autoscaler()
    spec = _spec(minReplicas=0, maxReplicas=4, targetLag=1000, scaleToZeroIdleTime="10s")
    a.observe("f", 0, False, now=0)
    a.observe_lag("f", 0, 4, now=0)
    assert a.desired("f", spec, now=11) == 0
    a.observe_lag("f", 3, 4, now=12)  # three records behind: one replica, not zero
    decision = a.decide("f", spec, now=12)
    assert decision.replicas == 1
    assert decision.reason.startswith("lag 3")
    a.observe_lag("f", 0, 4, now=13)
    assert a.desired("f", spec, now=20) == 1  # kept while recently busy
    assert a.desired("f", spec, now=60) == 0  # drained and idle: back to zero


def test_in_flight_wins_when_it_asks_for_more() -> None:
    a = Autoscaler()
    spec = _spec(minReplicas=1, maxReplicas=10, targetLag=100, targetInFlight=2)
    a.observe("f", 10, True, now=0)
    a.observe_lag("f", 150, 8, now=0)
    decision = a.decide("f", spec, now=0)
    assert decision.replicas == 5
    assert decision.reason.startswith("in-flight 10")


def test_the_same_reading_counts_once_and_fixed_counts_ignore_lag() -> None:
    a = Autoscaler()
    a.observe_lag("f", 10_000, 8, now=5)
    a.observe_lag("f", 0, 8, now=5)  # fed again by a later pass: ignored
    assert a.desired("f", _spec(minReplicas=1, maxReplicas=8, targetLag=10), now=5) == 8
    assert a.desired("f", _spec(replicas=2), now=5) == 2
    assert a.explain("f") == {
        "desired": 2,
        "reason": "fixed at 2",
        "lag": 10_000,
        "partitions": 8,
    }


def test_a_scheduled_wake_keeps_one_replica_until_the_firing_and_the_idle_time() -> None:
    a = Autoscaler()
    spec = _spec(minReplicas=0, maxReplicas=2, scaleToZeroIdleTime="5s")
    a.observe("f", 0, False, now=0)
    assert a.desired("f", spec, now=10) == 0
    a.wake("f", now=10, until=20, why="cron trigger 'c' fires at …")
    decision = a.decide("f", spec, now=11)
    assert decision.replicas == 1
    assert decision.reason.startswith("cron trigger 'c'")
    assert a.desired("f", spec, now=24) == 1  # the firing at 20 may still run
    assert a.desired("f", spec, now=25) == 0


@pytest.mark.parametrize(
    ("field", "value"),
    [("targetLag", 0), ("lagWindow", "0s"), ("lagWindow", "2h"), ("lagWndow", 1)],
)
def test_lag_fields_are_validated(field: str, value: object) -> None:
    with pytest.raises((SpecError, ValidationError)):
        _spec(**{field: value})


def test_a_deploy_warns_when_targetlag_cannot_act() -> None:
    kafka = {
        "k": {
            "kind": "kafka-cluster",
            "attributes": {"brokers": "b:9092", "topics": ["t"], "consumerGroup": "g"},
        }
    }
    assert unacted_fields(_spec(targetLag=10, triggers=kafka), set(), "process") == []
    assert unacted_fields(_spec(triggers=kafka), set(), "process") == []
    no_kafka = unacted_fields(_spec(lagWindow="10s"), set(), "process")
    assert no_kafka == ["spec field targetLag is accepted but not acted on by the process platform"]
    # Where an HPA owns the count (targetCPU acted on), the lag is not followed either.
    hpa = unacted_fields(
        _spec(targetLag=10, targetCPU=70, triggers=kafka), {"targetCPU"}, "kubernetes"
    )
    assert hpa == ["spec field targetLag is accepted but not acted on by the kubernetes platform"]
