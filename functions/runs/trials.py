"""Intermediate values of a sweep's iteration, and the sweep's answer: go on, or stop (pruned).

A handler reports ``context.report_intermediate(step, value)`` and asks ``context.should_prune()``
(:class:`~.context.RunContext`). The question goes to whoever runs the iteration for a sweep that
prunes (the Optuna strategy, :mod:`.optunasweep`): in the sweep's own process a function set
with :func:`reporting`; in a pool worker (:mod:`.pool`) a round trip over the worker's pipe to
the sweep, which holds the study. Outside such a sweep nothing is asked and nothing is pruned.
"""

from __future__ import annotations

import contextlib
import contextvars
from collections.abc import Callable, Iterator
from dataclasses import dataclass

# (step, value) → True when the iteration should stop.
Reporter = Callable[[int, float], bool]

_reporter: contextvars.ContextVar[Reporter | None] = contextvars.ContextVar(
    "tickrun_trial_reporter", default=None
)


class TrialPruned(Exception):  # Optuna's name for the same thing
    """Raised by a handler (or left to :meth:`RunContext.should_prune`'s caller) to end its
    iteration as pruned: the run ends ``aborted`` with a ``hyper.pruned`` label."""


@dataclass(frozen=True)
class Intermediate:
    """What a pool worker sends its sweep mid-iteration; the sweep answers with a bool."""

    step: int
    value: float


@contextlib.contextmanager
def reporting(reporter: Reporter | None) -> Iterator[None]:
    """Intermediate values reported in this context (this thread) go to ``reporter``."""
    token = _reporter.set(reporter)
    try:
        yield
    finally:
        _reporter.reset(token)


def report(step: int, value: float) -> bool:
    """Hand one intermediate value to the sweep; True when the sweep says stop."""
    reporter = _reporter.get()
    return bool(reporter(step, value)) if reporter is not None else False


def active() -> bool:
    """Whether anyone listens (a pruning sweep runs this iteration)."""
    return _reporter.get() is not None
