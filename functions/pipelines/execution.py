"""Running a pipeline: a scheduler that launches ready steps up to ``parallel`` at once, resolves
Refs from finished steps, and skips the dependents of a failed step; the pipeline itself is a
tracked run holding the graph (result and JSON artifact ``graph``).
"""

from __future__ import annotations

import json
import logging
import time
from collections.abc import Callable, Mapping
from concurrent.futures import FIRST_COMPLETED, Future, ThreadPoolExecutor, wait
from dataclasses import dataclass, field
from typing import Any

from ..errors import BadRequestError, RunError, TickrunError
from ..runs.db import RunDB, open_db
from ..runs.plugins import MAX_PARALLEL
from ..runs.runner import run_function
from ..runs.runobject import RunObject
from ..runs.settings import TrackingSettings
from .cache import StepCache
from .executors import JobExecutor, LocalExecutor
from .model import RESULT_UID, PipelineError, PipelineSpec, Ref, Step
from .retry import RetryPolicy
from .steps import (
    DONE_OK,
    ERROR,
    KIND_LABEL,
    PENDING,
    PIPELINE_KIND,
    PIPELINE_LABEL,
    PIPELINE_RUN_LABEL,
    RUNNING,
    SKIPPED,
    STEP_LABEL,
    Call,
    Outcome,
    StepCall,
    chain,
)

logger = logging.getLogger(__name__)


@dataclass
class StepRun:
    """A step's state in one pipeline run."""

    name: str
    target: str
    state: str = PENDING  # pending|running|completed|error|skipped|cached
    run_uid: str | None = None
    cached: bool = False
    attempts: int = 0
    attempt_uids: list[str] = field(default_factory=list)
    outputs: dict[str, Any] = field(default_factory=dict)
    results: dict[str, Any] = field(default_factory=dict)
    error: str | None = None
    started_at: float | None = None
    ended_at: float | None = None

    def node(self) -> dict[str, Any]:
        return {
            "name": self.name,
            "target": self.target,
            "state": self.state,
            "run_uid": self.run_uid,
            "cached": self.cached,
            "attempts": self.attempts,
            "attempt_uids": self.attempt_uids,
            "error": self.error,
            "started_at": self.started_at,
            "ended_at": self.ended_at,
        }


@dataclass
class PipelineRun:
    """What :meth:`Pipeline.run` returns: the pipeline run's state and each step's."""

    pipeline: str
    uid: str
    state: str
    steps: dict[str, StepRun]
    graph: dict[str, Any]
    error: str | None = None
    run: RunObject | None = field(default=None, repr=False)

    def raise_for_state(self) -> PipelineRun:
        if self.state != "completed":
            raise RunError(f"pipeline {self.pipeline} run {self.uid}: {self.error}")
        return self


def make_graph(pipeline: PipelineSpec, steps: Mapping[str, StepRun], uid: str) -> dict[str, Any]:
    return {
        "pipeline": pipeline.name,
        "run_uid": uid,
        "nodes": [steps[n].node() for n in pipeline.steps],
        "edges": pipeline.edges(),
    }


def resolve_value(value: Any, steps: Mapping[str, StepRun]) -> Any:
    """A Ref's value from its finished step; other values as they are."""
    if not isinstance(value, Ref):
        return value
    up = steps[value.step]
    if value.kind == "result":
        if value.key == RESULT_UID:
            return up.run_uid
        if value.key not in up.results:
            raise BadRequestError(
                f"step {value.step} has no result {value.key!r} "
                f"(results: {', '.join(sorted(up.results)) or 'none'})"
            )
        return up.results[value.key]
    if value.key not in up.outputs:
        raise BadRequestError(
            f"step {value.step} has no output {value.key!r} "
            f"(outputs: {', '.join(sorted(up.outputs)) or 'none'})"
        )
    return up.outputs[value.key]


