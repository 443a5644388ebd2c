"""What a batch writes to the run tables: rows from records, and which runs become inserts,
updates and label rewrites. Shared by the SQLAlchemy DB (:mod:`.sql`) and the stdlib-sqlite3
recorder (:mod:`.lite`), so both drivers write the same rows by the same rules."""

from __future__ import annotations

from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from typing import Any

from ..records import ArtifactRecord, RunRecord, RunState
from .base import merge_incoming

RunKey = tuple[str, int]

# The columns an update of a run rewrites (all but the key).
RUN_VALUES = ("project", "name", "state", "created_at", "updated_at", "body")


def run_row(r: RunRecord) -> dict[str, Any]:
    return {
        "uid": r.uid,
        "iteration": r.iteration,
        "project": r.project,
        "name": r.name[:255],
        "state": r.state.value,
        "created_at": r.created_at,
        "updated_at": r.updated_at,
        "body": r.model_dump_json(),
    }


def artifact_row(a: ArtifactRecord) -> dict[str, Any]:
    return {
        "project": a.project,
        "uid": a.uid,
        "iteration": a.iteration,
        "key": a.key,
        "kind": a.kind.value,
        "created_at": a.created_at,
        "body": a.model_dump_json(),
    }


def latest_runs(runs: Iterable[RunRecord]) -> dict[RunKey, RunRecord]:
    """The last state of each run in a batch (it wins)."""
    latest: dict[RunKey, RunRecord] = {}
    for r in runs:
        latest[(r.uid, r.iteration)] = r
    return latest


@dataclass
class RunWrites:
    inserts: list[dict[str, Any]] = field(default_factory=list)
    updates: list[dict[str, Any]] = field(default_factory=list)  # run rows, keyed by uid+iteration
    # Runs whose label rows are rewritten (new runs, runs ending now); of those, the ones that
    # already have rows to delete first.
    relabel: list[RunRecord] = field(default_factory=list)
    stale_labels: list[RunKey] = field(default_factory=list)

    def label_rows(self) -> list[dict[str, Any]]:
        return [
            {"key": k[:255], "value": v[:255], "uid": r.uid, "iteration": r.iteration}
            for r in self.relabel
            for k, v in r.labels.items()
        ]


def plan_run_writes(
    latest: dict[RunKey, RunRecord],
    states: dict[RunKey, str],
    stored_body: Callable[[RunKey], str],
) -> RunWrites:
    """The writes of ``latest`` given the stored ``states`` of those runs (absent: new).

    Only a terminal state can change what is written (:func:`merge_incoming`), so the caller
    reads the state column and ``stored_body`` is called just for the rare late write to a
    finished run."""
    out = RunWrites()
    for k, incoming in latest.items():
        state = states.get(k)
        if (
            state is not None
            and state != RunState.CREATED.value
            and incoming.state is RunState.CREATED
        ):
            # A queued iteration's heartbeat (written by the sweep) that lost the race with the
            # iteration's own start: from then on only its own process writes it.
            continue
        rec = incoming
        if state is not None and RunState(state).terminal and not incoming.state.terminal:
            rec = merge_incoming(RunRecord.from_trusted_json(stored_body(k)), incoming)
        row = run_row(rec)
        (out.inserts if state is None else out.updates).append(row)
    # New runs, and runs ending now (a handler may set labels while it runs).
    for k, r in latest.items():
        state = states.get(k)
        if state is None:
            out.relabel.append(r)
        elif r.state.terminal and not RunState(state).terminal:
            out.relabel.append(r)
            out.stale_labels.append(k)
    return out


__all__ = [
    "RUN_VALUES",
    "RunKey",
    "RunWrites",
    "artifact_row",
    "latest_runs",
    "plan_run_writes",
    "run_row",
]
