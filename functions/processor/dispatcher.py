"""Running the handler for one trigger: slots, timeouts, errors and metrics.

``slots`` (the trigger's ``maxWorkers``) bounds concurrent events per worker process. Async
handlers run on the event loop. Sync handlers run in a thread pool of that size, or, given an
:class:`~.inline.InlineGuard` (the HTTP trigger's), inline on the loop's thread:

- with one slot (Nuclio's default: one event at a time per worker) always;
- with many slots while the handler proves quick: a call longer than :data:`SLOW_ALONE_S`, or
  two longer than :data:`QUICK_S` close together, send the following ones to the pool (they held
  up every other request), and the dispatcher comes back to inline calls only after
  ``_probe_after`` consecutive quick calls in the pool (doubling each time it had to leave, so a
  handler that is often slow stays in the pool).
"""

from __future__ import annotations

import asyncio
import collections
import contextlib
import logging
import time
from collections.abc import Callable, Sequence
from concurrent.futures import Executor
from typing import Any

import nuclio_sdk

from ..errors import EventTimeoutError, HandlerFailure, WorkerUnavailableError
from ..handler import LoadedHandler
from ..interfaces import BatchOutcome
from ..results import Result, exception_result, to_result
from . import metrics
from .batch import BatchState, run_batch
from .deadlines import Deadlines
from .inline import InlineGuard, InlineTimeout

logger = logging.getLogger(__name__)

QUICK_S = 0.0005
"""With many slots, a sync call this long or shorter may run inline (a thread hop costs tens
of microseconds; a longer call inline would hold up requests the pool could overlap)."""
SLOW_ALONE_S = 0.02
"""One inline call this long leaves the inline path at once; a shorter slow one only if another
was slow within :data:`SLOW_PAIR_CALLS` calls (one alone may be the OS preempting the worker
on a busy machine, not the handler)."""
SLOW_PAIR_CALLS = 8
PROBE_BASE = 64
PROBE_MAX = 4096
STEADY_CALLS = 10_000  # quick inline calls after which leaving the inline path starts over


def _resolve(fut: asyncio.Future[None]) -> None:
    if not fut.done():
        fut.set_result(None)


class _Expired(Exception):
    """The event timeout fired (as opposed to the handler raising TimeoutError itself)."""


class _Overdue(_Expired):
    """The event timeout fired on a pool thread that goes on running: its slot stays taken."""


