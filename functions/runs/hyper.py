"""Hyperparameter sweeps: grid / list / random iterations, a selector, a stop condition, and
iterations in a bounded pool of worker processes (the Optuna strategy: :mod:`.optunasweep`).

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
import logging
import operator
import os
import random
import re
import sys
import threading
import time
from collections.abc import Callable
from typing import Any

from ..artifacts import ArtifactStore
from ..errors import BadRequestError, RunError, TickrunError
from .db.base import HOST, RunDB
from .execution import RunEnv, execute, make_inputs
from .job_handler import load_callable
from .pool import IterationPool, IterationTask
from .records import ArtifactRecord, RunBatch, RunRecord, RunState
from .runobject import RunObject
from .sweepresult import conclude, select_best, selection
from .tracker import RunTracker

logger = logging.getLogger(__name__)

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


def loadable(ref: str) -> bool:
    """Whether a worker process can load the handler ``ref`` by itself."""
    try:
        load_callable(ref)
    except TickrunError:
        return False
    return True


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
    tracker = RunTracker(
        db,
        parent,
        flush_interval_s=env.flush_interval_s,
        heartbeat_interval_s=env.heartbeat_interval_s,
    )
    tracker.start()
    str_inputs = {k: getattr(v, "url", str(v)) for k, v in inputs.items()}
    children = new_children(parent, combos)
    queued = QueuedIterations(db, children, env.heartbeat_interval_s)
    queued.start()
    use_pool = parallel > 1 and env.db is not None and loadable(ref)
    if parallel > 1 and not use_pool:
        logger.warning(
            "running iterations one at a time: the handler or the run DB cannot "
            "be opened in a worker process",
            extra={"handler": ref},
        )
    done: list[RunRecord] = []
    arts: dict[int, list[ArtifactRecord]] = {}
    t0 = time.monotonic()

    def finished(rec: RunRecord, a: list[ArtifactRecord]) -> bool:
        done.append(rec)
        arts[rec.iteration] = a
        line = progress_line(rec, done, len(children), selector, time.monotonic() - t0)
        logger.info(
            "iteration finished",
            extra={"uid": parent.uid, "iteration": rec.iteration, "state": rec.state.value},
        )
        if progress:
            print(line, file=sys.stderr, flush=True)
        return bool(stop and rec.state is RunState.COMPLETED and stop(rec.results))

    try:
        if use_pool:
            _run_pool(children, queued, ref, str_inputs, env, db, parallel, finished)
        else:
            items = make_inputs(inputs, db, env.s3, env.artifact_roots)
            for child in children:
                queued.take(child)
                rec, a = execute(
                    fn,
                    child,
                    db=db,
                    store=store,
                    inputs=items,
                    flush_interval_s=env.flush_interval_s,
                    heartbeat_interval_s=env.heartbeat_interval_s,
                    roots=env.artifact_roots,
                )
                if finished(rec, a):
                    break
        queued.close("not run: the sweep's stop condition was met")
        return conclude(tracker, store, done, arts, selector, db, env)
    except BaseException as exc:
        interrupted = isinstance(exc, KeyboardInterrupt)
        queued.close("not run: the sweep was " + ("interrupted" if interrupted else "stopped"))
        state = RunState.ABORTED if interrupted else RunState.ERROR
        tracker.finish(state, f"sweep failed: {type(exc).__name__}: {exc}"[:2000])
        raise


def new_children(parent: RunRecord, combos: list[dict[str, Any]]) -> list[RunRecord]:
    """Iterations 1..N of the sweep ``parent``, one per parameter combination, as created."""
    return [
        parent.model_copy(
            deep=True,
            update={
                "iteration": i,
                "params": {**parent.params, **combo},
                "state": RunState.CREATED,
                "created_at": time.time(),
            },
        )
        for i, combo in enumerate(combos, start=1)
    ]


def _metric(rec: RunRecord, selector: str | None) -> str:
    if selector:
        key = selection([rec], selector).key
        return f"{key}={rec.results.get(key)}"
    return " ".join(f"{k}={v}" for k, v in list(rec.results.items())[:3])


def progress_line(
    rec: RunRecord, done: list[RunRecord], total: int, selector: str | None, elapsed_s: float
) -> str:
    """The line a sweep prints when iteration ``rec`` (already in ``done``) has ended."""
    best = select_best(done, selector)
    return (
        f"[{len(done)}/{total}] iteration {rec.iteration} {rec.state.value}"
        + (f" {_metric(rec, selector)}" if rec.state is RunState.COMPLETED else f": {rec.error}")
        + (f"  best: iteration {best.iteration}" if best else "")
        + f"  ({elapsed_s:.1f}s)"
    )


class QueuedIterations:
    """Iterations not started yet, in the run DB as ``created`` from the start of the sweep.

    They carry the sweep's pid, and their heartbeat is refreshed here until an iteration is
    taken to run, so that stale-run marking (dead pid or silent heartbeat) leaves a long queue
    alone yet still catches a sweep that died. Once taken, the iteration's own tracker writes it.
    """

    def __init__(self, db: RunDB, children: list[RunRecord], heartbeat_interval_s: float) -> None:
        self._db = db
        self._interval_s = heartbeat_interval_s
        self._lock = threading.Lock()
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        pid = os.getpid()
        self._waiting = {
            c.iteration: c.model_copy(deep=True, update={"pid": pid, "host": HOST})
            for c in children
        }

    def start(self) -> None:
        with self._lock:
            self._write(strict=True)
        self._thread = threading.Thread(target=self._loop, name="sweep-queue", daemon=True)
        self._thread.start()

    def take(self, child: RunRecord) -> None:
        # Under the lock: a heartbeat write in flight must not land after the worker's first.
        with self._lock:
            self._waiting.pop(child.iteration, None)

    def close(self, reason: str) -> list[RunRecord]:
        """Stop the heartbeat; the iterations that never started end ``aborted``."""
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout=30)
        with self._lock:
            left = [RunDB.aborted(r, reason) for r in self._waiting.values()]
            self._waiting.clear()
        if left:
            try:
                self._db.apply(RunBatch(runs=left))
            except TickrunError as exc:
                logger.warning(
                    "cannot record iterations that did not run; stale-run marking will",
                    extra={"uid": left[0].uid, "error": exc.message},
                )
        return left

    def _write(self, *, strict: bool) -> None:
        if not self._waiting:
            return
        now = time.time()
        for rec in self._waiting.values():
            rec.heartbeat_at = now
            rec.updated_at = now
        batch = RunBatch(runs=[r.model_copy(deep=True) for r in self._waiting.values()])
        try:
            self._db.apply(batch)
        except TickrunError as exc:
            if strict:
                raise RunError(f"cannot record the sweep's iterations: {exc.message}") from exc
            logger.warning("queued iterations' heartbeat failed", extra={"error": exc.message})

    def _loop(self) -> None:
        while not self._stop.wait(self._interval_s):
            with self._lock:
                self._write(strict=False)


def failed_iteration(
    db: RunDB, child: RunRecord, why: str, state: RunState = RunState.ERROR
) -> RunRecord:
    """Record an iteration whose worker gave no result; keeps what it had written so far."""
    try:
        current = db.get_run(child.uid, child.iteration)
    except TickrunError:
        current = child
    if current.state in (RunState.COMPLETED, RunState.ERROR):  # it recorded its own end
        return current
    # "aborted" may be a reader's stale-run mark (dead pid): we know better why it ended.
    now = time.time()
    rec = current.model_copy(
        update={"state": state, "error": why[:2000], "ended_at": now, "updated_at": now}
    )
    try:
        db.apply(RunBatch(runs=[rec]))
    except TickrunError as exc:
        logger.warning(
            "cannot record a failed iteration",
            extra={"uid": rec.uid, "iteration": rec.iteration, "error": exc.message},
        )
    return rec


def _run_pool(
    children: list[RunRecord],
    queued: QueuedIterations,
    ref: str,
    inputs: dict[str, str],
    env: RunEnv,
    db: RunDB,
    parallel: int,
    finished: Callable[[RunRecord, list[ArtifactRecord]], bool],
) -> None:
    pool = IterationPool()
    waiting = collections.deque(children)
    try:
        while waiting or pool.busy:
            while waiting and len(pool.busy) < parallel:
                child = waiting.popleft()
                queued.take(child)
                pool.submit(IterationTask(ref, child, inputs, env))
            for child, outcome in pool.wait():
                if isinstance(outcome, str):
                    logger.error(
                        "iteration failed",
                        extra={"uid": child.uid, "iteration": child.iteration, "error": outcome},
                    )
                    rec = failed_iteration(db, child, outcome)
                    a: list[ArtifactRecord] = []
                else:
                    rec, a = outcome
                if finished(rec, a):
                    waiting.clear()  # the rest stay queued and end "not run"
    except BaseException as exc:
        running = pool.running()
        # On Ctrl-C the workers got SIGINT too: give their runners a moment to record it.
        pool.close(grace_s=2.0 if isinstance(exc, KeyboardInterrupt) else 0.0)
        for child in running:
            failed_iteration(
                db, child, f"the sweep stopped ({type(exc).__name__})", RunState.ABORTED
            )
        raise
    pool.close()
