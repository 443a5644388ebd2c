"""Pipelines: a DAG of steps (hub items and user functions) passing artifact URIs and results.

::

    from tickrun import Pipeline

    p = Pipeline("btc", project="btc")
    feats = p.step("features", "hub://market_features#build", inputs={"bars": "bars.csv.gz"})
    train = p.step("train", "steps.py:train", inputs={"dataset": feats.output("features")},
                   retries=2)
    run = p.run(runner="local", parallel=4)      # or runner="subprocess": each step a job
    run.state, run.steps["train"].run_uid, run.graph

Modules: :mod:`.model` (definition, validation), :mod:`.execution` (scheduler, the pipeline
run), :mod:`.executors` (local / job), :mod:`.retry` and :mod:`.cache` (step middleware),
:mod:`.job` (the job entry schedules use), :mod:`.cli` (``tickrun pipeline``). Docs:
docs/pipelines.md.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from ..lazy import lazy_exports

if TYPE_CHECKING:
    from .execution import PipelineRun, StepRun, run_pipeline
    from .model import PipelineError, PipelineSpec, Ref, Step
    from .retry import RetryPolicy
    from .runnable import Pipeline

__all__ = [
    "Pipeline",
    "PipelineError",
    "PipelineRun",
    "PipelineSpec",
    "Ref",
    "RetryPolicy",
    "Step",
    "StepRun",
    "pipeline",
    "run_pipeline",
]

# Lazy, as tickrun.functions.runs: `tickrun --help` imports this package's CLI, not the engine.
_EXPORTS = {
    "PipelineRun": ".execution",
    "StepRun": ".execution",
    "run_pipeline": ".execution",
    "PipelineError": ".model",
    "PipelineSpec": ".model",
    "Ref": ".model",
    "Step": ".model",
    "Pipeline": ".runnable",
    "RetryPolicy": ".retry",
}


def pipeline(
    name: str,
    *,
    project: str = "default",
    retries: int = 0,
    retry_backoff_s: float = 1.0,
    description: str = "",
) -> Pipeline:
    """A new, empty :class:`Pipeline` (the same as calling the class)."""
    from .runnable import Pipeline

    return Pipeline(
        name,
        project=project,
        retries=retries,
        retry_backoff_s=retry_backoff_s,
        description=description,
    )


__getattr__ = lazy_exports(__name__, _EXPORTS, globals())


def __dir__() -> list[str]:
    return sorted([*globals(), *_EXPORTS])
