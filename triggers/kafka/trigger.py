"""The Kafka trigger: ordered per partition, parallel across partitions, at-least-once.

Each partition this worker owns gets one asyncio task that hands its records to the handler
strictly in offset order; the trigger's ``maxWorkers``/``numWorkers`` slots (the dispatcher)
bound how many partitions run a handler at the same time.

With one slot and a sync handler (the default, and what CPU-bound Python handlers want) the
consumer thread runs the handler itself, in chunks between two polls, as a plain consumer loop
would: no hop to the event loop and a handler thread per chunk, which cost half the throughput
of a no-op handler. That direct path only runs while the loop side has nothing to do, so the
one slot is never used twice at once; a failure, a record with earlier attempts, or a pending
rebalance hands the rest of the poll to the loop side, which retries, dead-letters and settles
revoked partitions as usual, and the consumer thread takes over again once it has caught up.

An offset becomes committable only when its handler succeeded (or the record was dead-lettered /
skipped by policy) and so did every earlier one (:mod:`.offsets`); the consumer thread commits
in batches.

Failure policy per record: retry with exponential backoff up to ``maxRetries``, then
``onFailure``: ``dead-letter`` (produce to ``deadLetterTopic``, default ``<topic>.dlq``, with
the original key/value/headers plus ``x-tickrun-*`` metadata headers, then go on), ``skip``
(log, count, go on) or ``block`` (keep retrying; the partition waits). A handler result with a
5xx status (e.g. ``context.Response(status_code=500)``) counts as a failure like an exception.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import contextlib
import logging
from collections import deque
from collections.abc import Awaitable
from typing import TYPE_CHECKING, Any, ClassVar

from nuclio_sdk import TriggerInfo

from tickrun.functions.errors import HandlerStatusError, TriggerError, WorkerUnavailableError
from tickrun.functions.interfaces import BatchOutcome

from ..base import BaseTrigger
from . import metrics
from .config import KafkaConfig
from .consumer import ConsumerThread
from .event import KIND, to_event
from .failures import FailurePolicy
from .offsets import OffsetBook
from .publish import KafkaContext, Publisher
from .spec import KafkaTriggerSpec

if TYPE_CHECKING:
    from tickrun.functions.interfaces import Dispatcher, TriggerHost
    from tickrun.functions.spec import FunctionSpec

logger = logging.getLogger(__name__)

COMMIT_RESERVE_S = 2.0
COMMIT_WAIT_S = 0.005
MAX_REMEMBERED_ATTEMPTS = 10_000
BATCH_MAX_EVENTS = 64  # per thread hop; its events count as in flight for duplicates at a crash


class _Partition:
    """The loop-side state of one owned partition."""

    __slots__ = ("closed", "failed_first", "interrupt", "queue", "task", "tp", "wake")

    def __init__(self, tp: Any) -> None:
        self.tp = tp
        self.queue: deque[Any] = deque()
        self.wake = asyncio.Event()
        self.interrupt = asyncio.Event()  # cuts retry backoffs short on revoke / stop
        self.closed = False
        self.task: asyncio.Task[None] | None = None
        # (offset, failure): that queued record already failed once on the consumer thread.
        self.failed_first: tuple[int, BaseException] | None = None

    def close(self) -> None:
        self.closed = True
        self.queue.clear()
        self.interrupt.set()
        self.wake.set()


class KafkaTrigger(BaseTrigger[KafkaTriggerSpec]):
    kind: ClassVar[str] = "kafka-cluster"

    def __init__(self, spec: KafkaTriggerSpec, function: FunctionSpec) -> None:
        super().__init__(spec, function)
        self.config = KafkaConfig.from_spec(spec, function.name)
        self.name = self.config.name
        self._book = OffsetBook()
        self._trigger_info = TriggerInfo(KIND, self.name)
        self._publisher = Publisher(function.name, self.config.name)
        self._parts: dict[Any, _Partition] = {}
        self._attempts: dict[tuple[str, int, int], int] = {}
        self._loop: asyncio.AbstractEventLoop | None = None
        self._dispatcher: Dispatcher | None = None
        self._thread: ConsumerThread | None = None
        self._connected = False
        self._stopping = False
        self._direct = False  # run on the consumer thread (see the module docstring)
        self._revoking: set[Any] = set()  # partitions being (or last) revoked, for that path
        self._here_tp: Any = None  # the partition the consumer thread is handling, if any
        self._watch: asyncio.Task[None] | None = None
        labels = (function.name, self.config.name)
        self._processed = {t: metrics.PROCESSED.labels(*labels, t) for t in self.config.topics}
        self._failed = {t: metrics.FAILED.labels(*labels, t) for t in self.config.topics}
        self._failures = FailurePolicy(self.config, self._publisher)

    # --- lifecycle ------------------------------------------------------------------------------

    async def start(self, host: TriggerHost) -> None:
        """Start consuming in the background; brokers being down is not an error here."""
        self._loop = asyncio.get_running_loop()
        self._dispatcher = dispatcher = host.dispatcher(self.spec)
        self._direct = self.spec.workers == 1 and dispatcher.sync
        if self._direct:
            self._watch = self._loop.create_task(dispatcher.watch_here())
        context = getattr(host, "context", None)
        if context is not None and getattr(context, "kafka", None) is None:
            context.kafka = KafkaContext(self._publisher, self.config.output_topic)
        self._thread = ConsumerThread(self.config, self._book, self, self._publisher)
        self._thread.start()

    def ready(self) -> bool:
        return self._connected and not self._stopping

    @property
    def last_error(self) -> str | None:
        return self._thread.last_error if self._thread is not None else None

    async def stop(self, drain_timeout_s: float) -> None:
        """Finish the events being handled, commit what is done, leave the group."""
        self._stopping = True
        if self._watch is not None:
            self._watch.cancel()
        parts = list(self._parts.values())
        for part in parts:
            # Not close(): the in-flight event must still complete and be committed.
            part.closed = True
            part.queue.clear()
            part.interrupt.set()
            part.wake.set()
        loop = asyncio.get_running_loop()
        # The final commit and the group leave need time of their own inside the supervisor's
        # budget (drain timeout + a few seconds): handlers get the drain timeout less that.
        reserve_s = min(COMMIT_RESERVE_S, drain_timeout_s / 4)
        deadline = loop.time() + drain_timeout_s
        tasks = [p.task for p in parts if p.task is not None]
        if tasks:
            _, pending = await asyncio.wait(tasks, timeout=drain_timeout_s - reserve_s)
            for task in pending:
                task.cancel()
            if pending:
                logger.warning(
                    "kafka drain timed out; uncommitted events will be redelivered",
                    extra={"trigger": self.name, "partitions": len(pending)},
                )
        thread = self._thread
        if thread is not None:
            thread.request_stop()
            join_s = max(deadline - loop.time(), reserve_s)
            await loop.run_in_executor(None, thread.join, join_s)
        self._connected = False

    # --- consumer thread callbacks (called on the consumer thread) -------------------------------

    def on_records(self, batch: dict[Any, list[Any]]) -> None:
        assert self._loop is not None
        if (
            self._direct
            and not self._stopping
            # Nothing else outstanding: the loop side is idle, the one slot is free.
            and self._book.outstanding_total() == sum(len(r) for r in batch.values())
        ):
            self._run_here(batch)
        else:
            self._loop.call_soon_threadsafe(self._enqueue, batch)

    def on_revoked(self, tps: list[Any]) -> concurrent.futures.Future[None]:
        assert self._loop is not None
        self._revoking.update(tps)
        return asyncio.run_coroutine_threadsafe(
            self._settle(tps, self.config.rebalance_wait_s), self._loop
        )

    def on_assigned(self, tps: list[Any]) -> None:
        """A partition's task starts with its first records; the direct path may take it."""
        self._revoking.difference_update(tps)

    def on_unreadable(self, tp: Any, offset: int, exc: BaseException) -> None:
        self._failures.unreadable_soon(self._loop, self._book, tp, offset, exc)

    def on_state(self, connected: bool, error: str | None) -> None:
        self._connected = connected

    # --- the direct path (on the consumer thread) -----------------------------------------------

    def _run_here(self, batch: dict[Any, list[Any]]) -> None:
        """Handle a poll's records on this thread, committing when due.

        Partitions take turns a chunk at a time, so one partition's long fetch does not hold
        the others back (the pool path interleaves them the same way).
        """
        todo = dict(batch)  # partition -> its records not handled yet
        # Counted once per poll: a multiprocess Prometheus counter costs microseconds per inc.
        processed: dict[str, int] = dict.fromkeys(self._processed, 0)
        try:
            self._run_here_todo(todo, processed)
        finally:
            for topic, n in processed.items():
                if n:
                    self._processed[topic].inc(n)

    def _run_here_todo(self, todo: dict[Any, list[Any]], processed: dict[str, int]) -> None:
        dispatcher, thread = self._dispatcher, self._thread
        assert dispatcher is not None
        assert thread is not None
        while todo:
            for tp, records in list(todo.items()):
                if self._stopping or tp in self._revoking:
                    del todo[tp]  # not completed, so not committed: the next owner has them
                    continue
                if thread.rejoin_pending() or self._retried(records[0]):
                    # The loop side settles a rebalance and paces retries.
                    self._hand_off(todo, tp, None)
                    return
                chunk = records[:BATCH_MAX_EVENTS]
                events = [to_event(r, self.name, self._trigger_info) for r in chunk]
                self._here_tp = tp
                try:
                    outcome = dispatcher.run_here(events, self._here_abandoned)
                finally:
                    self._here_tp = None
                done, stopped_at, failure = self._sort_out(chunk, outcome)
                if done:
                    processed[tp.topic] += len(done)
                    self._book.complete_many(tp, done)  # ignored once the partition is dropped
                todo[tp] = records[stopped_at:]
                if failure is not None:
                    # A failed publish's later results are dropped: those events run again
                    # on the loop side (at-least-once; nothing was produced for them yet).
                    self._hand_off(todo, tp, failure)
                    return
                if stopped_at < len(chunk) or not todo[tp]:
                    del todo[tp]  # done, or stopping / revoked
                thread.commit_if_due()

    def _here_abandoned(self) -> bool:
        return self._stopping or self._here_tp in self._revoking

    def _hand_off(
        self, todo: dict[Any, list[Any]], failed_tp: Any, failure: BaseException | None
    ) -> None:
        """Give the rest of a poll to the loop side; ``failure``: the first record left of
        ``failed_tp`` failed once already."""
        assert self._loop is not None
        failed = (todo[failed_tp][0].offset, failure) if failure is not None else None
        self._loop.call_soon_threadsafe(self._enqueue, todo, failed_tp, failed)

    # --- loop side ----------------------------------------------------------------------------

    def _enqueue(
        self,
        batch: dict[Any, list[Any]],
        failed_tp: Any = None,
        failed: tuple[int, BaseException] | None = None,
    ) -> None:
        for tp, records in batch.items():
            part = self._parts.get(tp)
            if part is None:
                if self._stopping:
                    continue
                part = self._parts[tp] = _Partition(tp)
                part.task = asyncio.get_running_loop().create_task(
                    self._run(part), name=f"kafka-{tp.topic}-{tp.partition}"
                )
            part.queue.extend(records)
            if failed is not None and tp == failed_tp:
                part.failed_first = failed
            part.wake.set()

    async def _settle(self, tps: list[Any], wait_s: float) -> None:
        """Revoke: drop queued records, let each in-flight event finish (bounded), forget.

        A partition stays registered while its in-flight event finishes, so that event's
        offset still counts as completed and the revoke commit includes it.
        """
        loop = asyncio.get_running_loop()
        deadline = loop.time() + (wait_s or float("inf"))
        parts = [p for p in (self._parts.get(tp) for tp in tps) if p is not None]
        for part in parts:
            part.close()
        tasks = [p.task for p in parts if p.task is not None]
        if tasks:
            _, pending = await asyncio.wait(tasks, timeout=wait_s or None)
            for task in pending:
                task.cancel()
        # The consumer thread stops after its current event (it checks _revoking).
        # Set by another thread, so polled rather than awaited.
        while self._here_tp is not None and self._here_tp in tps and loop.time() < deadline:  # noqa: ASYNC110
            await asyncio.sleep(COMMIT_WAIT_S)
        for part in parts:
            if self._parts.get(part.tp) is part:
                del self._parts[part.tp]

    async def _run(self, part: _Partition) -> None:
        queue = part.queue
        book = self._book
        dispatcher = self._dispatcher
        batches = dispatcher is not None and dispatcher.batches
        limit = 2 * self.config.commit_batch_size
        while not part.closed:
            if not queue:
                part.wake.clear()
                await part.wake.wait()
                continue
            if book.uncommitted >= limit:
                # Handlers ran a commit window ahead of the consumer thread's commits (it
                # shares the GIL with them): wait, so a crash never redoes more than that.
                await self._pause(part, COMMIT_WAIT_S)
                continue
            failed = part.failed_first
            if failed is not None and queue[0].offset == failed[0]:
                part.failed_first = None
                record = queue.popleft()
                if not await self._handle(part, record, first_failure=failed[1]):
                    return
                self._settled(part, [record.offset], processed=False)
                continue
            if batches and len(queue) > 1 and not self._retried(queue[0]):
                if not await self._run_batch(part):
                    return
                continue
            record = queue.popleft()
            if not await self._handle(part, record):
                return
            self._settled(part, [record.offset], processed=False)

    async def _run_batch(self, part: _Partition) -> bool:
        """Sync handlers: queued records in one thread hop; a failed one goes the slow way.

        Results are settled in offset order. A record whose handler failed (or answered 5xx)
        or whose result could not be published is retried by policy before any later record
        is settled; records the batch did not reach go back to the front of the queue.

        Returns False if the partition was abandoned (revoke/stop).
        """
        dispatcher = self._dispatcher
        assert dispatcher is not None
        queue = part.queue
        records = [queue.popleft() for _ in range(min(len(queue), BATCH_MAX_EVENTS))]
        events = [to_event(r, self.name, self._trigger_info) for r in records]
        try:
            outcome = await dispatcher.dispatch_batch(events, lambda: part.closed)
        except WorkerUnavailableError:
            queue.extendleft(reversed(records))  # nothing ran: backpressure, try again
            return not part.closed
        at = 0
        while True:
            done, at, failure = self._sort_out(records, outcome, at)
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

    def _sort_out(
        self, records: list[Any], outcome: BatchOutcome, start: int = 0
    ) -> tuple[list[int], int, BaseException | None]:
        """Publish a batch's results from ``start`` in order: (offsets done, where that
        stopped, why).

        It stops at a record whose handler failed or answered 5xx, or whose result could not
        be published (the failure is returned), or that the batch did not reach (None).
        """
        results = outcome.results
        output_topic = self.config.output_topic
        done: list[int] = []
        for i in range(start, len(records)):
            if i >= len(results):
                return done, i, outcome.error if i == len(results) else None
            record, result = records[i], results[i]
            if result.status >= 500:
                return done, i, HandlerStatusError(result.status)
            if output_topic is not None and result.value is not None:
                try:
                    self._publish(record, result)
                except TriggerError as exc:
                    return done, i, exc
            done.append(record.offset)
        return done, len(records), None

    def _settled(self, part: _Partition, offsets: list[int], processed: bool = True) -> None:
        """Record handled offsets of ``part`` (``processed``: count them as processed too)."""
        if not offsets:
            return
        if processed:
            self._processed[part.tp.topic].inc(len(offsets))
        # A revoked partition's late completion must not leak into its next owner's book.
        if self._parts.get(part.tp) is part or self._stopping:
            left = self._book.complete_many(part.tp, offsets)
            thread = self._thread
            if thread is not None and (
                left < self.config.resume_below
                or self._book.uncommitted >= self.config.commit_batch_size
            ):
                thread.wake()

    def _publish(self, record: Any, result: Any) -> None:
        """Produce a handler's result to the output topic; TriggerError if it cannot be queued."""
        topic = self.config.output_topic
        if topic is not None and result.value is not None:
            self._publisher.send(
                topic, result.body, key=record.key, headers={"content-type": result.content_type}
            )

    async def _handle(
        self, part: _Partition, record: Any, first_failure: BaseException | None = None
    ) -> bool:
        """Handle one record by the retry policy; False if abandoned (revoke/stop), True if
        settled (handled, skipped or dead-lettered).

        ``first_failure``: the record already failed once (in a batch); that counts as its
        first attempt.
        """
        dispatcher = self._dispatcher
        assert dispatcher is not None
        event = to_event(record, self.name, self._trigger_info)
        key = (record.topic, record.partition, record.offset)

        async def attempt_once() -> None:
            result = await dispatcher.dispatch(event)
            if result.status >= 500:
                raise HandlerStatusError(result.status)
            self._publish(record, result)
            self._processed[record.topic].inc()

        def pause(delay_s: float) -> Awaitable[bool]:
            return self._pause(part, delay_s)

        def give_up(exc: BaseException, attempts: int) -> Awaitable[bool]:
            return self._failures.give_up(record, exc, attempts, pause)

        outcome = await self.config.retry.run(
            attempt_once,
            event_id=event.id,
            trigger=self.name,
            pause=pause,
            closed=lambda: part.closed,
            give_up=give_up,
            # Attempts survive a revoke/reassign of the partition within this process, so a
            # rebalance does not hand a poison message a fresh retry budget.
            attempts=self._attempts.pop(key, 0),
            first_failure=first_failure,
            failed=self._failed[record.topic].inc,
        )
        if not outcome.settled:
            if outcome.attempts:
                self._remember_attempts(key, outcome.attempts)
            return False
        return True

    def _retried(self, record: Any) -> bool:
        """True if ``record`` failed here before (it resumes its retries one at a time)."""
        return bool(self._attempts) and (
            (record.topic, record.partition, record.offset) in self._attempts
        )

    def _remember_attempts(self, key: tuple[str, int, int], attempts: int) -> None:
        if len(self._attempts) >= MAX_REMEMBERED_ATTEMPTS:
            self._attempts.clear()  # a bound, not a cache policy: this is rare
        self._attempts[key] = attempts

    async def _pause(self, part: _Partition, delay_s: float) -> bool:
        """Sleep ``delay_s`` unless the partition is revoked/stopped first (returns True then)."""
        if part.closed:
            return True
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(part.interrupt.wait(), delay_s)
        return part.closed
