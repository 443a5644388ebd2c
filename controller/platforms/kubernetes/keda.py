"""A function's KEDA ScaledObject (``TICKRUN_K8S_AUTOSCALER=keda``), as a plain manifest (pure: no
client, no I/O).

KEDA then owns the replica count of a function that autoscales (minReplicas < maxReplicas): it
makes its own HPA from the ScaledObject, so tickrun states no count in the Deployment, makes no
HPA and never calls the scale subresource. The spec maps onto KEDA's fields (names checked
against KEDA v2.21.1's ``pkg/scalers`` and its ScaledObject CRD, vendored in
``tests/integration/data/``):

- minReplicas / maxReplicas → ``minReplicaCount`` / ``maxReplicaCount``; scaleToZeroIdleTime →
  ``cooldownPeriod`` (how long after the last active trigger KEDA waits before going to zero);
  lagWindow → the scale-down stabilization window of KEDA's HPA (a count falls only once the
  whole window was low, as with tickrun's own rule).
- a ``kafka-cluster`` trigger → one ``kafka`` trigger per topic (bootstrapServers,
  consumerGroup, topic, lagThreshold = targetLag, offsetResetPolicy = initialOffset); KEDA caps
  the count at the topic's partitions itself (``allowIdleConsumers`` false).
- a ``cron`` schedule → ``cron`` triggers whose windows open a minute before each firing and
  close a minute after: the replica's own cron trigger fires, so a replica must be up before
  the firing, and KEDA's windows have minute precision.
- targetCPU → a ``cpu`` trigger (Utilization), instead of tickrun's HPA.
"""

from __future__ import annotations

import itertools
import math
from dataclasses import dataclass, field
from typing import Any

from tickrun.functions.spec import FunctionSpec
from tickrun.triggers.cron.spec import CronTriggerSpec
from tickrun.triggers.kafka.spec import KafkaTriggerSpec

from ..base import Workload
from . import manifests as m

GROUP, VERSION, PLURAL, KIND = "keda.sh", "v1alpha1", "scaledobjects", "ScaledObject"
API_VERSION = f"{GROUP}/{VERSION}"
DAY_MIN = 24 * 60
# A window opens this many minutes before a firing and closes this many after it.
LEAD_MIN = 1
# Firings closer than this share one long window: always up instead.
MIN_GAP_MIN = 2 * LEAD_MIN + 1
_MACROS = {
    "@yearly": "0 0 1 1 *",
    "@annually": "0 0 1 1 *",
    "@monthly": "0 0 1 * *",
    "@weekly": "0 0 * * 0",
    "@daily": "0 0 * * *",
    "@midnight": "0 0 * * *",
    "@hourly": "0 * * * *",
}


def owns_count(spec: FunctionSpec) -> bool:
    """KEDA scales a function that autoscales on something KEDA reads (kafka, cron, CPU); a
    fixed count (min == max), or HTTP alone (in-flight requests), stays tickrun's."""
    lo, hi = spec.spec.replica_bounds()
    return lo < hi and bool(plan(spec).triggers)


@dataclass
class Plan:
    """The ScaledObject's triggers, its floor, and what the deploy should warn about."""

    triggers: list[dict[str, Any]] = field(default_factory=list)
    min_replicas: int = 0
    warnings: list[str] = field(default_factory=list)


def _expand(text: str, lo: int, hi: int) -> set[int] | None:
    """The values a cron field names (``*``, ``a``, ``a-b``, steps, lists); None when it uses
    anything else (names, ``L``, ``W``…)."""
    out: set[int] = set()
    try:
        for part in text.split(","):
            base, _, step_text = part.partition("/")
            step = int(step_text) if step_text else 1
            if base in ("*", "?"):
                a, b = lo, hi
            elif "-" in base:
                a, b = (int(v) for v in base.split("-", 1))
            else:
                a = int(base)
                b = hi if step_text else a
            if not lo <= a <= b <= hi or step < 1:
                return None
            out.update(range(a, b + 1, step))
    except ValueError:
        return None
    return out


def _field(values: set[int], lo: int, hi: int) -> str:
    return "*" if values == set(range(lo, hi + 1)) else ",".join(str(v) for v in sorted(values))


