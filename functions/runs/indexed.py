"""A tracked run whose work is done by processes that share nothing but the run DB: one process
per index, as a Kubernetes indexed Job's pods are (``JOB_COMPLETION_INDEX``).

The launcher's side, :class:`IndexedRun`, records everything before any index starts: a plain
run as ``created``; a sweep's parent as ``running`` (with its heartbeat) and every iteration as
``created`` (:class:`~.sweepframe.QueuedIterations` keeps them alive while they wait for a
node). It then watches the run DB: it prints each iteration's end as a local sweep does, stops
the queue when the stop condition is met, and concludes the sweep with
:func:`~.sweepresult.conclude` (the best iteration by the selector, the iterations' table and
plot), as ``run_sweep`` does.

The worker's side, :func:`main`, runs one recorded index: index ``i`` is iteration ``i + 1`` of
a sweep, or the plain run itself. An index whose record has already ended (the stop condition
was met, the sweep was interrupted) exits at once without running. Exit status: 0 the run
completed or had already ended, 1 the handler failed (recorded as ``error``: running it again
would fail again), 2 a request no index can run (bad JSON, a target that cannot be loaded),
3 the run DB or its record cannot be reached (worth another attempt).
"""

from __future__ import annotations

import logging
import os
import sys
import time
from collections.abc import Sequence
from typing import TextIO

from pydantic import ValidationError

from ..artifacts import ArtifactStore, open_store
from ..errors import BadRequestError, TickrunError
from .db import RunDB, open_db
from .execution import RunEnv, execute, make_inputs
from .hyper import expand, parse_condition
from .plugins import JobRequest, configure_job_logging, parse_job_request
from .records import ArtifactRecord, RunBatch, RunRecord, RunState
from .runner import new_record, resolve_handler
from .settings import TrackingSettings
from .sweepframe import QueuedIterations, new_children, progress_line
from .sweepresult import conclude, parse_selector
from .tracker import RunTracker

logger = logging.getLogger(__name__)

# Set by the Job controller in every pod of an indexed Job.
INDEX_ENV = "JOB_COMPLETION_INDEX"
EXIT_FAILED = 1  # the handler failed; its error is recorded
EXIT_BAD_REQUEST = 2  # no index of this request can run
EXIT_UNTRACKED = 3  # the run DB could not be reached: another attempt may do better


def iteration_of(request: JobRequest, index: int) -> int:
    """The run record index ``index`` runs: iteration ``index + 1`` of a sweep, 0 for a run."""
    if index < 0:
        raise BadRequestError(f"index {index} is negative")
    return index + 1 if request.hyperparams else 0


