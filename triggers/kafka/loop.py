"""The loop path: on the event loop, one task per owned partition, in offset order.

Each partition this worker owns gets one asyncio task that hands its records to the handler
strictly in offset order; the trigger's ``maxWorkers``/``numWorkers`` slots (the dispatcher)
bound how many partitions run a handler at the same time. Sync handlers take a batch of a
partition's records per thread hop (while the handler is fast, the ready partitions' batches share
one hop, :mod:`.lane`); a record that fails goes one at a time through the retry
policy (:mod:`..retry`), then ``onFailure`` (:mod:`.failures`). A revoke settles the partition's
task here (:meth:`LoopPath.settle`) before the consumer thread commits.

Handled offsets go to the offset book (:mod:`.offsets`); the consumer thread commits them.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections import deque
from collections.abc import Awaitable
from typing import TYPE_CHECKING, Any

from tickrun.functions.errors import HandlerStatusError, WorkerUnavailableError

from .event import to_event
from .lane import Lane

if TYPE_CHECKING:
    from tickrun.functions.interfaces import BatchOutcome

    from .state import KafkaState

COMMIT_WAIT_S = 0.005
# A partition a commit window ahead waits for the commit's answer (the consumer thread wakes
# it); this is only the fallback when a commit fails or its wake-up is missed.
COMMIT_WAKE_FALLBACK_S = 0.1
# Events taken into batches and not settled yet, all partitions together, in commit windows
# (commitBatchSize). Two windows would bound a crash's redo tighter but leave no room to queue
# the next combined batch while one runs: the pool idled between them (0.59-0.68x the raw
# loop against 0.69-0.81x with four and 0.78-0.86x before the fix, bench.kafka on a quiet
# host; see docs/kafka-pool.md).
IN_BATCHES_MAX_WINDOWS = 4
# Per thread hop; its events count as in flight for duplicates at a crash. Each hop costs two
# cross-thread wake-ups and GIL hand-offs (handler thread, then the event loop), so with a
# backlog 256 events go at once: 64 made the pool path a quarter slower than a plain loop.
BATCH_MAX_EVENTS = 256
# A fast handler's batches (combined, see .lane) take up to this many of a partition's events:
# fewer hops, each of which passes the GIL between the loop, a handler thread and the consumer
# thread. Within the commit window like any batch.
FAST_BATCH_MAX_EVENTS = 2048


class Partition:
    """The loop-side state of one owned partition."""

    __slots__ = (
        "adopted",
        "closed",
        "failed_first",
        "interrupt",
        "queue",
        "task",
        "tp",
        "wake",
    )

    def __init__(self, tp: Any) -> None:
        self.tp = tp
        self.queue: deque[Any] = deque()
        self.wake = asyncio.Event()
        self.interrupt = asyncio.Event()  # cuts retry backoffs short on revoke / stop
        self.closed = False
        self.task: asyncio.Task[None] | None = None
        # (offset, failure): that queued record already failed once on the consumer thread.
        self.failed_first: tuple[int, BaseException] | None = None
        # A batch the consumer thread started and the loop took over (LoopPath.adopt): its
        # records and its outcome to come; handled before the queue.
        self.adopted: tuple[list[Any], asyncio.Future[BatchOutcome]] | None = None

    def close(self) -> None:
        self.closed = True
        self.queue.clear()
        self.interrupt.set()
        self.wake.set()

    async def wait_wake(self, timeout_s: float) -> None:
        """Until :attr:`wake` is set (records, a commit's answer, revoke/stop) or timeout."""
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(self.wake.wait(), timeout_s)

    async def pause(self, delay_s: float) -> bool:
        """Sleep ``delay_s`` unless the partition is revoked/stopped first (True then)."""
        if self.closed:
            return True
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(self.interrupt.wait(), delay_s)
        return self.closed


class LoopPath:
    """The partitions' tasks of one Kafka trigger (all on the event loop)."""

    def __init__(self, trigger: KafkaState) -> None:
        self._t = trigger
        self.parts: dict[Any, Partition] = {}
        # Partitions waiting for a commit's answer (they ran a commit window ahead).
        self.commit_waiters: set[Partition] = set()
        # Sync batches of a fast handler go to the pool together (see .lane).
        self.lane = Lane()
        # Events taken into batches and not yet settled, over all partitions (at most
        # IN_BATCHES_MAX_WINDOWS): a combined lane runs several partitions' batches at once,
        # and a crash redoes what ran and was not committed.
        self.in_batches = 0

    def room(self) -> int:
        """Events a partition may take now: below two commit windows of uncommitted events
        and IN_BATCHES_MAX_WINDOWS of events taken into batches, so a crash never redoes more
        than six windows (see test_kafka_rebalance)."""
        window = self._t.config.commit_batch_size
        return min(
            2 * window - self._t.book.uncommitted,
            IN_BATCHES_MAX_WINDOWS * window - self.in_batches,
        )

    def committed(self) -> None:
        """A commit was answered (from the consumer thread, via ``call_soon_threadsafe``),
        or a batch settled: the partitions waiting for room go on."""
        waiters, self.commit_waiters = self.commit_waiters, set()
        for part in waiters:
            part.wake.set()

    def enqueue(
        self,
        batch: dict[Any, list[Any]],
        failed_tp: Any = None,
        failed: tuple[int, BaseException] | None = None,
    ) -> None:
        """Queue records (from the consumer thread, via ``call_soon_threadsafe``); ``failed``:
        the first record left of ``failed_tp`` already failed once on the direct path."""
        for tp, records in batch.items():
            part = self._part(tp)
            if part is None:
                continue
            part.queue.extend(records)
            if failed is not None and tp == failed_tp:
                part.failed_first = failed
            part.wake.set()

    def adopt(self, tp: Any, records: list[Any], outcome: asyncio.Future[BatchOutcome]) -> None:
        """A batch of ``tp`` the consumer thread is running, taken over (on the loop): its
        outcome is settled as the partition's next batch, before anything queued after it."""
        part = None if tp in self._t.revoking else self._part(tp)
        if part is None or part.closed:
            # Stopping, or revoked meanwhile: unsettled, so redelivered to the next owner (the
            # dispatcher's task still frees the slot when the thread returns).
            return
        part.adopted = (records, outcome)
        self.in_batches += len(records)
        part.wake.set()

    def _part(self, tp: Any) -> Partition | None:
        part = self.parts.get(tp)
        if part is None and not self._t.stopping:
            part = self.parts[tp] = Partition(tp)
            part.task = asyncio.get_running_loop().create_task(
                self._run(part), name=f"kafka-{tp.topic}-{tp.partition}"
            )
        return part

    def close_all(self) -> list[Partition]:
        """Stop taking records; the in-flight event of each partition still completes."""
        parts = list(self.parts.values())
        for part in parts:
            # Not close(): the in-flight event must still complete and be committed.
            part.closed = True
            part.queue.clear()
            part.interrupt.set()
            part.wake.set()
        return parts

    async def settle(self, tps: list[Any], wait_s: float) -> None:
        """Revoke: drop queued records, let each in-flight event finish (bounded), forget.

        A partition stays registered while its in-flight event finishes, so that event's
        offset still counts as completed and the revoke commit includes it.
        """
        loop = asyncio.get_running_loop()
        deadline = loop.time() + (wait_s or float("inf"))
        parts = [p for p in (self.parts.get(tp) for tp in tps) if p is not None]
        for part in parts:
            part.close()
        tasks = [p.task for p in parts if p.task is not None]
        if tasks:
            _, pending = await asyncio.wait(tasks, timeout=wait_s or None)
            for task in pending:
                task.cancel()
        # The consumer thread stops after its current event (the direct path checks revoking).
        # Set by another thread, so polled rather than awaited.
        t = self._t
        while t.here_tp is not None and t.here_tp in tps and loop.time() < deadline:  # noqa: ASYNC110
            await asyncio.sleep(COMMIT_WAIT_S)
        for part in parts:
            if self.parts.get(part.tp) is part:
                del self.parts[part.tp]

    async def _run(self, part: Partition) -> None:
        try:
            await self._serve(part)
        finally:
            if part.adopted is not None:  # abandoned before it was reached
                self.in_batches -= len(part.adopted[0])
                part.adopted = None

    async def _serve(self, part: Partition) -> None:
        t = self._t
        queue = part.queue
        dispatcher = t.dispatcher
        batches = dispatcher is not None and dispatcher.batches
        while not part.closed:
            if part.adopted is not None:
                records, adopted = part.adopted
                part.adopted = None
                # Shielded: the dispatcher's task keeps the slot's accounting if this partition
                # is abandoned (revoke, stop) while the thread still runs the batch.
                if not await self._settle_batch(part, records, asyncio.shield(adopted)):
                    return
                continue
            if not queue:
                part.wake.clear()
                await part.wake.wait()
                continue
            if self.room() <= 0:
                # Handlers ran two commit windows ahead of the consumer thread's commits (it
                # shares the GIL with them), or the batches taken hold four: wait. Woken by the
                # commit's answer or the end of another partition's batch (committed()), not
                # by polling every few ms: a poll wakes late (jitter) and costs a task per tick.
                part.wake.clear()
                self.commit_waiters.add(part)
                # Checked again once registered: a commit answered in between woke nobody.
                if self.room() <= 0 and not part.closed:
                    await part.wait_wake(COMMIT_WAKE_FALLBACK_S)
                self.commit_waiters.discard(part)
                continue
            failed = part.failed_first
            if failed is not None and queue[0].offset == failed[0]:
                part.failed_first = None
                record = queue.popleft()
                if not await self._handle(part, record, first_failure=failed[1]):
                    return
                self._settled(part, [record.offset], processed=False)
                continue
            if batches and len(queue) > 1 and not t.retried(queue[0]):
                if not await self._run_batch(part):
                    return
                continue
            record = queue.popleft()
            if not await self._handle(part, record):
                return
            self._settled(part, [record.offset], processed=False)

    async def _run_batch(self, part: Partition) -> bool:
        """Sync handlers: queued records in one thread hop; a failed one goes the slow way.

        Results are settled in offset order. A record whose handler failed (or answered 5xx)
        or whose result could not be published is retried by policy before any later record
        is settled; records the batch did not reach go back to the front of the queue.

        Returns False if the partition was abandoned (revoke/stop).
        """
        t = self._t
        dispatcher = t.dispatcher
        assert dispatcher is not None
        queue = part.queue
        # No further than room() allows (its bound on redelivery after a crash), however
        # long the batch may be.
        room = max(self.room(), 1)
        most = FAST_BATCH_MAX_EVENTS if dispatcher.sync and self.lane.fast else BATCH_MAX_EVENTS
        records = [queue.popleft() for _ in range(min(len(queue), most, room))]
        name, info = t.name, t.trigger_info
        events = [to_event(r, name, info) for r in records]
        self.in_batches += len(records)
        return await self._settle_batch(part, records, self._dispatch_batch(part, events))

    async def _settle_batch(
        self, part: Partition, records: list[Any], running: Awaitable[BatchOutcome]
    ) -> bool:
        """The outcome of a batch of ``records`` (counted in :attr:`in_batches`), settled:
        see :meth:`_run_batch`."""
        t = self._t
        queue = part.queue
        try:
            outcome = await running
        except WorkerUnavailableError:
            queue.extendleft(reversed(records))  # nothing ran: backpressure, try again
            return not part.closed
        finally:
            self.in_batches -= len(records)
            if self.commit_waiters:
                self.committed()  # room again for the partitions that waited on this batch
        at = 0
        while True:
            done, at, failure = t.outputs.sort_out(records, outcome, at)
            self._settled(part, done)
            if at == len(records):
                return True
            if failure is None:
                # Not run (revoke/stop): back to the queue, in order.
                queue.extendleft(reversed(records[at:]))
                return not part.closed
            # Earlier records are settled (committable) while this one retries; the results
            # after it (if its publish failed) are still used.
            if not await self._handle(part, records[at], first_failure=failure):
                return False
            self._settled(part, [records[at].offset], processed=False)
            at += 1

    async def _dispatch_batch(self, part: Partition, events: list[Any]) -> BatchOutcome:
        """One partition's batch on the pool: combined with the other partitions' while the
        handler is fast (see .lane)."""
        dispatcher = self._t.dispatcher
        assert dispatcher is not None
        lane = self.lane
        if dispatcher.sync and lane.combines():
            return await lane.dispatch(dispatcher, events, lambda: part.closed)
        return await dispatcher.dispatch_batch(events, lambda: part.closed)

    def _settled(self, part: Partition, offsets: list[int], processed: bool = True) -> None:
        """Record handled offsets of ``part`` (``processed``: count them as processed too)."""
        if not offsets:
            return
        t = self._t
        if processed:
            t.processed[part.tp.topic].inc(len(offsets))
        # A revoked partition's late completion must not leak into its next owner's book.
        if self.parts.get(part.tp) is part or t.stopping:
            left = t.book.complete_many(part.tp, offsets)
            thread = t.thread
            if thread is not None and (
                left < t.config.resume_below or t.book.uncommitted >= t.config.commit_batch_size
            ):
                thread.wake()

    async def _handle(
        self, part: Partition, record: Any, first_failure: BaseException | None = None
    ) -> bool:
        """Handle one record by the retry policy; False if abandoned (revoke/stop), True if
        settled (handled, skipped or dead-lettered).

        ``first_failure``: the record already failed once (in a batch); that counts as its
        first attempt.
        """
        t = self._t
        dispatcher = t.dispatcher
        assert dispatcher is not None
        event = to_event(record, t.name, t.trigger_info)
        key = (record.topic, record.partition, record.offset)

        async def attempt_once() -> None:
            result = await dispatcher.dispatch(event)
            if result.status >= 500:
                raise HandlerStatusError(result.status)
            t.outputs.publish(record, result)
            t.processed[record.topic].inc()

        def give_up(exc: BaseException, attempts: int) -> Awaitable[bool]:
            return t.failures.give_up(record, exc, attempts, part.pause)

        outcome = await t.config.retry.run(
            attempt_once,
            event_id=event.id,
            trigger=t.name,
            pause=part.pause,
            closed=lambda: part.closed,
            give_up=give_up,
            # Attempts survive a revoke/reassign of the partition within this process, so a
            # rebalance does not hand a poison message a fresh retry budget.
            attempts=t.attempts.pop(key, 0),
            first_failure=first_failure,
            failed=t.failed[record.topic].inc,
        )
        if not outcome.settled:
            if outcome.attempts:
                t.remember_attempts(key, outcome.attempts)
            return False
        return True
