"""Store rows for controller tests that write a state by hand (e.g. what a crash leaves)."""

from __future__ import annotations

from typing import Any

from tickrun.controller.store import FunctionRow, ReplicaRow
from tickrun.functions.spec import default_spec


def function_row(name: str, *, version: int = 1, state: str = "ready") -> FunctionRow:
    return FunctionRow(
        name=name,
        spec=default_spec(name),
        platform="process",
        version=version,
        state=state,
        message="",
        code_hash="c",
    )


def replica_row(replica_id: str, function: str, **extra: Any) -> ReplicaRow:
    return ReplicaRow(
        id=replica_id,
        function=function,
        revision="v",
        platform="process",
        port=20000,
        state="ready",
        restarts=0,
        restart_at=0.0,
        **extra,
    )
