"""What every sweep strategy in this process shares (grid/list/random: :mod:`.hyper`; Optuna:
:mod:`.optunasweep`): the parent's tracker, iterations 1..N recorded as ``created`` from the start
(:class:`QueuedIterations`), the line each ended iteration prints, the stop condition, an
iteration run here or in the worker pool, and the parent ended ``aborted``/``error`` when the
sweep fails. A strategy only chooses each iteration's parameters and the order they run in.
"""

from __future__ import annotations

import contextlib
import logging
import os
import sys
import threading
import time
from collections.abc import Callable, Iterator
from typing import Any

from ..artifacts import ArtifactStore
from ..errors import RunError, TickrunError
from .db.base import HOST, RunDB
from .execution import RunEnv, execute, make_inputs
from .job_handler import load_callable
from .pool import IterationPool, Outcome
from .records import ArtifactRecord, RunBatch, RunRecord, RunState
from .runobject import RunObject
from .sweepresult import conclude, select_best, selection
from .tracker import RunTracker

logger = logging.getLogger(__name__)


def loadable(ref: str) -> bool:
    """Whether a worker process can load the handler ``ref`` by itself."""
    try:
        load_callable(ref)
    except TickrunError:
        return False
    return True


def pool_usable(parallel: int, env: RunEnv, ref: str) -> bool:
    """Whether ``parallel`` iterations run in worker processes: each needs the run DB and the
    handler by itself, otherwise they run one at a time here (:class:`SweepFrame` says so)."""
    return parallel > 1 and env.db is not None and loadable(ref)


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


class SweepFrame:
    """One sweep's parent and iterations while they run; see the module docstring.

    Starting it starts the parent's tracker and records the ``children`` as queued; run the
    iterations inside :meth:`guard`, hand each ended one to :meth:`finished`, then
    :meth:`conclude`.
    """

    def __init__(
        self,
        parent: RunRecord,
        children: list[RunRecord],
        inputs: dict[str, Any],
        *,
        db: RunDB,
        store: ArtifactStore,
        env: RunEnv,
        ref: str,
        selector: str | None,
        stop: Callable[[dict[str, Any]], bool] | None,
        parallel: int,
        use_pool: bool,
        progress: bool = True,
        unit: str = "iterations",
        log_each: bool = True,
    ) -> None:
        self.db, self.store, self.env = db, store, env
        self.children = children
        self.inputs = inputs
        self._selector, self._stop, self._progress = selector, stop, progress
        self._log_each = log_each
        self.tracker = RunTracker(
            db,
            parent,
            flush_interval_s=env.flush_interval_s,
            heartbeat_interval_s=env.heartbeat_interval_s,
        )
        self.tracker.start()
        self.queued = QueuedIterations(db, children, env.heartbeat_interval_s)
        self.queued.start()
        if parallel > 1 and not use_pool:
            logger.warning(
                f"running {unit} one at a time: the handler or the run DB cannot be opened in "
                "a worker process",
                extra={"handler": ref},
            )
        self.done: list[RunRecord] = []
        self.arts: dict[int, list[ArtifactRecord]] = {}
        self._t0 = time.monotonic()

    def worker_inputs(self) -> dict[str, str]:
        """The inputs as a worker process receives them: urls/paths."""
        return {k: getattr(v, "url", str(v)) for k, v in self.inputs.items()}

    def execute(
        self, fn: Callable[..., Any], child: RunRecord, items: dict[str, Any]
    ) -> tuple[RunRecord, list[ArtifactRecord]]:
        """Run iteration ``child`` in this process; ``items``: :meth:`local_inputs`."""
        self.queued.take(child)
        return execute(
            fn,
            child,
            db=self.db,
            store=self.store,
            inputs=items,
            flush_interval_s=self.env.flush_interval_s,
            heartbeat_interval_s=self.env.heartbeat_interval_s,
            roots=self.env.artifact_roots,
        )

    def local_inputs(self) -> dict[str, Any]:
        """The inputs as the handler receives them in this process."""
        return make_inputs(self.inputs, self.db, self.env.s3, self.env.artifact_roots)

    def ended(self, child: RunRecord, outcome: Outcome) -> tuple[RunRecord, list[ArtifactRecord]]:
        """The record and artifacts of a pool iteration; a failure message is recorded."""
        if not isinstance(outcome, str):
            return outcome
        logger.error(
            "iteration failed",
            extra={"uid": child.uid, "iteration": child.iteration, "error": outcome},
        )
        return failed_iteration(self.db, child, outcome), []

    def finished(self, rec: RunRecord, a: list[ArtifactRecord]) -> bool:
        """Iteration ``rec`` ended: record it, print its line; True when the sweep stops."""
        self.done.append(rec)
        self.arts[rec.iteration] = a
        if self._log_each:
            logger.info(
                "iteration finished",
                extra={"uid": rec.uid, "iteration": rec.iteration, "state": rec.state.value},
            )
        if self._progress:
            elapsed_s = time.monotonic() - self._t0
            line = progress_line(rec, self.done, len(self.children), self._selector, elapsed_s)
            print(line, file=sys.stderr, flush=True)
        stop = self._stop
        return bool(stop and rec.state is RunState.COMPLETED and stop(rec.results))

    @contextlib.contextmanager
    def pool(self) -> Iterator[IterationPool]:
        """A worker pool; when the sweep fails, the iterations it was running end ``aborted``."""
        pool = IterationPool()
        try:
            yield pool
        except BaseException as exc:
            running = pool.running()
            # On Ctrl-C the workers got SIGINT too: give their runners a moment to record it.
            pool.close(grace_s=2.0 if isinstance(exc, KeyboardInterrupt) else 0.0)
            for child in running:
                failed_iteration(
                    self.db, child, f"the sweep stopped ({type(exc).__name__})", RunState.ABORTED
                )
            raise
        pool.close()

    @contextlib.contextmanager
    def guard(self) -> Iterator[None]:
        """When the sweep fails, the queued iterations end ``aborted`` and the parent
        ``aborted`` (interrupted) or ``error``."""
        try:
            yield
        except BaseException as exc:
            interrupted = isinstance(exc, KeyboardInterrupt)
            self.queued.close(
                "not run: the sweep was " + ("interrupted" if interrupted else "stopped")
            )
            state = RunState.ABORTED if interrupted else RunState.ERROR
            self.tracker.finish(state, f"sweep failed: {type(exc).__name__}: {exc}"[:2000])
            raise

    def conclude(
        self, own: Callable[[RunTracker], list[ArtifactRecord]] | None = None
    ) -> RunObject:
        """End the parent (:func:`~.sweepresult.conclude`); ``own`` logs the strategy's own
        results and artifacts on it once the iterations left queued are closed."""
        self.queued.close("not run: the sweep's stop condition was met")
        extra = own(self.tracker) if own else None
        return conclude(
            self.tracker,
            self.store,
            self.done,
            self.arts,
            self._selector,
            self.db,
            self.env,
            own=extra,
        )
