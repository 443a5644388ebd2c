"""One step execution as data: the resolved call going in (:class:`StepCall`), what came out
(:class:`Outcome`), and the middleware protocol that wraps the call (cache, retry).

Middleware in the Dramatiq sense: each one takes the inner ``call`` and returns a call with its
behaviour around it, so the executor knows nothing of caching or retrying.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any, Protocol

from .model import Step

COMPLETED = "completed"
ERROR = "error"
CACHED = "cached"
SKIPPED = "skipped"
PENDING = "pending"
RUNNING = "running"
DONE_OK = (COMPLETED, CACHED)

# Labels on every step run.
PIPELINE_LABEL = "tickrun.pipeline"
PIPELINE_RUN_LABEL = "tickrun.pipeline-run"
STEP_LABEL = "tickrun.pipeline-step"
ATTEMPT_LABEL = "tickrun.pipeline-attempt"
CACHE_KEY_LABEL = "tickrun.pipeline.cache-key"
# On the pipeline run itself.
KIND_LABEL = "tickrun.kind"
PIPELINE_KIND = "pipeline"


@dataclass
class StepCall:
    """A step with its Refs resolved, ready to run; middleware may add labels."""

    step: Step
    params: dict[str, Any]
    inputs: dict[str, str]
    labels: dict[str, str]
    project: str
    attempt: int = 0
    cache_key: str | None = None


@dataclass
class Outcome:
    """What one step execution (or a cache hit) gave."""

    state: str  # completed | error | cached
    run_uid: str | None = None
    outputs: dict[str, Any] = field(default_factory=dict)
    results: dict[str, Any] = field(default_factory=dict)
    error: str | None = None
    attempts: int = 0
    attempt_uids: list[str] = field(default_factory=list)
    started_at: float | None = None
    ended_at: float | None = None

    @property
    def ok(self) -> bool:
        return self.state in DONE_OK


Call = Callable[[StepCall], Outcome]


class Middleware(Protocol):
    def wrap(self, call: Call) -> Call:
        """``call`` with this middleware's behaviour around it."""


def chain(call: Call, middleware: list[Middleware]) -> Call:
    """``middleware[0]`` outermost: ``chain(run, [cache, retry])`` = cache(retry(run))."""
    for m in reversed(middleware):
        call = m.wrap(call)
    return call


__all__ = [
    "ATTEMPT_LABEL",
    "CACHED",
    "CACHE_KEY_LABEL",
    "COMPLETED",
    "DONE_OK",
    "ERROR",
    "KIND_LABEL",
    "PENDING",
    "PIPELINE_KIND",
    "PIPELINE_LABEL",
    "PIPELINE_RUN_LABEL",
    "RUNNING",
    "SKIPPED",
    "STEP_LABEL",
    "Call",
    "Middleware",
    "Outcome",
    "StepCall",
    "chain",
]
