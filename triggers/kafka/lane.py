"""Sync batches of a fast handler: the ready partitions' records in one thread hop.

With ``numWorkers`` > 1 each partition's task (:mod:`.loop`) hands its records to the handler
thread pool a batch at a time. For a handler that takes microseconds per event, the hops are
most of the cost: each one wakes a pool thread and then the event loop, and on a busy host every
wake-up waits for a CPU; the pool threads cannot run such a handler in parallel anyway (one
GIL), and several of them busy at once keep taking the GIL from the consumer thread, whose
``poll()`` makes round trips to kafka-python's network thread. Measured with
``/proc/<pid>/task/*/status``: the pool path made 3-4x the context switches per event of the
direct path (about one per 30 events).

So while the handler is fast, the partitions' batches go to the pool together, one batch of
batches (:class:`Lane`) at a time: a hop per poll instead of one per partition, and one busy pool
thread. Each partition's events stay in offset order and each partition's task settles its own
part of the outcome, as for a batch of its own; the combined batch stops at the first failure,
and the partitions whose events it did not reach take them back, in order (the same path as a
revoke's), and send them again.

"Fast" is measured, never assumed: each combined batch is timed, and a handler whose batches
took longer than :data:`HOP_S` plus :data:`MAX_EVENT_S` per event twice in a row goes back to a
batch per partition side by side (the plain pool), until a probe :data:`RETRY_S` later finds it
fast. A slow or hung handler holds its own slot only, as on the plain pool: a combined batch
running longer than :data:`HOLD_S` lets the next one start beside it, and a partition waiting
longer than :data:`WITHDRAW_S` for a batch that has not reached its events withdraws them (the
batch stops there; they go in the next one).
"""

from __future__ import annotations

import asyncio
import contextlib
import threading
import time
from collections.abc import Callable, Sequence
from typing import TYPE_CHECKING, Any

from tickrun.functions.interfaces import BatchOutcome

if TYPE_CHECKING:
    from tickrun.functions.interfaces import Dispatcher

# Per event, below this the pool cannot win: a thread hop costs about as much.
MAX_EVENT_S = 50e-6
# What a batch may cost on top of its events: the two thread hops, and the host descheduling
# the thread now and then (a 2-core box at load 10 does for several ms).
HOP_S = 0.02
# A combined batch running this long lets the next one start beside it (another slot).
HOLD_S = 0.05
# A partition waits this long for a batch to reach its events before taking them back.
WITHDRAW_S = 0.5
# How long a handler found slow goes a batch per partition before a probe combines again.
RETRY_S = 5.0
# Events in one combined batch (what a crash may redo is bounded by the commit window anyway).
MAX_COMBINED_EVENTS = 4096

_WAITING, _STARTED, _WITHDRAWN = 0, 1, 2


class _Part:
    """One partition's batch inside a combined one."""

    __slots__ = ("closed", "events", "future", "state")

    def __init__(
        self,
        events: Sequence[Any],
        closed: Callable[[], bool],
        future: asyncio.Future[BatchOutcome],
    ) -> None:
        self.events = events
        self.closed = closed
        self.future = future
        self.state = _WAITING  # changed under Lane._lock (handler thread vs event loop)


