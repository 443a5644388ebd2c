"""The worker processes of a parallel sweep: one pipe per worker, one iteration at a time.

A ProcessPoolExecutor breaks as a whole when one worker dies and fails every pending iteration
with it; here the death of a worker is seen as exactly the loss of the iteration it held.
"""

from __future__ import annotations

import contextlib
import logging
import multiprocessing
import multiprocessing.connection
import signal
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from multiprocessing.process import BaseProcess
from typing import Any

from .. import settings
from ..errors import TickrunError
from .execution import RunEnv, execute, make_inputs
from .job_handler import load_callable
from .records import ArtifactRecord, RunRecord
from .runlog import enable_stdio_capture
from .trials import Intermediate, Reporter, reporting


@dataclass(frozen=True)
class IterationTask:
    handler: str
    record: RunRecord
    inputs: dict[str, str]
    env: RunEnv
    # The sweep prunes: the handler's intermediate values go to it over the worker's pipe.
    reports: bool = False


def run_task(task: IterationTask) -> tuple[RunRecord, list[ArtifactRecord]]:
    """Entry point of a worker process: reopen DB and store, run one iteration."""
    if not logging.getLogger().handlers:  # a spawned worker logs like its parent
        from ..logs import configure_logging

        fmt = settings.LOG_FORMAT.get()
        configure_logging(json_logs=None if fmt is None else fmt == "json")
    enable_stdio_capture()  # one iteration at a time here: its prints go into its log
    db = task.env.open_db()
    try:
        return execute(
            load_callable(task.handler),
            task.record,
            db=db,
            store=task.env.open_store(),
            inputs=make_inputs(task.inputs, db, task.env.s3, task.env.artifact_roots),
            flush_interval_s=task.env.flush_interval_s,
            heartbeat_interval_s=task.env.heartbeat_interval_s,
            roots=task.env.artifact_roots,
        )
    finally:
        db.close()


Outcome = tuple[RunRecord, list[ArtifactRecord]] | str  # a result, or why the iteration failed
# The sweep's answer to an intermediate value of a running iteration: True to stop it.
OnReport = Callable[[RunRecord, int, float], bool]


def _pipe_reporter(conn: multiprocessing.connection.Connection) -> Reporter:
    def ask(step: int, value: float) -> bool:
        conn.send(Intermediate(step, value))
        return bool(conn.recv())  # the sweep answers before it reads anything else from us

    return ask


def _worker_main(conn: multiprocessing.connection.Connection) -> None:
    """A pool worker: runs the iterations it is sent, one at a time, until sent None."""
    try:
        while True:
            try:
                task = conn.recv()
            except EOFError:  # the sweep is gone
                return
            if task is None:
                return
            try:
                with reporting(_pipe_reporter(conn) if task.reports else None):
                    reply: Outcome = run_task(task)
            except Exception as exc:  # the iteration could not even be set up or recorded
                reply = exc.message if isinstance(exc, TickrunError) else type(exc).__name__
                reply = f"iteration failed to run: {reply}"
            conn.send(reply)
    except KeyboardInterrupt:  # Ctrl-C reaches the whole process group; the sweep cleans up
        return


def _death(exitcode: int | None) -> str:
    if exitcode is not None and exitcode < 0:
        try:
            name = signal.Signals(-exitcode).name
        except ValueError:
            name = f"signal {-exitcode}"
        hint = " (out of memory?)" if -exitcode == signal.SIGKILL else ""
        return f"the iteration's worker process was killed by {name}{hint}"
    return f"the iteration's worker process exited with code {exitcode} mid-run"


@dataclass
class _Worker:
    proc: BaseProcess
    conn: multiprocessing.connection.Connection
    child: RunRecord | None = field(default=None)


class IterationPool:
    """Worker processes, each behind its own pipe, so the death of one is seen as exactly the
    loss of the iteration it held (a ProcessPoolExecutor breaks as a whole and fails every
    pending iteration with it)."""

    def __init__(self) -> None:
        # spawn, not fork: the parent holds DB connections and a flusher thread.
        self._ctx = multiprocessing.get_context("spawn")
        self.idle: list[_Worker] = []
        self.busy: list[_Worker] = []

    def _spawn(self) -> _Worker:
        mine, theirs = self._ctx.Pipe()
        proc = self._ctx.Process(target=_worker_main, args=(theirs,), name="tickrun-iteration")
        proc.start()
        theirs.close()
        return _Worker(proc, mine)

    def submit(self, task: IterationTask) -> None:
        while self.idle:
            worker = self.idle.pop()
            try:
                worker.conn.send(task)
            except OSError:  # it died while idle: never mind, use another
                self._discard(worker)
                continue
            break
        else:
            worker = self._spawn()
            worker.conn.send(task)
        worker.child = task.record
        self.busy.append(worker)

    def wait(self, on_report: OnReport | None = None) -> list[tuple[RunRecord, Outcome]]:
        """Block until a busy worker replies or dies; (iteration, outcome) of each that did.

        An intermediate value a worker sends mid-iteration is answered here with
        ``on_report(iteration, step, value)`` (False without one); the list may then be empty."""
        handles: list[Any] = [w.conn for w in self.busy] + [w.proc.sentinel for w in self.busy]
        multiprocessing.connection.wait(handles)
        out: list[tuple[RunRecord, Outcome]] = []
        for worker in list(self.busy):
            child = worker.child
            if child is None:  # cannot happen: busy workers hold an iteration
                continue
            reply: Outcome | Intermediate | None = None
            try:
                if worker.conn.poll():
                    reply = worker.conn.recv()
                if isinstance(reply, Intermediate):
                    stop = on_report(child, reply.step, reply.value) if on_report else False
                    worker.conn.send(bool(stop))
                    continue  # still running
            except (EOFError, OSError):
                reply = None
            if reply is not None:
                self.busy.remove(worker)
                worker.child = None
                self.idle.append(worker)
                out.append((child, reply))
            elif not worker.proc.is_alive():
                self.busy.remove(worker)
                worker.proc.join(timeout=5)
                out.append((child, _death(worker.proc.exitcode)))
                self._discard(worker)
        return out

    def running(self) -> list[RunRecord]:
        return [w.child for w in self.busy if w.child is not None]

    def close(self, *, grace_s: float = 5.0) -> None:
        for worker in self.idle:
            with contextlib.suppress(OSError):
                worker.conn.send(None)
        for worker in self.busy:  # only when the sweep itself failed: stop them
            if worker.proc.is_alive():
                worker.proc.terminate()
        deadline = time.monotonic() + grace_s
        for worker in [*self.idle, *self.busy]:
            worker.proc.join(timeout=max(0.0, deadline - time.monotonic()))
            self._discard(worker)
        self.idle.clear()
        self.busy.clear()

    @staticmethod
    def _discard(worker: _Worker) -> None:
        if worker.proc.is_alive():
            worker.proc.kill()
            worker.proc.join(timeout=5)
        worker.conn.close()
