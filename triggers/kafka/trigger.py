"""The Kafka trigger: ordered per partition, parallel across partitions, at-least-once.

This module wires the parts together and routes what the consumer thread reports:

- :mod:`.consumer`: the consumer thread: polls, pauses full partitions, reacts to rebalances,
  and is the one owner of offset commits; :mod:`.confluent` is the same on confluent-kafka
  (librdkafka), chosen by ``attributes.client``;
- :mod:`.direct`: one slot and a sync handler: the consumer thread runs the handler itself;
  with more slots (``inlineFastHandler``, on by default), only while the handler is measured
  to be fast (:mod:`.inline`), and an event that runs long there is taken over
  (:meth:`KafkaTrigger.take_over`) so that it holds one slot, as on the pool;
- :mod:`.loop`: otherwise (and for retries, and to settle revoked partitions): one task per
  partition on the event loop;
- :mod:`..retry` and :mod:`.failures`: retry with backoff, then ``onFailure``;
- :mod:`.offsets`: which offsets are done (committable only once every earlier one is);
  :mod:`.publish`: results to the output topic, flushed before their offsets are committed.

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
import time
from typing import TYPE_CHECKING, Any, ClassVar

from nuclio_sdk import TriggerInfo

from ..base import BaseTrigger
from . import metrics
from .config import KafkaConfig
from .consumer import ConsumerThread
from .direct import DirectPath
from .event import KIND
from .failures import FailurePolicy
from .inline import DRAIN_MAX_S, InlineGate
from .loop import BATCH_MAX_EVENTS, LoopPath
from .offsets import OffsetBook
from .publish import KafkaContext, Outputs, Publisher
from .spec import KafkaTriggerSpec

if TYPE_CHECKING:
    from tickrun.functions.interfaces import Dispatcher, TriggerHost
    from tickrun.functions.spec import FunctionSpec

    from .confluent import ConfluentConsumerThread

__all__ = ["BATCH_MAX_EVENTS", "KafkaTrigger"]

logger = logging.getLogger(__name__)

COMMIT_RESERVE_S = 2.0
MAX_REMEMBERED_ATTEMPTS = 10_000
DRAIN_POLL_S = 0.002
# Several slots: an event running this long on the consumer thread is taken over (a fast
# handler's whole chunk takes milliseconds; the other partitions wait meanwhile).
TAKEOVER_S = 0.2
TAKEOVER_POLL_S = 0.05


class KafkaTrigger(BaseTrigger[KafkaTriggerSpec]):
    """One consumer-group member; what the two paths share is :class:`.state.KafkaState`."""

    kind: ClassVar[str] = "kafka-cluster"

    def __init__(self, spec: KafkaTriggerSpec, function: FunctionSpec) -> None:
        super().__init__(spec, function)
        self.config = KafkaConfig.from_spec(spec, function.name)
        self.name = self.config.name
        self.book = OffsetBook()
        self.trigger_info = TriggerInfo(KIND, self.name)
        self.publisher = Publisher(function.name, self.config.name)
        self.outputs = Outputs(self.publisher, self.config.output_topic)
        self.failures = FailurePolicy(self.config, self.publisher)
        self.event_loop: asyncio.AbstractEventLoop | None = None
        self.dispatcher: Dispatcher | None = None
        self.thread: ConsumerThread | ConfluentConsumerThread | None = None
        self.stopping = False
        self.direct = False  # run on the consumer thread (see .direct)
        self.revoking: set[Any] = set()  # partitions being (or last) revoked, for that path
        self.attempts: dict[tuple[str, int, int], int] = {}
        labels = (function.name, self.config.name)
        self.processed = {t: metrics.PROCESSED.labels(*labels, t) for t in self.config.topics}
        self.failed = {t: metrics.FAILED.labels(*labels, t) for t in self.config.topics}
        self.loop_path = LoopPath(self)
        self.direct_path = DirectPath(self)
        self._connected = False
        self._watch: asyncio.Task[None] | None = None
        self._takeovers: asyncio.Task[None] | None = None

    # --- lifecycle ------------------------------------------------------------------------------

    async def start(self, host: TriggerHost) -> None:
        """Start consuming in the background; brokers being down is not an error here."""
        self.event_loop = asyncio.get_running_loop()
        self.dispatcher = dispatcher = host.dispatcher(self.spec)
        self.direct = self.spec.slots == 1 and dispatcher.sync
        if dispatcher.sync and not self.direct and self.config.inline_fast_handler:
            self.direct_path.gate = InlineGate()  # a fast handler skips the pool (.inline)
        if self.direct or self.direct_path.gate is not None:
            self._watch = self.event_loop.create_task(dispatcher.watch_here())
        if self.direct_path.gate is not None:
            self._takeovers = self.event_loop.create_task(self._watch_takeovers())
        context = getattr(host, "context", None)
        if context is not None and getattr(context, "kafka", None) is None:
            context.kafka = KafkaContext(self.publisher, self.config.output_topic)
        if self.config.client == "confluent-kafka":
            # Imported here: confluent-kafka is optional (config.py checked it is installed).
            from .confluent import ConfluentConsumerThread

            self.thread = ConfluentConsumerThread(self.config, self.book, self, self.publisher)
        else:
            self.thread = ConsumerThread(self.config, self.book, self, self.publisher)
        self.thread.start()

    @property
    def here_tp(self) -> Any:
        """The partition the consumer thread is handling, if any."""
        running = self.direct_path.running
        return None if running is None else running[0]

    def ready(self) -> bool:
        return self._connected and not self.stopping

    @property
    def last_error(self) -> str | None:
        return self.thread.last_error if self.thread is not None else None

    async def stop(self, drain_timeout_s: float) -> None:
        """Finish the events being handled, commit what is done, leave the group."""
        self.stopping = True
        for watch in (self._watch, self._takeovers):
            if watch is not None:
                watch.cancel()
        parts = self.loop_path.close_all()
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
        thread = self.thread
        if thread is not None:
            thread.request_stop()
            join_s = max(deadline - loop.time(), reserve_s)
            await loop.run_in_executor(None, thread.join, join_s)
        self._connected = False

    # --- several slots: an event running long on the consumer thread --------------------------

    async def _watch_takeovers(self) -> None:
        dispatcher = self.dispatcher
        assert dispatcher is not None
        timeout_s = self.function.spec.event_timeout_s
        after_s = TAKEOVER_S if not timeout_s else min(TAKEOVER_S, timeout_s / 2)
        while True:
            await asyncio.sleep(min(TAKEOVER_POLL_S, after_s / 2))
            if dispatcher.here_running_s() > after_s:
                self.take_over()

    def take_over(self) -> bool:
        """On the event loop: the event the consumer thread is running (the direct path with
        several slots) has run long; take its chunk over as a pool batch, queue the rest of
        the poll on the loop path and poll on a new thread, so it holds one slot as on the
        pool and the other partitions go on. The old thread finishes the event and ends.

        False when there is nothing to take over (no event running, or the thread's poll round
        still has something to deliver after this: see ``movable``)."""
        thread, dispatcher = self.thread, self.dispatcher
        if thread is None or dispatcher is None or self.stopping or not thread.movable:
            return False
        adopted = dispatcher.adopt_here()
        if adopted is None:
            return False
        running = self.direct_path.running
        if running is None:  # pragma: no cover - set around every run_here
            raise RuntimeError("an adopted batch without its records")
        tp, chunk, todo = running
        # A partition revoked meanwhile is left to its next owner (the thread stops after this
        # event; adopt() leaves its batch unsettled).
        revoking = self.revoking
        rest = {p: r[len(chunk) :] if p == tp else r for p, r in todo.items() if p not in revoking}
        self.direct_path.running = None  # the consumer thread handles nothing any more
        self.loop_path.adopt(tp, chunk, adopted)
        self.loop_path.enqueue({p: r for p, r in rest.items() if r})
        gate = self.direct_path.gate
        if gate is not None:
            gate.slowed()  # the pool takes the handler for a while (the old thread is in it)
        thread.move_on()
        logger.warning(
            "kafka handler running long on the consumer thread; polling moved to a new thread",
            extra={"trigger": self.name, "partition": f"{tp.topic}/{tp.partition}"},
        )
        return True

    # --- consumer thread callbacks (called on the consumer thread) -------------------------------

    def on_records(self, batch: dict[Any, list[Any]]) -> None:
        assert self.event_loop is not None
        gate = self.direct_path.gate
        if not self.stopping and (self.direct or (gate is not None and gate.allows())):
            n = sum(len(r) for r in batch.values())
            # Nothing else outstanding: the loop side is idle, the one slot is free.
            idle = self.book.outstanding_total() == n
            if not idle and gate is not None and gate.retry_due():
                idle = self._drained(n)
                if not idle:
                    gate.put_off()
            if idle:
                self.direct_path.run(batch)
                return
        self.event_loop.call_soon_threadsafe(self.loop_path.enqueue, batch)

    def _drained(self, n: int) -> bool:
        """Wait (consumer thread) until the pool finished all but this poll's ``n`` records."""
        deadline = time.monotonic() + DRAIN_MAX_S
        thread = self.thread
        while self.book.outstanding_total() != n:
            if (
                self.stopping
                or time.monotonic() >= deadline
                or (thread is not None and thread.rejoin_pending())
            ):
                return False
            time.sleep(DRAIN_POLL_S)
        return True

    def hand_off(
        self, batch: dict[Any, list[Any]], failed_tp: Any, failed: tuple[int, BaseException] | None
    ) -> None:
        """Queue records on the loop path (from the consumer thread)."""
        assert self.event_loop is not None
        self.event_loop.call_soon_threadsafe(self.loop_path.enqueue, batch, failed_tp, failed)

    def on_revoked(self, tps: list[Any]) -> concurrent.futures.Future[None]:
        assert self.event_loop is not None
        self.revoking.update(tps)
        return asyncio.run_coroutine_threadsafe(
            self.loop_path.settle(tps, self.config.rebalance_wait_s), self.event_loop
        )

    def on_assigned(self, tps: list[Any]) -> None:
        """A partition's task starts with its first records; the direct path may take it."""
        self.revoking.difference_update(tps)

    def on_unreadable(self, tp: Any, offset: int, exc: BaseException) -> None:
        self.failures.unreadable_soon(self.event_loop, self.book, tp, offset, exc)

    def on_state(self, connected: bool, error: str | None) -> None:
        self._connected = connected

    def on_committed(self) -> None:
        """Wake the partitions waiting for a commit's answer, if any (none: no hop)."""
        loop = self.event_loop
        if loop is not None and self.loop_path.commit_waiters:
            # A late final commit may find the loop closed already: nobody waits then.
            with contextlib.suppress(RuntimeError):
                loop.call_soon_threadsafe(self.loop_path.committed)

    # --- retries remembered across a revoke -----------------------------------------------------

    def retried(self, record: Any) -> bool:
        """True if ``record`` failed here before (it resumes its retries one at a time)."""
        return bool(self.attempts) and (
            (record.topic, record.partition, record.offset) in self.attempts
        )

    def remember_attempts(self, key: tuple[str, int, int], attempts: int) -> None:
        if len(self.attempts) >= MAX_REMEMBERED_ATTEMPTS:
            self.attempts.clear()  # a bound, not a cache policy: this is rare
        self.attempts[key] = attempts