class Lane:
    """Combines the partitions' sync batches while the handler is fast (on the event loop)."""

    def __init__(self) -> None:
        self.fast = True  # until measured otherwise
        self.slow_batches = 0  # slow combined batches in a row
        self.retry_at = 0.0
        self.batches = 0  # combined batches run (tests, stats)
        self._waiting: list[_Part] = []
        self._wake: asyncio.Event | None = None
        self._runner: asyncio.Task[None] | None = None
        self._running: asyncio.Task[None] | None = None  # the latest combined batch
        self._lock = threading.Lock()

    def combines(self) -> bool:
        """Should the next batch be combined (handler fast, or a probe is due)?"""

        return self.fast or time.monotonic() >= self.retry_at

    async def dispatch(
        self, dispatcher: Dispatcher, events: Sequence[Any], closed: Callable[[], bool]
    ) -> BatchOutcome:
        """Run ``events`` (one partition's, in order) in the next combined batch; what
        ``dispatcher.dispatch_batch`` would answer for them alone."""
        loop = asyncio.get_running_loop()
        part = _Part(events, closed, loop.create_future())
        self._waiting.append(part)
        if self._wake is None:
            self._wake = asyncio.Event()
        self._wake.set()
        if self._runner is None or self._runner.done():
            self._runner = loop.create_task(self._run(dispatcher), name="kafka-lane")
        try:
            done, _ = await asyncio.wait((part.future,), timeout=WITHDRAW_S)
            if not done and self._withdraw(part):
                return BatchOutcome([])  # not reached: the caller takes them back
            return await part.future
        except asyncio.CancelledError:
            # Revoke/stop gave up on this partition: its events must not start any more.
            self._withdraw(part)
            raise

    def _withdraw(self, part: _Part) -> bool:
        with self._lock:
            if part.state != _WAITING:
                return False
            part.state = _WITHDRAWN
        with contextlib.suppress(ValueError):
            self._waiting.remove(part)
        return True

    async def _run(self, dispatcher: Dispatcher) -> None:
        """Until nothing waits: one combined batch at a time (more only past HOLD_S)."""
        wake = self._wake
        assert wake is not None
        loop = asyncio.get_running_loop()
        while True:
            running = self._running
            if running is not None and not running.done():
                # One at a time, unless it runs long: then it holds its slot only.
                await asyncio.wait((running,), timeout=HOLD_S)
            if not self._waiting:
                wake.clear()
                try:
                    async with asyncio.timeout(1.0):
                        await wake.wait()
                except TimeoutError:
                    return  # idle: the next dispatch starts a new runner
                continue
            parts: list[_Part] = []
            total = 0
            while self._waiting and (not parts or total < MAX_COMBINED_EVENTS):
                part = self._waiting.pop(0)
                parts.append(part)
                total += len(part.events)
            self.batches += 1
            self._running = loop.create_task(self._batch(dispatcher, parts))

    async def _batch(self, dispatcher: Dispatcher, parts: list[_Part]) -> None:
        events: list[Any] = []
        starts: list[int] = []  # where each part's events begin
        for part in parts:
            starts.append(len(events))
            events.extend(part.events)
        lock = self._lock
        clock = time.perf_counter
        # Called on the handler thread before each event, in order (run_batch).
        index = 0
        at = -1  # the part whose events are running
        next_start = 0
        started = 0.0
        overrun = False

        def should_stop() -> bool:
            nonlocal index, at, next_start, overrun, started
            i = index
            index += 1
            if not i:
                started = clock()  # the hop there is not the handler's time
            elif not i & 7 and clock() - started > HOP_S + i * MAX_EVENT_S:
                # Every 8th event: a clock read costs a no-op handler's event 2%.
                # Slower than a fast handler: the rest goes back to its partitions (and, once
                # confirmed, to a batch per partition side by side), not one after another.
                overrun = True
                return True
            while i == next_start:
                at += 1
                part = parts[at]
                with lock:
                    if part.state == _WITHDRAWN:
                        return True  # its partition took them back: stop here
                    part.state = _STARTED
                next_start = starts[at + 1] if at + 1 < len(parts) else -1
                if not part.events:
                    continue
            return parts[at].closed()

        try:
            outcome = await dispatcher.dispatch_batch(events, should_stop)
        except asyncio.CancelledError:
            for part in parts:
                part.future.cancel()
            raise
        except Exception as exc:  # WorkerUnavailableError: nothing ran, each part retries
            for part in parts:
                if not part.future.done() and part.state != _WITHDRAWN:
                    part.future.set_exception(exc)
            return
        self._observe(overrun)
        results = outcome.results
        reached = len(results)
        for part, start in zip(parts, starts, strict=True):
            end = start + len(part.events)
            if start <= reached < end:
                mine = BatchOutcome(results[start:reached], outcome.error)
            elif reached >= end:
                mine = BatchOutcome(results[start:end])
            else:
                mine = BatchOutcome([])  # not reached: the partition takes them back
            if not part.future.done() and part.state != _WITHDRAWN:
                part.future.set_result(mine)

    def _observe(self, overrun: bool) -> None:
        if not overrun:
            self.fast = True
            self.slow_batches = 0
            return
        self.slow_batches += 1
        # One slow batch may be the host descheduling the thread; two in a row (or a probe
        # of a handler already found slow) split the batches again.
        if not self.fast or self.slow_batches >= 2:
            self.fast = False
            self.retry_at = time.monotonic() + RETRY_S