class TriggerDispatcher:
    """The :class:`~tickrun.functions.interfaces.Dispatcher` of one trigger in one worker."""

    def __init__(
        self,
        *,
        handler: LoadedHandler,
        context: Any,
        function_name: str,
        trigger_name: str,
        trigger_kind: str,
        slots: int,
        availability_timeout_s: float,
        event_timeout_s: float | None,
        executor: Executor | None,
        on_stuck: Callable[[], None] | None = None,
        inline: InlineGuard | None = None,
    ) -> None:
        self.trigger_name = trigger_name
        self.trigger_kind = trigger_kind
        self._handler = handler
        self._fn = handler.fn
        self._context = context
        self._slots = slots
        self._availability_timeout_s = availability_timeout_s
        self._event_timeout_s = event_timeout_s or None
        # An async handler's event timeout: one loop timer for all its calls (deadlines.py).
        self._deadlines = (
            None if self._event_timeout_s is None else Deadlines(self._event_timeout_s)
        )
        self._executor = executor
        self._on_stuck = on_stuck
        self._free = slots
        self._waiters: collections.deque[asyncio.Future[None]] = collections.deque()
        self._in_flight = 0
        self._overdue = 0
        self._here: BatchState | None = None  # the batch run_here is running
        self._stats = metrics.STATS.trigger(function_name, trigger_name, trigger_kind)
        self._outcomes = self._stats.outcomes
        self._is_async = handler.is_async
        self._inline = None if handler.is_async else inline
        self._inline_on = self._inline is not None
        self._adaptive = slots > 1  # many slots: inline only while the handler proves quick
        self._probe_after = 0  # quick pool calls to come back after (0: never left yet)
        self._pool_quick = 0  # consecutive quick pool calls (adaptive mode, in the pool)
        self._inline_calls = 0  # quick inline calls since the last switch
        self._last_slow = -SLOW_PAIR_CALLS  # _inline_calls at the last slow inline call

    @property
    def in_flight(self) -> int:
        return self._in_flight

    async def _acquire(self) -> None:
        # A counter with a FIFO of waiters: asyncio.Semaphore costs more on the no-wait path.
        if self._free > 0 and not self._waiters:
            self._free -= 1
            return
        waiter: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        self._waiters.append(waiter)
        try:
            async with asyncio.timeout(self._availability_timeout_s):
                await waiter
        except TimeoutError:
            with contextlib.suppress(ValueError):
                self._waiters.remove(waiter)
            if waiter.done() and not waiter.cancelled():
                self._release_slot()  # the slot arrived as the timeout fired: pass it on
            self._outcomes["unavailable"] += 1
            raise WorkerUnavailableError(
                f"no worker free within {self._availability_timeout_s * 1000:.0f} ms "
                f"({self._slots} busy)"
            ) from None
        except BaseException:
            if waiter.done() and not waiter.cancelled():
                self._release_slot()  # cancelled right after being handed a slot
            raise

    def _release_slot(self) -> None:
        while self._waiters:
            waiter = self._waiters.popleft()
            if not waiter.done():
                waiter.set_result(None)
                return
        self._free += 1

    def _busy(self, delta: int) -> None:
        self._in_flight += delta
        self._stats.in_flight += delta

    def _release(self, _: object = None) -> None:
        self._busy(-1)
        self._release_slot()

    async def _await_async_handler(self, event: Any) -> Any:
        """An async handler's answer; :class:`_Expired` when the event timeout fired (as
        opposed to the handler raising TimeoutError itself)."""
        deadlines = self._deadlines
        if deadlines is None:
            return await self._fn(self._context, event)
        call = deadlines.enter()
        try:
            return await self._fn(self._context, event)
        except asyncio.CancelledError:
            if deadlines.expired(call):
                raise _Expired from None
            raise
        finally:
            deadlines.leave(call)

    def _release_overdue(self, _: object = None) -> None:
        self._overdue -= 1
        self._release()

    async def dispatch(self, event: Any) -> Result:
        if self._free > 0 and not self._waiters:
            if self._inline_on:
                return self._dispatch_inline(event)
            self._free -= 1  # _acquire's no-wait path, without its coroutine
        else:
            await self._acquire()
        # _busy(1) and _release() spelled out: two method calls are a measurable share of a
        # no-op async handler's event.
        stats = self._stats
        self._in_flight += 1
        stats.in_flight += 1
        started = time.perf_counter()
        release_now = True
        try:
            if self._is_async:
                if self._deadlines is None:
                    out = await self._fn(self._context, event)
                else:
                    out = await self._await_async_handler(event)
            else:
                out = await self._await_pool(event)
            result = to_result(out)
            if not 100 <= result.status <= 599:
                raise ValueError(f"handler returned an invalid status code {result.status}")
        except nuclio_sdk.ExceptionWithResponse as exc:
            result = exception_result(exc)
        except _Expired as exc:
            release_now = not isinstance(exc, _Overdue)
            raise self._expired(event) from None
        except Exception as exc:
            raise self._failed(event, exc) from exc
        finally:
            stats.observe(time.perf_counter() - started)
            if release_now:
                self._in_flight -= 1
                stats.in_flight -= 1
                if self._waiters:
                    self._release_slot()
                else:
                    self._free += 1
        self._outcomes["ok"] += 1
        return result

    async def _await_pool(self, event: Any) -> Any:
        """A sync handler's answer from the pool; :class:`_Overdue` past the event timeout."""
        loop = asyncio.get_running_loop()
        timed = self._inline is not None and self._adaptive  # learning whether it is quick
        if timed:
            fut = loop.run_in_executor(self._executor, self._timed_call, event)
        else:
            fut = loop.run_in_executor(self._executor, self._fn, self._context, event)
        if self._event_timeout_s is None:
            out = await fut
        else:
            deadline = asyncio.timeout(self._event_timeout_s)
            try:
                async with deadline:
                    out = await asyncio.shield(fut)
            except TimeoutError:
                if not deadline.expired():
                    raise
                # A thread cannot be killed: its slot stays taken until it returns.
                self._overdue += 1
                fut.add_done_callback(self._release_overdue)
                if self._overdue >= self._slots and self._on_stuck is not None:
                    self._on_stuck()
                raise _Overdue from None
        if timed:
            out, elapsed = out
            if elapsed > QUICK_S:
                self._pool_quick = 0
            else:
                self._pool_quick += 1
                if self._pool_quick >= self._probe_after:
                    self._inline_on = True
                    self._inline_calls = 0
                    self._last_slow = -SLOW_PAIR_CALLS
        return out

    def _timed_call(self, event: Any) -> tuple[Any, float]:
        """On a pool thread: the handler's answer and its own duration."""
        started = time.perf_counter()
        out = self._fn(self._context, event)
        return out, time.perf_counter() - started

    def _dispatch_inline(self, event: Any) -> Result:
        """The handler on this (the loop's) thread, under the guard's watch; see the module
        docstring for when."""
        guard = self._inline
        if guard is None:  # pragma: no cover - _inline_on implies a guard
            raise RuntimeError("no inline guard")
        # _busy(1) and _busy(-1) spelled out, as in dispatch: a no-op handler's event is a few
        # microseconds of Python, two method calls a measurable share of it.
        stats = self._stats
        self._free -= 1
        self._in_flight += 1
        stats.in_flight += 1
        started = time.perf_counter()
        elapsed = 0.0
        try:
            try:
                out = guard.call(self._fn, self._context, event, started)
            except InlineTimeout:
                raise _Expired from None
            elapsed = time.perf_counter() - started
            timeout = self._event_timeout_s
            if timeout is not None and elapsed > timeout:
                raise _Expired  # it returned before the watch thread got to it: still late
            result = to_result(out)
            if not 100 <= result.status <= 599:
                raise ValueError(f"handler returned an invalid status code {result.status}")
        except nuclio_sdk.ExceptionWithResponse as exc:
            result = exception_result(exc)
        except _Expired:
            raise self._expired(event) from None
        except Exception as exc:
            raise self._failed(event, exc) from exc
        finally:
            if not elapsed:
                elapsed = time.perf_counter() - started
            stats.observe(elapsed)
            self._in_flight -= 1
            stats.in_flight -= 1
            self._free += 1
            if self._adaptive:
                self._after_inline(elapsed)
        self._outcomes["ok"] += 1
        return result

    def _after_inline(self, elapsed: float) -> None:
        if elapsed <= QUICK_S:
            self._inline_calls += 1
            return
        calls = self._inline_calls
        if elapsed < SLOW_ALONE_S and calls - self._last_slow >= SLOW_PAIR_CALLS:
            self._last_slow = calls
            return
        # This call held up every other request: the pool takes the next ones.
        steady = self._inline_calls >= STEADY_CALLS
        first = steady or not self._probe_after
        self._probe_after = PROBE_BASE if first else min(self._probe_after * 2, PROBE_MAX)
        self._inline_on = False
        self._pool_quick = 0
        self._last_slow = -SLOW_PAIR_CALLS
        logger.info(
            "sync handler slower than inline calls allow; using the thread pool",
            extra={
                "trigger": self.trigger_name,
                "elapsed_ms": round(elapsed * 1000, 3),
                "back_after_quick_calls": self._probe_after,
            },
        )

    def _expired(self, event: Any) -> EventTimeoutError:
        self._outcomes["timeout"] += 1
        logger.warning(
            "handler exceeded the event timeout",
            extra={
                "event_id": getattr(event, "id", None),
                "trigger": self.trigger_name,
                "timeout_s": self._event_timeout_s,
            },
        )
        return EventTimeoutError(
            f"handler exceeded the event timeout of {self._event_timeout_s:g}s"
        )

    def _failed(self, event: Any, exc: Exception) -> HandlerFailure:
        self._outcomes["error"] += 1
        event_id = getattr(event, "id", None)
        logger.exception(
            "handler raised",
            extra={
                "event_id": event_id,
                "trigger": self.trigger_name,
                "exc_type": type(exc).__name__,
            },
        )
        return HandlerFailure(exc, event_id)

    @property
    def batches(self) -> bool:
        """:meth:`dispatch_batch` saves a thread hop (sync handlers) or a slot and a task
        switch (async handlers) per event: always worth it for ordered streams."""
        return True

    @property
    def sync(self) -> bool:
        """The handler is a plain function, so :meth:`run_here` may run it."""
        return not self._handler.is_async

    async def dispatch_batch(
        self, events: Sequence[Any], should_stop: Callable[[], bool] | None = None
    ) -> BatchOutcome:
        """Run ``events`` in order in one thread-pool call (sync handlers) or one coroutine
        (async handlers), stopping at the first failure.

        The batch takes one slot. Failures are reported for the event that failed, as
        :meth:`dispatch` would raise them; a 5xx answer ends the batch too (its result is the
        last one returned). Raises :class:`WorkerUnavailableError` before running anything.
        """
        if self._handler.is_async:
            return await self._dispatch_batch_async(events, should_stop)
        await self._acquire()
        self._busy(1)
        state = BatchState(events, self._event_timeout_s, should_stop)
        release_now = True
        try:
            loop = asyncio.get_running_loop()
            fut = loop.run_in_executor(self._executor, run_batch, self._fn, self._context, state)
            expired = await self._await_batch(fut, state)
            if expired:
                release_now = False
                self._hold_overdue(fut, self._release_overdue)
        finally:
            if release_now:
                self._release()
        return self._batch_outcome(events, state, expired)

    async def _dispatch_batch_async(
        self, events: Sequence[Any], should_stop: Callable[[], bool] | None
    ) -> BatchOutcome:
        await self._acquire()
        self._busy(1)
        state = BatchState(events, self._event_timeout_s, should_stop)
        clock = time.perf_counter
        try:
            for event in events:
                if should_stop is not None and should_stop():
                    break
                started = clock()
                try:
                    result = to_result(await self._await_async_handler(event))
                    if not 100 <= result.status <= 599:
                        raise ValueError(f"handler returned an invalid status code {result.status}")
                except nuclio_sdk.ExceptionWithResponse as exc:
                    result = exception_result(exc)
                except _Expired:
                    state.timed_out = True
                except Exception as exc:
                    state.error = exc
                state.latencies_s.append(clock() - started)
                if state.timed_out or state.error is not None:
                    break
                state.results.append(result)
                if result.status >= 500:
                    break
        finally:
            self._release()
        return self._batch_outcome(events, state, expired=False)

    def run_here(
        self, events: Sequence[Any], should_stop: Callable[[], bool] | None = None
    ) -> BatchOutcome | None:
        """:meth:`dispatch_batch` on the calling thread, with no slot and no thread hop.

        For a trigger whose source thread may run the handler itself because nothing else runs
        it meanwhile (one slot, and the trigger's other paths idle): the caller guarantees
        that. An event that hangs cannot be interrupted here either; :meth:`watch_here` on
        the event loop notices it after the event timeout, or the trigger hands the batch to
        the event loop with :meth:`adopt_here` while it runs: then this returns None, and the
        outcome is the adopter's.
        """
        if not self.sync:
            raise TypeError("run_here is for sync handlers")
        state = BatchState(events, self._event_timeout_s, should_stop)
        self._busy(1)
        self._here = state
        try:
            run_batch(self._fn, self._context, state)
        finally:
            if self._here is state:  # not adopted meanwhile
                self._here = None
            self._busy(-1)
            if state.on_done is not None:
                state.on_done()
        if state.on_done is not None:
            return None
        # stop is only set by expire(): the watchdog declared the running event overdue.
        return self._batch_outcome(events, state, expired=state.stop)

    def here_running_s(self) -> float:
        """How long the event :meth:`run_here` is running has run (0.0 when none is)."""
        state = self._here
        started = None if state is None else state.current_started
        return 0.0 if started is None else time.perf_counter() - started

    def adopt_here(self) -> asyncio.Future[BatchOutcome] | None:
        """On the event loop: take over the batch :meth:`run_here` is running, as if
        :meth:`dispatch_batch` had started it on the pool (it takes a slot, its events expire
        after the event timeout, an overdue one keeps its slot until the thread returns).
        The calling thread goes on running the batch to its end, and its ``run_here`` then
        returns None. None when no event of a batch is running (nothing to take over)."""
        state = self._here
        if state is None:
            return None
        loop = asyncio.get_running_loop()
        ended: asyncio.Future[None] = loop.create_future()

        def on_done() -> None:  # on the thread that ran the batch
            with contextlib.suppress(RuntimeError):  # the loop closed meanwhile
                loop.call_soon_threadsafe(_resolve, ended)

        if not state.adopt(on_done):
            return None
        self._here = None  # watch_here no longer replaces the worker for it
        self._free -= 1  # its slot: the pool was idle (run_here's guarantee), so one is free
        return loop.create_task(self._finish_adopted(ended, state))

    async def _finish_adopted(self, ended: asyncio.Future[None], state: BatchState) -> BatchOutcome:
        release_now = True
        try:
            expired = await self._await_batch(ended, state)
            if expired:
                # run_here's thread counts itself busy until it returns; only the slot is ours.
                release_now = False
                self._hold_overdue(ended, self._release_adopted_overdue)
        finally:
            if release_now:
                self._release_slot()
        return self._batch_outcome(state.events, state, expired)

    def _release_adopted_overdue(self, _: object = None) -> None:
        self._overdue -= 1
        self._release_slot()

    def _hold_overdue(self, fut: asyncio.Future[Any], release: Callable[[object], None]) -> None:
        """A thread cannot be killed: its slot stays taken until it returns."""
        self._overdue += 1
        fut.add_done_callback(release)
        if self._overdue >= self._slots and self._on_stuck is not None:
            self._on_stuck()

    async def watch_here(self) -> None:
        """Until cancelled: restart the worker if an event run by :meth:`run_here` hangs past
        the event timeout (its thread, the trigger's source, cannot go on without it)."""
        timeout = self._event_timeout_s
        if timeout is None:
            return
        while True:
            await asyncio.sleep(min(max(timeout / 4, 0.01), 1.0))
            state = self._here
            if state is not None and state.expire(time.perf_counter()):
                logger.error(
                    "handler exceeded the event timeout on the trigger's own thread",
                    extra={"trigger": self.trigger_name, "timeout_s": timeout},
                )
                if self._on_stuck is not None:
                    self._on_stuck()
                return

    def _batch_outcome(
        self, events: Sequence[Any], state: BatchState, expired: bool
    ) -> BatchOutcome:
        """Metrics, logs and the :class:`BatchOutcome` of a finished batch."""
        timeout = state.timeout_s
        # An overdue event never gets a result (the thread checks its elapsed time), so this
        # snapshot is final for every event before it.
        results = list(state.results)
        for latency in state.latencies_s[: len(results) + 1]:
            self._stats.observe(latency)
        self._outcomes["ok"] += len(results)
        failed = events[len(results)] if len(results) < len(events) else None
        if expired or state.timed_out:
            self._outcomes["timeout"] += 1
            logger.warning(
                "handler exceeded the event timeout",
                extra={
                    "event_id": getattr(failed, "id", None),
                    "trigger": self.trigger_name,
                    "timeout_s": timeout,
                },
            )
            return BatchOutcome(
                results, EventTimeoutError(f"handler exceeded the event timeout of {timeout:g}s")
            )
        if state.error is not None and failed is not None:
            self._outcomes["error"] += 1
            event_id = getattr(failed, "id", None)
            logger.error(
                "handler raised",
                exc_info=state.error,
                extra={
                    "event_id": event_id,
                    "trigger": self.trigger_name,
                    "exc_type": type(state.error).__name__,
                },
            )
            failure = HandlerFailure(state.error, event_id)
            failure.__cause__ = state.error
            return BatchOutcome(results, failure)
        return BatchOutcome(results)

    @staticmethod
    async def _await_batch(fut: asyncio.Future[None], state: BatchState) -> bool:
        """Wait for the batch; True if the running event passed its own deadline first.

        Each event's deadline is checked where it starts, so a hung event is noticed after one
        event timeout, not after the time the whole batch was allowed.
        """
        if state.timeout_s is None:
            await fut
            return False
        while not fut.done():
            if state.expire(time.perf_counter()):
                return True
            left = state.overdue_s(time.perf_counter())
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(max(state.timeout_s if left is None else left, 0.001)):
                    await asyncio.shield(fut)
        fut.result()
        return False
