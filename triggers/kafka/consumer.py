"""The consumer thread: the only thread that touches the ``KafkaConsumer``.

kafka-python's consumer is not thread-safe, so this thread connects, subscribes, polls, pauses
partitions whose backlog is full, commits and reacts to rebalances; records go to the event loop
through :class:`ConsumerCallbacks`. Connection problems are retried with backoff forever: the
replica stays up (not ready) and says why, instead of exiting.
"""

from __future__ import annotations

import logging
import time
from typing import Any

from kafka import AsyncConsumerRebalanceListener, KafkaConsumer, KafkaProducer
from kafka.errors import CorruptRecordError
from kafka.structs import TopicPartition

from tickrun.functions.errors import TriggerError

from . import metrics, roundtrips
from .commits import Committer, describe_error
from .compat import deferred_unreadable, joining, unpark_resumed, unreadable_partition
from .config import KafkaConfig
from .limits import read_limits
from .offsets import OffsetBook
from .publish import Publisher
from .thread import ConsumerCallbacks, ConsumerThreadBase

logger = logging.getLogger(__name__)

POLL_TIMEOUT_MS = 100
# Once half a commit batch is done, poll often enough that the size-triggered commit is not
# held back by a poll waiting on paused partitions (it bounds redelivery after a crash). Not
# sooner: each poll costs kafka-python's threads GIL time that slow handlers need (py-spy
# showed those threads busy with constant 10 ms polls while a pandas handler crawled).
BUSY_POLL_TIMEOUT_MS = 10
# While the group is (re)joining; see compat.joining().
JOIN_POLL_TIMEOUT_MS = 500
# Records already fetched are polled again at once, up to this many, and handed over together:
# a poll returns at most maxPollRecords, and each hand-off wakes the event loop and a handler
# thread (GIL hand-offs on the pool path, see docs/kafka-pool.md).
GATHER_EVENTS = 2000
# Poll at least this often even when every partition is paused (metadata, group state).
MAX_POLL_GAP_S = 1.0
LAG_INTERVAL_S = 1.0
# After a commit the lag moved: report it then too, but not more often than this (the
# multiprocess gauges cost tens of microseconds per report).
LAG_MIN_INTERVAL_S = 0.2


class _Listener(AsyncConsumerRebalanceListener):  # type: ignore[misc]
    """kafka-python 3 runs rebalance callbacks on its own IO thread: async ones are awaited
    there without stopping heartbeats; blocking consumer calls would raise."""

    def __init__(self, owner: ConsumerThread) -> None:
        self._owner = owner

    async def on_partitions_revoked(self, revoked: Any) -> None:
        await self._owner.partitions_revoked(list(revoked), commit=True)

    async def on_partitions_lost(self, lost: Any) -> None:
        # Evicted from the group: another member may own them already, committing is futile.
        await self._owner.partitions_revoked(list(lost), commit=False)

    async def on_partitions_assigned(self, assigned: Any) -> None:
        self._owner.partitions_assigned(list(assigned))