def cron_windows(schedule: str) -> tuple[list[tuple[str, str]], bool] | None:
    """KEDA ``(start, end)`` pairs whose windows cover each firing of ``schedule`` from
    LEAD_MIN before to LEAD_MIN after, and whether they are exact. ``([], True)``: firings
    closer than MIN_GAP_MIN (the function is simply kept up). None: not expressible (then too).

    A 6-field schedule's seconds are dropped (its firings fall within the minutes of the other
    five). A window that crosses midnight is inexact when the schedule names days: KEDA reads
    the day of the window's start, not of the firing's."""
    text = _MACROS.get(schedule.strip(), schedule)
    fields = text.split()
    if len(fields) == 6:
        fields = fields[1:]
    if len(fields) != 5:
        return None
    minutes, hours = _expand(fields[0], 0, 59), _expand(fields[1], 0, 23)
    if not minutes or not hours:
        return None
    days = " ".join(fields[2:])
    firings = sorted(h * 60 + mi for h in hours for mi in minutes)
    gaps = [b - a for a, b in itertools.pairwise(firings)]
    gaps.append(firings[0] + DAY_MIN - firings[-1])
    if min(gaps) < MIN_GAP_MIN:
        return [], True
    # Per (start hour, end hour): the start and end minutes. Keys whose minutes agree and whose
    # hours are the same distance apart merge into one trigger (minutes x hours stays exact).
    by_hours: dict[tuple[int, int], tuple[set[int], set[int]]] = {}
    exact = True
    for f in firings:
        start, end = f - LEAD_MIN, f + LEAD_MIN
        if (start < 0 or end >= DAY_MIN) and days != "* * *":
            exact = False
        start, end = start % DAY_MIN, end % DAY_MIN
        starts, ends = by_hours.setdefault((start // 60, end // 60), (set(), set()))
        starts.add(start % 60)
        ends.add(end % 60)
    merged: dict[tuple[frozenset[int], frozenset[int], int], tuple[set[int], set[int]]] = {}
    for (hs, he), (starts, ends) in by_hours.items():
        key = (frozenset(starts), frozenset(ends), (he - hs) % 24)
        h_starts, h_ends = merged.setdefault(key, (set(), set()))
        h_starts.add(hs)
        h_ends.add(he)
    pairs = [
        (
            f"{_field(set(ms), 0, 59)} {_field(hs, 0, 23)} {days}",
            f"{_field(set(me), 0, 59)} {_field(he, 0, 23)} {days}",
        )
        for (ms, me, _), (hs, he) in sorted(
            merged.items(), key=lambda kv: (sorted(kv[1][0]), sorted(kv[0][0]))
        )
    ]
    return pairs, exact


def _kafka(t: KafkaTriggerSpec, spec: FunctionSpec, plan: Plan) -> None:
    a = t.attributes
    if a.sasl.enable or a.tls.enable:
        plan.warnings.append(
            f"trigger {t.name}: KEDA's kafka scaler gets no SASL/TLS credentials from tickrun "
            "(give the ScaledObject a TriggerAuthentication), so it cannot read the lag"
        )
    for topic in a.topics:
        plan.triggers.append(
            {
                "type": "kafka",
                "name": f"{t.name}-{topic}"[:63],
                "metadata": {
                    "bootstrapServers": ",".join(a.brokers),
                    "consumerGroup": a.consumer_group,
                    "topic": topic,
                    "lagThreshold": str(spec.spec.target_lag),
                    "offsetResetPolicy": a.initial_offset,
                },
            }
        )


def _cron(t: CronTriggerSpec, plan: Plan, floor: int) -> None:
    a = t.attributes
    windows = cron_windows(a.schedule) if a.schedule is not None else None
    if not windows or not windows[0]:
        if a.interval_s is not None:
            why = "an interval counts from a replica's start"
        elif windows is None:
            why = f"its schedule {a.schedule!r} has no KEDA cron form"
        else:
            why = f"it fires less than {MIN_GAP_MIN} minutes apart"
        if floor == 0:
            plan.warnings.append(
                f"trigger {t.name}: {why}, so under KEDA the function is kept at 1 replica "
                "(minReplicaCount 1) instead of scaling to zero"
            )
        plan.min_replicas = max(plan.min_replicas, 1)
        return
    pairs, exact = windows
    if not exact:
        plan.warnings.append(
            f"trigger {t.name}: a KEDA window that crosses midnight is read on the day it "
            f"starts, so a firing near midnight of {a.schedule!r} may find no replica up"
        )
    for i, (start, end) in enumerate(pairs):
        plan.triggers.append(
            {
                "type": "cron",
                "name": f"{t.name}-{i}"[:63],
                "metadata": {
                    "timezone": a.timezone,
                    "start": start,
                    "end": end,
                    "desiredReplicas": "1",
                },
            }
        )


def plan(spec: FunctionSpec) -> Plan:
    """What the ScaledObject of ``spec`` holds (pure; the deploy's warnings come from here
    too)."""
    s = spec.spec
    lo, _hi = (int(v) for v in s.replica_bounds())
    out = Plan(min_replicas=lo)
    http = False
    for t in s.effective_triggers():
        if isinstance(t, KafkaTriggerSpec):
            _kafka(t, spec, out)
        elif isinstance(t, CronTriggerSpec):
            _cron(t, out, lo)
        elif t.kind == "http":
            http = True
    if s.target_cpu_percent is not None:
        out.triggers.append(
            {
                "type": "cpu",
                "name": "cpu",
                "metricType": "Utilization",
                "metadata": {"value": str(s.target_cpu_percent)},
            }
        )
    if "target_in_flight" in s.model_fields_set:
        out.warnings.append(
            "spec field targetInFlight is accepted but not acted on: KEDA scales on kafka, "
            "cron and cpu triggers"
        )
    if http and out.min_replicas == 0:
        out.warnings.append(
            "under KEDA an HTTP request does not wake a function at zero replicas: set "
            "minReplicas 1, or disableDefaultHTTPTrigger for a function without HTTP"
        )
    return out


def scaled_object(w: Workload, namespace: str, owner: dict[str, Any]) -> dict[str, Any]:
    s = w.spec.spec
    p = plan(w.spec)
    _lo, hi = (int(v) for v in s.replica_bounds())
    meta: dict[str, Any] = {
        "name": m.object_name(w.function),
        "namespace": namespace,
        "labels": m.labels(w),
        "ownerReferences": [owner],
    }
    spec: dict[str, Any] = {
        "scaleTargetRef": {
            "apiVersion": "apps/v1",
            "kind": "Deployment",
            "name": m.object_name(w.function),
        },
        "minReplicaCount": p.min_replicas,
        "maxReplicaCount": max(hi, p.min_replicas, 1),
        "cooldownPeriod": max(1, math.ceil(s.idle_timeout_s)),
        "advanced": {
            "horizontalPodAutoscalerConfig": {
                "behavior": {"scaleDown": {"stabilizationWindowSeconds": math.ceil(s.lag_window_s)}}
            }
        },
        "triggers": p.triggers,
    }
    return {"apiVersion": API_VERSION, "kind": KIND, "metadata": meta, "spec": spec}