class IndexedRun:
    """The launcher's side: record the run and its iterations, watch them end, conclude.

    ``request.target`` is the target as the workers load it (inside their image); it is not
    imported here, where the handler's own dependencies may be missing. Constructor does no I/O.
    """

    def __init__(
        self,
        request: JobRequest,
        settings: TrackingSettings,
        *,
        db: RunDB | None = None,
        out: TextIO | None = None,
    ) -> None:
        self.request = request
        self.settings = settings
        self._db = db
        self.out = out if out is not None else sys.stderr
        self.store: ArtifactStore = open_store(
            request.artifact_path or settings.artifact_path, settings.s3
        )
        self._stop = parse_condition(request.stop_condition) if request.stop_condition else None
        if request.selector:
            parse_selector(request.selector)
        if request.hyperparams and request.hyper_strategy == "optuna":
            # Its trials are asked one batch at a time and pruned mid-run by the study, which
            # lives in the sweep's process; an indexed Job's pods have no channel back to it.
            raise BadRequestError(
                "strategy optuna cannot run as a Kubernetes indexed Job (its pods cannot reach "
                "the study to be asked parameters or pruned): use --runner local or "
                "subprocess, or a grid/list/random strategy"
            )
        self.sweep = bool(request.hyperparams)
        self.records: list[RunRecord] = []  # what the indexes run, by index
        self.ended: dict[int, RunRecord] = {}  # by iteration, in the order they ended
        self.not_run: set[int] = set()
        self.parent: RunRecord | None = None
        self._tracker: RunTracker | None = None
        self._queued: QueuedIterations | None = None
        self._t0 = 0.0
        self.stopped_early = False

    @property
    def db(self) -> RunDB:
        if self._db is None:
            self._db = open_db(self.settings)
        return self._db

    @property
    def completions(self) -> int:
        return len(self.records)

    def plan(self) -> int:
        """Build the records (no I/O); the number of indexes. Bad sweep options raise 400."""
        r = self.request
        record = new_record(
            r.target, r.target, self.store, r.params, r.inputs, r.project, r.name, r.labels, r.uid
        )
        if not self.sweep:
            self.records = [record]
            return 1
        combos = expand(dict(r.hyperparams), r.hyper_strategy, r.max_iterations, r.seed)
        record.labels.setdefault("hyper.strategy", r.hyper_strategy)
        self.parent = record
        self.records = new_children(record, combos)
        return len(self.records)

    def start(self) -> None:
        """Write the records; from here on :meth:`conclude` or :meth:`abort` must end them."""
        if not self.records:
            self.plan()
        s = self.settings
        self._t0 = time.monotonic()
        if self.parent is not None:
            self._tracker = RunTracker(
                self.db,
                self.parent,
                flush_interval_s=s.flush_interval_s,
                heartbeat_interval_s=s.heartbeat_interval_s,
            )
            self._tracker.start()
        self._queued = QueuedIterations(self.db, self.records, s.heartbeat_interval_s)
        self._queued.start()

    # -- watching ------------------------------------------------------------------------------

    def poll(self) -> bool:
        """Read the records once, report the iterations that ended; True when all have."""
        assert self._queued is not None, "start() first"
        seen = {
            r.iteration: r for r in self.db.list_runs(None, uid=self.request.uid, limit=100_000)
        }
        for rec in self.records:
            now = seen.get(rec.iteration)
            if now is None or now.state is RunState.CREATED or rec.iteration in self.ended:
                continue
            self._queued.take(now)  # its own process writes it from now on
            if now.state.terminal:
                self._ended(now)
        return self.left() == []

    def left(self) -> list[int]:
        """The iterations that have not recorded their end."""
        return [
            r.iteration
            for r in self.records
            if r.iteration not in self.ended and r.iteration not in self.not_run
        ]

    def counts(self) -> tuple[int, int, int]:
        """(completed, failed or aborted, total) of the iterations that ran."""
        ran = [r for i, r in self.ended.items() if i not in self.not_run]
        ok = sum(r.state is RunState.COMPLETED for r in ran)
        return ok, len(ran) - ok, len(self.records)

    def _ended(self, rec: RunRecord) -> None:
        self.ended[rec.iteration] = rec
        if not self.sweep:
            return
        ran = [r for i, r in self.ended.items() if i not in self.not_run]
        elapsed_s = time.monotonic() - self._t0
        line = progress_line(rec, ran, len(self.records), self.request.selector, elapsed_s)
        print(line, file=self.out, flush=True)
        if self._stop and rec.state is RunState.COMPLETED and self._stop(rec.results):
            self.stop_queue("not run: the sweep's stop condition was met")
            self.stopped_early = True

    def stop_queue(self, reason: str) -> list[int]:
        """End the iterations no worker has started (their workers will exit at once)."""
        assert self._queued is not None
        left = self._queued.close(reason)
        self.not_run |= {r.iteration for r in left}
        return sorted(r.iteration for r in left)

    # -- the end -------------------------------------------------------------------------------

    def conclude(self) -> RunState:
        """Once every index ended: the final state (a sweep's parent is concluded here)."""
        assert self._queued is not None
        self._queued.close("not run: the sweep ended")
        if not self.sweep:
            return self.db.get_run(self.request.uid).state
        assert self._tracker is not None
        s, store = self.settings, self.store
        done = [r for i, r in self.ended.items() if i not in self.not_run]
        arts: dict[int, list[ArtifactRecord]] = {
            r.iteration: self.db.list_artifacts(
                self.request.project, uid=self.request.uid, iteration=r.iteration
            )
            for r in done
        }
        env = RunEnv(
            db=self.db.locator(),
            artifact_path=store.url,
            s3=getattr(store, "settings", s.s3),
            artifact_roots=s.artifact_roots(store.url),
        )
        final = conclude(self._tracker, store, done, arts, self.request.selector, self.db, env)
        return RunState(final.state)

    def abort(self, reason: str) -> None:
        """End whatever has not ended as aborted (interrupted, or the workers are gone)."""
        if self._queued is not None:
            self.stop_queue(reason)
        now = time.time()
        rows: list[RunRecord] = []
        for iteration in self.left():
            try:
                current = self.db.get_run(self.request.uid, iteration)
            except TickrunError:
                continue
            if not current.state.terminal:
                rows.append(RunDB.aborted(current, reason, now))
        if rows:
            try:
                self.db.apply(RunBatch(runs=rows))
            except TickrunError as exc:
                logger.warning(
                    "cannot record aborted iterations; stale-run marking will",
                    extra={"uid": self.request.uid, "error": exc.message},
                )
        if self._tracker is not None:
            self._tracker.finish(RunState.ABORTED, reason[:2000])