class Scheduler:
    """Runs a validated pipeline's steps: each ready step (all upstream completed or cached)
    is submitted to a thread pool of ``parallel`` threads; a failed step's dependents are
    skipped while independent steps go on."""

    def __init__(
        self,
        pipeline: PipelineSpec,
        call_for: Callable[[Step], Call],
        *,
        parallel: int,
        labels: Mapping[str, str],
        on_change: Callable[[dict[str, StepRun]], None] | None = None,
    ) -> None:
        if not isinstance(parallel, int) or not 1 <= parallel <= MAX_PARALLEL:
            raise PipelineError(f"parallel must be from 1 to {MAX_PARALLEL}, got {parallel!r}")
        self.pipeline = pipeline
        self.order = pipeline.validate()
        self.call_for = call_for
        self.parallel = parallel
        self.labels = dict(labels)
        # Called (on the scheduler's thread) after steps start or end: the live graph.
        self.on_change = on_change
        self.steps = {n: StepRun(n, pipeline.steps[n].target_name) for n in pipeline.steps}

    def run(self) -> dict[str, StepRun]:
        pending = list(self.order)
        running: dict[Future[Outcome], str] = {}
        with ThreadPoolExecutor(self.parallel, thread_name_prefix="pipeline-step") as pool:
            while pending or running:
                for name in list(pending):
                    ups = [self.steps[u] for u in self.pipeline.steps[name].upstream()]
                    if any(u.state in (ERROR, SKIPPED) for u in ups):
                        failed = next(u.name for u in ups if u.state in (ERROR, SKIPPED))
                        self._skip(name, failed)
                        pending.remove(name)
                    elif all(u.state in DONE_OK for u in ups) and len(running) < self.parallel:
                        pending.remove(name)
                        future = self._submit(pool, name)
                        if future is not None:
                            running[future] = name
                if not running:
                    if pending:  # cannot happen for a validated DAG; never spin
                        raise PipelineError(f"steps {pending} can never run")
                    break
                self._changed()
                done, _ = wait(list(running), return_when=FIRST_COMPLETED)
                for future in done:
                    self._finish(running.pop(future), future)
        return self.steps

    def _changed(self) -> None:
        if self.on_change is None:
            return
        try:
            self.on_change(self.steps)
        except TickrunError as exc:  # a progress write must not stop the pipeline
            logger.warning("cannot record the pipeline's progress: %s", exc.message)

    def _skip(self, name: str, failed: str) -> None:
        sr = self.steps[name]
        sr.state = SKIPPED
        sr.error = f"skipped: upstream step {failed} did not complete"

    def _submit(self, pool: ThreadPoolExecutor, name: str) -> Future[Outcome] | None:
        step = self.pipeline.steps[name]
        sr = self.steps[name]
        try:
            params = {k: resolve_value(v, self.steps) for k, v in step.params.items()}
            inputs = {k: str(resolve_value(v, self.steps)) for k, v in step.inputs.items()}
        except TickrunError as exc:
            sr.state, sr.error = ERROR, exc.message
            return None
        job = StepCall(
            step=step,
            params=params,
            inputs=inputs,
            labels={**self.labels, STEP_LABEL: name},
            project=self.pipeline.project,
        )
        sr.state = RUNNING
        sr.started_at = time.time()
        logger.info("pipeline step started", extra={"step": name})
        return pool.submit(self.call_for(step), job)

    def _finish(self, name: str, future: Future[Outcome]) -> None:
        sr = self.steps[name]
        try:
            out = future.result()
        except Exception as exc:  # an executor bug or an I/O error: the step failed, not us
            msg = exc.message if isinstance(exc, TickrunError) else f"{type(exc).__name__}: {exc}"
            logger.error("pipeline step raised", exc_info=True, extra={"step": name})
            out = Outcome(ERROR, error=msg, attempts=max(1, sr.attempts))
        sr.state = out.state
        sr.cached = out.state == "cached"
        sr.run_uid = out.run_uid
        sr.attempts = out.attempts if not sr.cached else 0
        sr.attempt_uids = out.attempt_uids
        sr.outputs, sr.results = dict(out.outputs), dict(out.results)
        sr.error = out.error
        sr.started_at = out.started_at or sr.started_at
        sr.ended_at = out.ended_at or time.time()
        logger.info(
            "pipeline step finished",
            extra={"step": name, "state": sr.state, "run_uid": sr.run_uid, "error": sr.error},
        )


