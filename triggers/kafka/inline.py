"""When a trigger with several slots runs a sync handler on the consumer thread itself.

With ``numWorkers`` > 1 the loop side (:mod:`.loop`) hands batches to a pool of handler threads.
For a handler that takes a few microseconds that hand-off is most of the work: two cross-thread
wake-ups per batch, and the consumer thread, the event loop and the handler threads taking turns
on one GIL (the consumer thread, which decodes every record, then waits for it: the pool path
ran at 0.6-0.7x a plain kafka-python loop, with wide jitter). The handler threads cannot run
such a handler in parallel anyway, so while the loop side is idle, a fast handler runs on the
consumer thread (:mod:`.direct`), exactly as with one slot.

"Fast" is measured, never assumed: the first records go in a short probe chunk, and when two
chunks in a row took :data:`MAX_EVENT_S` or more per event (two, so one chunk descheduled on a
busy host does not flip it), the rest of the poll goes to the pool, which keeps the handler for
:data:`RETRY_S` (doubling while it stays slow, up to :data:`MAX_RETRY_S`) before a probe tries
again. A pool with a backlog is never idle, so a retry that is due waits for the pool to finish
what it holds (:data:`DRAIN_MAX_S` at most) instead, and is put off with the same doubling
when it does not. A handler that waits on I/O or does real work therefore keeps its
``numWorkers`` threads, as before.

On by default (the ``inlineFastHandler`` attribute, ``false`` keeps every event on the pool). A
handler that is fast and then runs long on one event does not hold the consumer up: after
:data:`~.trigger.TAKEOVER_S` the event loop takes the chunk over as a pool batch (its slot, its
event timeout), polling moves to a new thread and the other partitions go on, as on the pool
(:meth:`~.trigger.KafkaTrigger.take_over`).
"""

from __future__ import annotations

import time

from .loop import BATCH_MAX_EVENTS

# Below this mean time per event the pool cannot win: a thread hop costs about as much.
MAX_EVENT_S = 50e-6
# How long a handler found slow stays on the pool before a probe tries it again.
RETRY_S = 2.0
MAX_RETRY_S = 60.0
# How long a due retry waits for the pool to go idle (the consumer thread waits meanwhile;
# the pool holds a few thousand events at most, see the pause threshold).
DRAIN_MAX_S = 1.0
# The probe: few events, so a slow handler (say 50 ms) runs serially for a moment only.
PROBE_EVENTS = 8


class InlineGate:
    """The consumer thread's choice, per poll and per chunk (used on that thread only)."""

    __slots__ = ("backoff_s", "cost_s", "last_s", "retry_at")

    def __init__(self) -> None:
        self.cost_s: float | None = None  # seconds per event, of the faster of two chunks
        self.last_s: float | None = None  # seconds per event of the last chunk
        self.retry_at = 0.0
        self.backoff_s = RETRY_S

    @property
    def fast(self) -> bool:
        return self.cost_s is not None and self.cost_s < MAX_EVENT_S

    def allows(self) -> bool:
        """May the next poll run inline (once the loop side is idle)?"""
        return self.cost_s is None or self.fast or time.monotonic() >= self.retry_at

    def retry_due(self) -> bool:
        """The handler went to the pool as slow and may be tried again now."""
        return self.cost_s is not None and not self.fast and time.monotonic() >= self.retry_at

    def put_off(self) -> None:
        """A due retry could not start (the pool did not go idle in time): later, backing off
        as a slow probe does. The consumer thread waited for the drain meanwhile, so a pool
        that never drains (a hung event without an event timeout holds its slot) must not
        cost that wait every :data:`RETRY_S`."""
        self.retry_at = time.monotonic() + self.backoff_s
        self.backoff_s = min(self.backoff_s * 2, MAX_RETRY_S)

    def chunk(self) -> int:
        """Events in the next inline chunk: a probe until the handler is known to be fast."""
        return BATCH_MAX_EVENTS if self.fast else PROBE_EVENTS

    def slowed(self) -> None:
        """An event ran so long it was taken over: to the pool, as after two slow chunks."""
        self.last_s = self.cost_s = float("inf")
        self.retry_at = time.monotonic() + self.backoff_s
        self.backoff_s = min(self.backoff_s * 2, MAX_RETRY_S)

    def observe(self, seconds: float, events: int) -> bool:
        """Record a chunk's run time; False when the rest should go to the pool."""
        if events <= 0:
            return True
        sample = seconds / events
        last = self.last_s
        self.last_s = sample
        self.cost_s = sample if last is None else min(sample, last)
        if self.fast:
            self.backoff_s = RETRY_S
            return True
        if last is None:
            return True  # one chunk proves nothing: a second decides
        self.retry_at = time.monotonic() + self.backoff_s
        self.backoff_s = min(self.backoff_s * 2, MAX_RETRY_S)
        return False
