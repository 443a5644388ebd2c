"""``Pipeline``: the definition (:class:`~.model.PipelineSpec`) plus ``run``."""

from __future__ import annotations

from collections.abc import Mapping

from ..runs.settings import TrackingSettings
from .execution import PipelineRun, run_pipeline
from .model import PipelineSpec


class Pipeline(PipelineSpec):
    """A DAG of steps (hub items and user functions); see :class:`~.model.PipelineSpec`."""

    def run(
        self,
        *,
        runner: str = "local",
        parallel: int = 4,
        cache: bool = True,
        settings: TrackingSettings | None = None,
        labels: Mapping[str, str] | None = None,
    ) -> PipelineRun:
        """Run the pipeline as a tracked run (labels ``tickrun.pipeline=<name>``), each step a
        tracked run of its own: in threads here (``runner="local"``) or a job per step
        (``subprocess``, ``container``, ``kubernetes``); up to ``parallel`` steps at once.
        ``cache=False``: run every step even when an earlier run had the same cache key."""
        return run_pipeline(
            self, runner=runner, parallel=parallel, cache=cache, settings=settings, labels=labels
        )


__all__ = ["Pipeline"]
