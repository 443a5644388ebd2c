"""Running consecutive events of one ordered stream in a single thread-pool call.

A thread hop costs more than a no-op sync handler; a Kafka partition delivers hundreds of events
at a time that must run one after another anyway. The batch runs them in order and stops at the
first event that fails (raises, answers 5xx, or runs past the event timeout) so the caller can
retry that event before any later one runs — per-partition order and at-least-once hold.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

import nuclio_sdk

from ..results import Result, exception_result, to_result


@dataclass
class BatchState:
    """Shared between the loop and the handler thread; the thread appends, the loop reads."""

    events: Sequence[Any]
    timeout_s: float | None
    should_stop: Callable[[], bool] | None = None
    results: list[Result] = field(default_factory=list)
    latencies_s: list[float] = field(default_factory=list)
    error: BaseException | None = None
    """The exception of ``events[len(results)]``, if the handler raised."""
    timed_out: bool = False
    """``events[len(results)]`` ran past the event timeout (its result was dropped)."""
    stop: bool = False
    """Set by the loop when it gives up waiting: start no further event."""
    lock: threading.Lock = field(default_factory=threading.Lock)
    """Makes "the running event finished" and "the loop declared it overdue" exclusive."""
    current_started: float | None = None
    """``perf_counter()`` when the running event started; None between events."""
    on_done: Callable[[], None] | None = None
    """Set by :meth:`adopt`: called by the thread once the batch has ended."""

    def overdue_s(self, now: float) -> float | None:
        """How long until the running event passes its timeout (<= 0: it has)."""
        started = self.current_started
        if self.timeout_s is None or started is None:
            return None
        return started + self.timeout_s - now

    def adopt(self, on_done: Callable[[], None]) -> bool:
        """Another party takes over waiting for this batch while an event of it runs; False
        when no event is running (between events, or the batch has ended: the thread running
        it goes on by itself). ``on_done`` is called by that thread when the batch ends."""
        with self.lock:
            if self.current_started is None or self.stop:
                return False
            self.on_done = on_done
            return True

    def expire(self, now: float) -> bool:
        """Loop side: if the running event is past its timeout, stop the batch there."""
        with self.lock:
            started = self.current_started
            if self.timeout_s is None or started is None or now - started <= self.timeout_s:
                return False
            self.stop = True
            return True


def run_batch(fn: Callable[[Any, Any], Any], context: Any, state: BatchState) -> None:
    """The thread side: handle ``state.events`` in order until one fails or a stop is asked."""
    # Locals, one clock read per event (an event starts when the one before it ended): this
    # loop runs once per Kafka record and its overhead is the trigger's.
    should_stop = state.should_stop
    lock = state.lock
    timeout_s = state.timeout_s
    results = state.results
    latencies = state.latencies_s
    clock = time.perf_counter
    ended = clock()
    for event in state.events:
        if state.stop or (should_stop is not None and should_stop()):
            return
        started = state.current_started = ended
        try:
            result = to_result(fn(context, event))
            if not 100 <= result.status <= 599:
                raise ValueError(f"handler returned an invalid status code {result.status}")
        except nuclio_sdk.ExceptionWithResponse as exc:
            result = exception_result(exc)
        except Exception as exc:
            with lock:
                state.current_started = None
                latencies.append(clock() - started)
                if not state.stop:
                    state.error = exc
            return
        with lock:
            ended = clock()
            elapsed = ended - started
            state.current_started = None
            latencies.append(elapsed)
            if state.stop:
                return  # declared overdue by the loop: this event counts as timed out
            if timeout_s is not None and elapsed > timeout_s:
                state.timed_out = True
                return
            results.append(result)
        if result.status >= 500:
            return
