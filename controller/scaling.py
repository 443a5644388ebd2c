"""Scaling a function without a deploy: ``PUT /api/functions/{name}/scale``.

Only the stored spec's replica counts change (``SCALE_FIELDS``): they are not part of the
revision, so there is no new version, no build and no restart of a running replica. The
reconciler starts or stops replicas on the next pass (it is woken), or passes the new count or
bounds to the cluster (``cluster.py``).
"""

from __future__ import annotations

from typing import Any

from tickrun.functions.errors import ConflictError, SpecError
from tickrun.functions.spec import FunctionSpec, parse_spec

from .service import SCALE_FIELDS, FunctionService, desired_replicas
from .store import FunctionRow


async def scale_function(
    service: FunctionService,
    name: str,
    *,
    replicas: int | None = None,
    min_replicas: int | None = None,
    max_replicas: int | None = None,
) -> tuple[FunctionRow, dict[str, Any]]:
    """Set ``replicas`` (a fixed count; 0 stops the function) or ``min_replicas`` and
    ``max_replicas`` (autoscaled bounds). Returns the row and the ``scale`` event's data,
    ``{"from": …, "to": …}``."""
    store = service.store
    row = store.get_function(name)
    if row.state == "deleting":
        raise ConflictError(f"function {name!r} is being deleted")
    data = row.spec.to_yaml_dict()
    fields = data.setdefault("spec", {})
    for key in SCALE_FIELDS:
        fields.pop(key, None)
    if replicas is not None:
        fields["replicas"] = replicas
    else:
        fields["minReplicas"], fields["maxReplicas"] = min_replicas, max_replicas
    # The spec's own validation judges the counts, as a deploy of the same spec would.
    try:
        spec = parse_spec(data)
    except SpecError as exc:
        raise SpecError(
            exc.message.replace("invalid function spec", "invalid scale request"), detail=exc.detail
        ) from exc
    change = {"from": scale_of(row.spec), "to": scale_of(spec)}
    message = f"scaled from {bounds_text(row.spec)} to {bounds_text(spec)}"
    row = store.update_function(name, spec=spec)
    store.add_event(name, "scale", message, data=change)
    service.on_change()  # the reconciler's wake-up
    return row, change


def scale_of(spec: FunctionSpec) -> dict[str, int]:
    """The spec's replica fields as written (``{}`` when none is set: one replica)."""
    s = spec.spec
    values = {"replicas": s.replicas, "minReplicas": s.min_replicas, "maxReplicas": s.max_replicas}
    return {k: v for k, v in values.items() if v is not None}


def bounds_text(spec: FunctionSpec) -> str:
    if desired_replicas(spec) == 0:  # only `replicas: 0` stops a function
        return "0 replicas (stopped)"
    lo, hi = spec.spec.replica_bounds()
    if lo == hi:
        return f"{lo} replica(s)"
    return f"{lo} to {hi} replicas (autoscaled)"