def drive(
    pipeline: PipelineSpec,
    context: Any,
    *,
    runner: str,
    parallel: int,
    cache: bool,
    settings: TrackingSettings,
    db: RunDB,
    into: dict[str, StepRun] | None = None,
    artifact_path: str | None = None,
) -> dict[str, StepRun]:
    """Run the steps inside the tracked run ``context`` (the pipeline run): record the graph
    on it, and raise naming the failed steps so the run ends in error (``into`` gets the
    steps' states either way)."""
    context.set_label(PIPELINE_LABEL, pipeline.name)
    context.set_label(KIND_LABEL, PIPELINE_KIND)
    executor: Call = (
        LocalExecutor(settings)
        if runner == "local"
        else JobExecutor(runner, settings, artifact_path=artifact_path)
    )
    step_cache = StepCache(db, enabled=cache)

    def call_for(step: Step) -> Call:
        return chain(executor, [step_cache, RetryPolicy(step.retries, step.retry_backoff_s)])

    labels = {PIPELINE_LABEL: pipeline.name, PIPELINE_RUN_LABEL: context.uid}

    def progress(steps: dict[str, StepRun]) -> None:
        # `tickrun pipeline show` of a running pipeline: the graph so far (the tracker flushes).
        context.log_result("graph", make_graph(pipeline, steps, context.uid))

    scheduler = Scheduler(pipeline, call_for, parallel=parallel, labels=labels, on_change=progress)
    steps = scheduler.run()
    if into is not None:
        into.update(steps)
    graph = make_graph(pipeline, steps, context.uid)
    context.log_result("graph", graph)
    for state in ("completed", "cached", "error", "skipped"):
        context.log_result(f"steps_{state}", sum(s.state == state for s in steps.values()))
    context.log_artifact("graph", body=json.dumps(graph, indent=2, default=str), format="json")
    failed = [s for s in steps.values() if s.state == ERROR]
    if failed:
        why = "; ".join(f"step {s.name} failed: {s.error}" for s in failed)
        raise RunError(f"pipeline {pipeline.name}: {why}"[:1900])
    return steps


def run_pipeline(
    pipeline: PipelineSpec,
    *,
    runner: str = "local",
    parallel: int = 4,
    cache: bool = True,
    settings: TrackingSettings | None = None,
    labels: Mapping[str, str] | None = None,
) -> PipelineRun:
    """Validate, then run ``pipeline`` as a tracked run of its own."""
    pipeline.validate()  # definition errors before anything is recorded
    if not isinstance(parallel, int) or not 1 <= parallel <= MAX_PARALLEL:
        raise PipelineError(f"parallel must be from 1 to {MAX_PARALLEL}, got {parallel!r}")
    s = settings or TrackingSettings.from_env()
    db = open_db(s)
    if runner != "local":
        JobExecutor(runner, s)  # an unknown runner is a 400 now, not a failed pipeline run
    held: dict[str, StepRun] = {}

    def pipeline_run(context: Any) -> None:
        drive(
            pipeline,
            context,
            runner=runner,
            parallel=parallel,
            cache=cache,
            settings=s,
            db=db,
            into=held,
            artifact_path=settings.artifact_path if settings is not None else None,
        )

    run = run_function(
        pipeline_run,
        params={"runner": runner, "parallel": parallel, "cache": cache},
        project=pipeline.project,
        name=pipeline.name,
        labels={PIPELINE_LABEL: pipeline.name, KIND_LABEL: PIPELINE_KIND, **(labels or {})},
        db=db,
        settings=s,
        progress=False,
    )
    graph = run.results.get("graph") or {"nodes": [], "edges": pipeline.edges()}
    steps = held or _steps_from_graph(graph)
    return PipelineRun(
        pipeline=pipeline.name,
        uid=run.uid,
        state=run.state,
        steps=steps,
        graph=graph,
        error=run.error,
        run=run,
    )


def _steps_from_graph(graph: Mapping[str, Any]) -> dict[str, StepRun]:
    """Step states back from a recorded graph (a run whose handler raised before the end)."""
    out: dict[str, StepRun] = {}
    for node in graph.get("nodes", []):
        sr = StepRun(node["name"], node.get("target", ""))
        for k in ("state", "run_uid", "cached", "attempts", "error", "started_at", "ended_at"):
            if k in node:
                setattr(sr, k, node[k])
        out[sr.name] = sr
    return out


__all__ = [
    "PipelineRun",
    "Scheduler",
    "StepRun",
    "drive",
    "make_graph",
    "resolve_value",
    "run_pipeline",
]