class ConsumerThread(ConsumerThreadBase):
    """Owns the consumer for one Kafka trigger in one worker process."""

    def __init__(
        self,
        config: KafkaConfig,
        book: OffsetBook,
        callbacks: ConsumerCallbacks,
        publisher: Publisher,
    ) -> None:
        super().__init__(config, book, callbacks, publisher, Committer(config, book, publisher))

    def _security(self) -> str:
        cfg = self.config
        proto = cfg.consumer.get("security_protocol", "PLAINTEXT")
        if cfg.sasl.enable:
            return f"{proto}, SASL {cfg.sasl.mechanism} as user {cfg.sasl.user!r}"
        return str(proto)

    def _connect(self) -> None:
        cfg = self.config
        consumer = KafkaConsumer(**cfg.client_kwargs("consumer"))
        self._consumer = consumer
        # Fewer hops to kafka-python's network thread per poll (see .roundtrips).
        roundtrips.install(consumer)
        self.commits.attach(consumer)
        # Subscribe before fetching metadata: the fetch then also gives kafka-python's group
        # coordinator the subscribed topics' partitions before the first join. Without it the
        # member joins knowing none, and rebalances again as soon as the metadata arrives
        # (records fetched in between are fetched twice).
        consumer.subscribe(topics=list(cfg.topics), listener=_Listener(self))
        available = consumer.topics()
        missing = [t for t in cfg.topics if t not in available]
        if missing:
            raise TriggerError(f"topic(s) {', '.join(missing)} do not exist")
        if not self._publisher.connected:
            kwargs = cfg.client_kwargs("producer")
            targets = [cfg.dead_letter_topic_for(t) for t in cfg.topics]
            limits = read_limits(kwargs, [*targets, *filter(None, [cfg.output_topic])])
            producer = KafkaProducer(**kwargs, max_request_size=limits.max_request_bytes)
            self._publisher.attach(producer, limits)
            if cfg.output_topic:
                # Fetch the output topic's metadata now so the first send() does not block
                # the event loop on it (and a missing topic is reported at start).
                producer.partitions_for(cfg.output_topic)
        self._log_subscribed("kafka-python")

    def rejoin_pending(self) -> bool:
        """The group wants this member to (re)join: stop handling, poll (consumer thread)."""
        return self._consumer is not None and joining(self._consumer)

    def _poll_loop(self) -> None:
        consumer = self._consumer
        cfg = self.config
        self.commits.last = last_poll = time.monotonic()
        last_lag = 0.0  # the first commit reports at once
        consumed = self._consumed
        saturated = paused_any = False
        while not self._stop_event.is_set():
            rejoin = joining(consumer)
            if (
                saturated
                and not rejoin
                # An async commit's callback only runs inside a poll, and handlers may be
                # waiting for it (they stay within two commit windows): poll meanwhile.
                and self.commits.sent is None
                and time.monotonic() - last_poll < MAX_POLL_GAP_S
            ):
                # Every partition's backlog is full, so a poll could fetch nothing; it would
                # only cost kafka-python's threads GIL time the handlers need. Wait for them
                # to drain a backlog or complete a commit batch (wake()) instead.
                self._wake.wait(POLL_TIMEOUT_MS / 1000)
                self._wake.clear()
            else:
                if rejoin:
                    timeout_ms = JOIN_POLL_TIMEOUT_MS
                elif paused_any or self._book.uncommitted * 2 >= cfg.commit_batch_size:
                    timeout_ms = BUSY_POLL_TIMEOUT_MS
                else:
                    timeout_ms = POLL_TIMEOUT_MS
                try:
                    batch = consumer.poll(timeout_ms=timeout_ms)
                except CorruptRecordError as exc:
                    batch = self._skip_unreadable(consumer, exc)
                last_poll = time.monotonic()
                unpark_resumed(consumer)
                if batch:
                    for tp, records in batch.items():
                        self._book.add(tp, [r.offset for r in records])
                        consumed[tp.topic].inc(len(records))
                    unreadable: tuple[Any, BaseException] | None = None
                    if not rejoin:
                        batch, unreadable = self._gather(consumer, batch)
                        last_poll = time.monotonic()
                    # Movable (thread.py) unless a decode failure met while gathering waits
                    # in this frame: a new polling thread would not know of it.
                    self.movable = unreadable is None
                    self._callbacks.on_records(batch)
                    self.movable = False  # (not on a moved thread's way out: no finally)
                    deferred = unreadable or deferred_unreadable(consumer)
                    if deferred is not None:
                        self._skip_unreadable(consumer, deferred[1], deferred[0])
            saturated, paused_any = self._flow_control()
            self.commit_if_due()
            now = time.monotonic()
            since_lag = now - last_lag
            if since_lag >= LAG_INTERVAL_S or (
                self.commits.last > last_lag and since_lag >= LAG_MIN_INTERVAL_S
            ):
                self._report_lag()
                last_lag = now

    def _on_moved(self) -> None:
        # What the old thread's round did after its delivery: take a decode failure the
        # poll kept, before flow control can pause its partition (see compat).
        consumer = self._consumer
        deferred = deferred_unreadable(consumer) if consumer is not None else None
        if deferred is not None:
            self._skip_unreadable(consumer, deferred[1], deferred[0])

    def _gather(
        self, consumer: Any, batch: dict[Any, list[Any]]
    ) -> tuple[dict[Any, list[Any]], tuple[Any, BaseException] | None]:
        """Poll again without waiting while records are already fetched, up to
        :data:`GATHER_EVENTS` in all, so the handlers get them in one hand-off.

        Returns the records (in offset order per partition, added to the book) and, if a
        poll met a record the client cannot decode, (its partition or None, the error): the
        caller hands it to the failure policy after these records.
        """
        total = sum(len(r) for r in batch.values())
        consumed = self._consumed
        book = self._book
        while total < GATHER_EVENTS and not self._stop_event.is_set():
            deferred = deferred_unreadable(consumer)
            if deferred is not None:
                return batch, deferred
            if joining(consumer):
                break
            try:
                more = consumer.poll(timeout_ms=0)
            except CorruptRecordError as exc:
                return batch, (None, exc)
            unpark_resumed(consumer)
            if not more:
                break
            for tp, records in more.items():
                book.add(tp, [r.offset for r in records])
                consumed[tp.topic].inc(len(records))
                have = batch.get(tp)
                if have is None:
                    batch[tp] = records
                else:
                    have.extend(records)
                total += len(records)
        return batch, None

    def _skip_unreadable(
        self, consumer: Any, exc: BaseException, tp: Any = None
    ) -> dict[Any, list[Any]]:
        """Seek past a record the client cannot decode (of ``tp``, else the partition the
        fetcher was reading) and hand it to the failure policy."""
        tp = tp or unreadable_partition(consumer)
        if tp is None:
            raise exc  # cannot tell where: reconnect, as for any consumer failure
        offset = consumer.position(tp, timeout_ms=1000)
        consumer.seek(tp, offset + 1)
        self._unreadable(tp, offset, exc)
        return {}

    def _report_lag(self) -> None:
        consumer = self._consumer
        for tp in consumer.assignment():
            high = consumer.highwater(tp)
            if high is None:
                continue
            # The first offset not handled yet: what the trigger still owes this partition.
            base = self._book.restart_point(tp)
            if base is None:
                try:
                    # Never block here: position() waits for committed offsets without a
                    # timeout, and during a rebalance those wait for the rejoin that only
                    # this thread's next poll() completes (a deadlock, seen in CI).
                    base = consumer.position(tp, timeout_ms=0)
                except Exception as exc:  # unknown until the first fetch; try next round
                    logger.debug("no position for %s yet: %r", tp, exc)
                    continue
                if base is None:
                    continue
            metrics.LAG.labels(
                self.config.function, self.config.name, tp.topic, str(tp.partition)
            ).set(max(high - base, 0))

    def _flow_control(self) -> tuple[bool, bool]:
        """Pause partitions with a full backlog, resume them once it has drained.

        Returns (every assigned partition is paused, some partition is paused).

        The consumer's own pause flags are the truth: rebalance callbacks (on kafka-python's
        IO thread) may change the assignment between two calls, and a partition that stays
        assigned keeps its flag — a private copy could miss a resume and stall it forever.
        """
        cfg = self.config
        consumer = self._consumer
        paused = consumer.paused()
        assigned = consumer.assignment()
        n_paused = 0
        for tp in assigned:
            backlog = self._book.outstanding(tp)
            if tp in paused:
                if backlog < cfg.resume_below:
                    consumer.resume(tp)
                else:
                    n_paused += 1
            elif backlog > cfg.pause_above:
                consumer.pause(tp)
                n_paused += 1
        return bool(assigned) and n_paused == len(assigned), n_paused > 0

    # --- rebalance (called inside poll, on this thread) ---------------------------------------

    async def partitions_revoked(self, tps: list[TopicPartition], *, commit: bool) -> None:
        """Runs on kafka-python's IO loop: settle, commit what is done, remember restarts."""
        if not tps:
            return
        consumer = self._consumer
        started = time.monotonic()
        if not self._closing and consumer is not None:
            settled = self._callbacks.on_revoked(tps)
            deadline = started + self.config.rebalance_wait_s + 5.0
            while not settled.done() and time.monotonic() < deadline:
                await consumer._net.sleep(0.005)  # kafka-python's loop: heartbeats go on
        if commit and consumer is not None:
            await self.commits.before_rebalance(consumer, tps)
        self._forget(tps)
        self._log_partitions("revoked", tps, settle_s=round(time.monotonic() - started, 3))

    def _forget(self, tps: list[Any]) -> None:
        consumer = self._consumer
        for tp in tps:
            # kafka-python 3 keeps the fetch position (and pause flag) of a partition that is
            # assigned to us again, but the records queued behind the revoked in-flight event
            # were dropped: remember where to resume, and never leave a partition paused.
            restart = self._book.restart_point(tp)
            if restart is not None:
                self._restart[tp] = restart
            if consumer is not None:
                consumer.resume(tp)
            self._zero_lag(tp)
        self._book.drop(tps)

    def partitions_assigned(self, tps: list[TopicPartition]) -> None:
        restart, self._restart = self._restart, {}
        consumer = self._consumer
        for tp in tps:
            if tp in restart and consumer is not None:
                consumer.seek(tp, restart[tp])
        self._callbacks.on_assigned(tps)
        self._log_partitions("assigned", tps)

    # --- shutdown ----------------------------------------------------------------------------

    def _close(self, *, commit: bool) -> None:
        if not commit:
            self._settle_lost()
        self._restart.clear()  # a new consumer starts from the committed offsets anyway
        consumer, self._consumer = self._consumer, None
        if consumer is not None:
            if commit:
                self.commits.now()
            self.commits.attach(None)
            self._closing = True
            try:
                # Leaving the group now hands our partitions over at once, not after the
                # session timeout.
                consumer.close(autocommit=False)
            except Exception as exc:
                logger.warning("kafka consumer close failed: %s", describe_error(exc))
            self._closing = False
        if commit:
            self._close_producer()
        self._connected.set(0)
