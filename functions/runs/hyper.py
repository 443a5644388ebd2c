"""Hyperparameter sweeps: grid / list / random iterations, a selector, a stop condition, and
iterations in a bounded pool of worker processes (the Optuna strategy: :mod:`.optunasweep`; what
every strategy shares, the parent, the queue, the progress line: :mod:`.sweepframe`).

The sweep is one run uid: iteration 0 is the parent (best iteration's results, an
``iteration_results`` table and an ``iteration_plot``: :mod:`.sweepresult`), iterations 1..N are
the children. A failing
iteration is recorded as error and the sweep goes on.

Every iteration is in the run DB from the start, as ``created``; each one ends ``completed``,
``error`` or ``aborted`` (not run: the stop condition was met, or the sweep was interrupted). A
worker process that dies (``kill -9``, the OOM killer, ``os._exit``) fails only the iteration it
was running; a fresh worker takes the next one.
"""

from __future__ import annotations

import collections
import itertools
import operator
import random
import re
from collections.abc import Callable
from typing import Any

from ..artifacts import ArtifactStore
from ..errors import BadRequestError
from .db.base import RunDB
from .execution import RunEnv
from .pool import IterationTask
from .records import RunRecord
from .runobject import RunObject
from .sweepframe import SweepFrame, new_children, pool_usable
from .sweepresult import selection

STRATEGIES = ("grid", "list", "random")
DEFAULT_RANDOM_ITERATIONS = 10
_OPS: dict[str, Callable[[Any, Any], bool]] = {
    ">=": operator.ge,
    "<=": operator.le,
    "==": operator.eq,
    "!=": operator.ne,
    ">": operator.gt,
    "<": operator.lt,
}
_COND = re.compile(r"^\s*([A-Za-z_][A-Za-z0-9_.-]*)\s*(>=|<=|==|!=|>|<)\s*(\S+)\s*$")


def expand(
    hyperparams: dict[str, Any],
    strategy: str = "grid",
    max_iterations: int | None = None,
    seed: int | None = None,
) -> list[dict[str, Any]]:
    """The parameter combination of each iteration, in order."""
    if strategy not in STRATEGIES:
        raise BadRequestError(f"hyper strategy must be one of {', '.join(STRATEGIES)}, or optuna")
    for k, v in hyperparams.items():
        if isinstance(v, dict):
            raise BadRequestError(
                f"hyperparameter {k!r} is a range {v}: ranges are sampled by --strategy optuna; "
                f"the {strategy} strategy needs a list of values"
            )
        if not isinstance(v, list | tuple) or not v:
            raise BadRequestError(f"hyperparameter {k!r} needs a non-empty list of values")
    keys = list(hyperparams)
    if strategy == "grid":
        combos = [
            dict(zip(keys, vals, strict=True))
            for vals in itertools.product(*(hyperparams[k] for k in keys))
        ]
    elif strategy == "list":
        lengths = {len(v) for v in hyperparams.values()}
        if len(lengths) != 1:
            raise BadRequestError("the 'list' strategy needs value lists of equal length")
        combos = [
            dict(zip(keys, vals, strict=True))
            for vals in zip(*(hyperparams[k] for k in keys), strict=True)
        ]
    else:
        rng = random.Random(seed)
        n = max_iterations or DEFAULT_RANDOM_ITERATIONS
        combos = [{k: rng.choice(list(hyperparams[k])) for k in keys} for _ in range(n)]
    return combos[:max_iterations] if max_iterations else combos


def parse_condition(text: str) -> Callable[[dict[str, Any]], bool]:
    """``"accuracy >= 0.9"`` → a predicate over an iteration's results (no eval)."""
    m = _COND.match(text)
    if not m:
        raise BadRequestError(
            f"stop condition {text!r} must look like '<result> <op> <number>' (ops: "
            f"{' '.join(_OPS)})"
        )
    key, op, raw = m.groups()
    try:
        target: Any = float(raw)
    except ValueError:
        target = raw.strip("'\"")

    def check(results: dict[str, Any]) -> bool:
        value = results.get(key)
        if value is None:
            return False
        try:
            return bool(_OPS[op](value, target))
        except TypeError:
            return False

    return check


def run_sweep(
    fn: Callable[..., Any],
    ref: str,
    parent: RunRecord,
    inputs: dict[str, Any],
    *,
    db: RunDB,
    store: ArtifactStore,
    env: RunEnv,
    hyperparams: dict[str, Any],
    strategy: str = "grid",
    selector: str | None = None,
    stop_condition: str | None = None,
    max_iterations: int | None = None,
    parallel: int = 1,
    seed: int | None = None,
    progress: bool = True,
) -> RunObject:
    combos = expand(hyperparams, strategy, max_iterations, seed)
    if selector:
        selection([], selector)  # a bad selector is refused before anything runs
    stop = parse_condition(stop_condition) if stop_condition else None
    parent.labels.setdefault("hyper.strategy", strategy)
    use_pool = pool_usable(parallel, env, ref)
    frame = SweepFrame(
        parent,
        new_children(parent, combos),
        inputs,
        db=db,
        store=store,
        env=env,
        ref=ref,
        selector=selector,
        stop=stop,
        parallel=parallel,
        use_pool=use_pool,
        progress=progress,
    )
    with frame.guard():
        if use_pool:
            _run_pool(frame, ref, parallel)
        else:
            items = frame.local_inputs()
            for child in frame.children:
                if frame.finished(*frame.execute(fn, child, items)):
                    break
        return frame.conclude()


def _run_pool(frame: SweepFrame, ref: str, parallel: int) -> None:
    inputs = frame.worker_inputs()
    waiting = collections.deque(frame.children)
    with frame.pool() as pool:
        while waiting or pool.busy:
            while waiting and len(pool.busy) < parallel:
                child = waiting.popleft()
                frame.queued.take(child)
                pool.submit(IterationTask(ref, child, inputs, frame.env))
            for child, outcome in pool.wait():
                if frame.finished(*frame.ended(child, outcome)):
                    waiting.clear()  # the rest stay queued and end "not run"