# -- the worker's side ---------------------------------------------------------------------------


def run_index(request: JobRequest, index: int, settings: TrackingSettings | None = None) -> int:
    """Run the record of ``index`` in this process; the exit status (module docstring)."""
    s = settings or TrackingSettings.from_env()
    iteration = iteration_of(request, index)
    try:
        db = open_db(s)
        record = db.get_run(request.uid, iteration)
    except TickrunError as exc:
        print(f"tickrun: cannot read run {request.uid}/{iteration}: {exc.message}", file=sys.stderr)
        return EXIT_UNTRACKED
    if record.state.terminal:
        print(
            f"tickrun: run {request.uid} iteration {iteration} already ended "
            f"({record.state.value}): {record.error or 'nothing to do'}",
            file=sys.stderr,
        )
        return 0
    try:
        target = resolve_handler(request.target)
    except TickrunError as exc:
        failed = record.model_copy(
            update={"state": RunState.ERROR, "error": exc.message[:2000], "ended_at": time.time()}
        )
        db.apply(RunBatch(runs=[failed]))
        print(f"error: {exc.message}", file=sys.stderr)
        return EXIT_BAD_REQUEST
    store = open_store(request.artifact_path or s.artifact_path, s.s3)
    roots = s.artifact_roots(store.url)
    final, _ = execute(
        target.fn,
        record,
        db=db,
        store=store,
        inputs=make_inputs(request.inputs, db, s.s3, roots),
        flush_interval_s=s.flush_interval_s,
        heartbeat_interval_s=s.heartbeat_interval_s,
        roots=roots,
    )
    return 0 if final.state is RunState.COMPLETED else EXIT_FAILED


def main(argv: Sequence[str] | None = None) -> int:
    """A worker process: ``argv[0]`` is the JobRequest as JSON, the index is
    ``$JOB_COMPLETION_INDEX`` (0 when unset: a Job of one)."""
    configure_job_logging()
    try:
        request = parse_job_request(argv)
        index = int(os.environ.get(INDEX_ENV) or "0")
    except (ValueError, ValidationError) as exc:
        print(f"tickrun job: bad request: {exc}", file=sys.stderr)
        return EXIT_BAD_REQUEST
    try:
        return run_index(request, index)
    except BadRequestError as exc:
        print(f"error: {exc.message}", file=sys.stderr)
        return EXIT_BAD_REQUEST
    except TickrunError as exc:  # the run DB went away mid-run
        print(f"error: {exc.message}", file=sys.stderr)
        return EXIT_UNTRACKED
    except KeyboardInterrupt:  # SIGTERM from the kubelet: the runner recorded it aborted
        return 130


__all__ = [
    "EXIT_BAD_REQUEST",
    "EXIT_FAILED",
    "EXIT_UNTRACKED",
    "INDEX_ENV",
    "IndexedRun",
    "iteration_of",
    "main",
    "run_index",
]
