"""The consumer thread on confluent-kafka (librdkafka), for ``attributes.client: confluent-kafka``.

The same contract as :mod:`.consumer` (kafka-python), to the same callbacks
(:class:`.thread.ConsumerCallbacks`), offset book and committer, so both handling paths, the
failure policy and the metrics are shared:

- one thread owns the ``Consumer``; ``consume(num_messages, timeout)`` fetches in librdkafka's
  C threads and releases the GIL while it waits; group heartbeats run there too, so a blocking
  rebalance callback here does not cost the membership;
- records reach the trigger as :class:`Record`: the attributes the rest reads of a kafka-python
  ``ConsumerRecord`` (topic, partition, offset, key, value, headers, timestamp), and
  partitions as kafka-python's ``TopicPartition``, so events look exactly as they do today;
- at-least-once: only the offset book's completed prefix is committed (auto-commit and the
  offset store are off); an async commit per batch or interval, a synchronous one inside the
  revoke callback (before the partitions go) and at shutdown;
- flow control by ``pause``/``resume`` of partitions whose backlog is full;
- a record whose headers cannot be decoded goes to the failure policy as unreadable (as with
  kafka-python), in its place in the partition's order.
"""

from __future__ import annotations

import logging
import time
from concurrent.futures import Future
from typing import TYPE_CHECKING, Any

from confluent_kafka import Consumer, KafkaError, KafkaException
from confluent_kafka import TopicPartition as CTopicPartition
from kafka.errors import CorruptRecordError
from kafka.structs import TopicPartition

from tickrun.functions.errors import TriggerError

from . import metrics
from .commits import describe_error
from .config import KafkaConfig, rdkafka_settings
from .confluent_commits import ConfluentCommitter, Record
from .confluent_producer import ConfluentProducer
from .consumer import (
    BUSY_POLL_TIMEOUT_MS,
    LAG_INTERVAL_S,
    LAG_MIN_INTERVAL_S,
    MAX_POLL_GAP_S,
    POLL_TIMEOUT_MS,
)
from .limits import read_limits
from .offsets import OffsetBook
from .publish import Publisher
from .thread import ConsumerThreadBase

if TYPE_CHECKING:
    from .thread import ConsumerCallbacks

logger = logging.getLogger(__name__)

ERROR_LOG_INTERVAL_S = 30.0
DOWN_CHECK_INTERVAL_S = 5.0
NO_HEADERS: tuple[tuple[str, bytes], ...] = ()


class ConfluentConsumerThread(ConsumerThreadBase):
    """Owns the librdkafka consumer for one Kafka trigger in one worker process."""

    commits: ConfluentCommitter

    def __init__(
        self,
        config: KafkaConfig,
        book: OffsetBook,
        callbacks: ConsumerCallbacks,
        publisher: Publisher,
    ) -> None:
        super().__init__(
            config, book, callbacks, publisher, ConfluentCommitter(config, book, publisher)
        )
        self._assigned: set[TopicPartition] = set()
        self._lag_unknown: set[TopicPartition] = set()  # assigned, lag not reported yet
        self._next: dict[TopicPartition, int] = {}  # the offset after the last one delivered
        self._paused: set[TopicPartition] = set()
        self._tps: dict[tuple[str, int], TopicPartition] = {}
        self._commit_on_revoke = True
        self._down: str | None = None  # librdkafka's last connection error, until records flow
        self._down_checked = 0.0
        self._logged: tuple[str, float] = ("", 0.0)

    def rejoin_pending(self) -> bool:
        # librdkafka heartbeats and joins in its own threads; a rebalance is served inside the
        # next consume(), which a direct-path chunk (max_poll_records events) does not delay long.
        return False

    # --- thread body -----------------------------------------------------------------------

    def _up(self) -> None:
        self._down = None
        super()._up()

    def _security(self) -> str:
        cfg = self.config
        security = str(cfg.rdkafka.get("security.protocol", "plaintext")).upper()
        if cfg.sasl.enable:
            security += f", SASL {cfg.sasl.mechanism} as user {cfg.sasl.user!r}"
        return security

    def _on_error(self, err: KafkaError) -> None:
        """librdkafka's error_cb (inside consume()): it reconnects by itself; say why meanwhile."""
        if err.code() == KafkaError._ALL_BROKERS_DOWN and self._down is None:
            self._down = f"brokers {self.config.describe_brokers()}: {err.str()}"
            self._down_checked = time.monotonic()
            self.last_error = self._down
            self._connected.set(0)
            self._callbacks.on_state(False, self._down)
        # librdkafka repeats an error on every reconnect attempt: the same one at most every
        # ERROR_LOG_INTERVAL_S.
        text, now = str(err.str()), time.monotonic()
        if text != self._logged[0] or now - self._logged[1] >= ERROR_LOG_INTERVAL_S:
            self._logged = (text, now)
            logger.warning("kafka client: %s", text, extra={"trigger": self.config.name})

    def _check_up(self) -> None:
        """While librdkafka says the brokers are down, ask them now and then (an idle topic
        brings no records to show they are back)."""
        now = time.monotonic()
        if now - self._down_checked < DOWN_CHECK_INTERVAL_S:
            return
        self._down_checked = now
        try:
            self._consumer.list_topics(self.config.topics[0], timeout=1.0)
        except KafkaException:
            return
        self._up()

    def _connect(self) -> None:
        cfg = self.config
        settings = rdkafka_settings(cfg, "consumer")
        settings["on_commit"] = self.commits.answered
        settings["error_cb"] = self._on_error
        consumer = Consumer(settings)
        self._consumer = consumer
        self.commits.attach(consumer)
        try:
            meta = consumer.list_topics(timeout=10.0)
        except KafkaException as exc:
            raise TriggerError(f"cannot read the cluster's topics: {exc.args[0].str()}") from exc
        missing = [t for t in cfg.topics if t not in meta.topics]
        if missing:
            raise TriggerError(f"topic(s) {', '.join(missing)} do not exist")
        consumer.subscribe(
            list(cfg.topics),
            on_assign=self._on_assign,
            on_revoke=self._on_revoke,
            on_lost=self._on_lost,
        )
        if not self._publisher.connected:
            # The size limits come from the cluster through kafka-python's admin client (one
            # round trip at start), as for the kafka-python producer.
            targets = [cfg.dead_letter_topic_for(t) for t in cfg.topics]
            limits = read_limits(
                cfg.client_kwargs("producer"), [*targets, *filter(None, [cfg.output_topic])]
            )
            settings = rdkafka_settings(cfg, "producer")
            settings["message.max.bytes"] = limits.max_request_bytes
            producer = ConfluentProducer(settings)
            self._publisher.attach(producer, limits)
            if cfg.output_topic:
                producer.partitions_for(cfg.output_topic)
        self._log_subscribed("confluent-kafka")

    def _tp(self, topic: str, partition: int) -> TopicPartition:
        key = (topic, partition)
        tp = self._tps.get(key)
        if tp is None:
            tp = self._tps[key] = TopicPartition(topic, partition)
        return tp

    def _poll_loop(self) -> None:
        consumer = self._consumer
        cfg = self.config
        consume = consumer.consume
        n_max = cfg.consumer.get("max_poll_records", 500)
        self.commits.last = last_poll = time.monotonic()
        last_lag = 0.0
        saturated = paused_any = False
        while not self._stop_event.is_set():
            if (
                saturated
                and self.commits.sent is None
                and time.monotonic() - last_poll < MAX_POLL_GAP_S
            ):
                # Every partition's backlog is full: wait for the handlers (wake()) instead.
                self._wake.wait(POLL_TIMEOUT_MS / 1000)
                self._wake.clear()
            else:
                if paused_any or self._book.uncommitted * 2 >= cfg.commit_batch_size:
                    timeout_ms = BUSY_POLL_TIMEOUT_MS
                else:
                    timeout_ms = POLL_TIMEOUT_MS
                messages = consume(n_max, timeout_ms / 1000)
                last_poll = time.monotonic()
                if messages:
                    self._deliver(messages)
            saturated, paused_any = self._flow_control()
            self.commit_if_due()
            if self._down is not None:
                self._check_up()
            now = time.monotonic()
            since_lag = now - last_lag
            if since_lag >= LAG_INTERVAL_S or (
                self.commits.last > last_lag and since_lag >= LAG_MIN_INTERVAL_S
            ):
                self._report_lag()
                last_lag = now

    def _deliver(self, messages: list[Any]) -> None:
        """One consume()'s messages to the book and the trigger, as kafka-python's poll()."""
        batch: dict[TopicPartition, list[Record]] = {}
        tp_of = self._tp
        last_key: tuple[str, int] | None = None
        records: list[Record] = []
        for m in messages:
            err = m.error()
            if err is not None:
                self._message_error(err)
                continue
            topic, partition = m.topic(), m.partition()
            if (topic, partition) != last_key:
                last_key = (topic, partition)
                tp = tp_of(topic, partition)
                records = batch.get(tp) or batch.setdefault(tp, [])
            try:
                record = Record(
                    topic,
                    partition,
                    m.offset(),
                    m.key(),
                    m.value(),
                    m.headers() or NO_HEADERS,
                    m.timestamp()[1],
                )
            except (UnicodeDecodeError, ValueError, SystemError) as exc:
                # Unreadable (a header name that is not UTF-8). confluent-kafka 2.x returns from
                # headers() with the UnicodeDecodeError still set, so it surfaces as the
                # SystemError of the next call, with the decode error as its cause.
                cause = exc.__cause__ if isinstance(exc, SystemError) else None
                # What came before it goes first, then it: the partition's offsets reach the
                # book in order.
                self._hand_over(batch)
                batch, last_key = {}, None
                # Reported as kafka-python reports it (the same envelope error text).
                unreadable = CorruptRecordError(describe_error(cause or exc))
                self._unreadable(tp, m.offset(), unreadable)
                continue
            records.append(record)
        # The last delivery of the round: the polling may move to a new thread meanwhile
        # (thread.py); not the ones before an unreadable record, whose rest would follow.
        self.movable = True
        self._hand_over(batch)
        self.movable = False  # (not on a moved thread's way out: no finally)

    def _hand_over(self, batch: dict[TopicPartition, list[Record]]) -> None:
        batch = {tp: records for tp, records in batch.items() if records}
        if not batch:
            return
        if self._down is not None:
            self._up()
        consumed = self._consumed
        after = self._next
        for tp, records in batch.items():
            self._book.add(tp, [r.offset for r in records])
            consumed[tp.topic].inc(len(records))
            after[tp] = records[-1].offset + 1
        if self._lag_unknown and not self._lag_unknown.isdisjoint(batch):
            # A partition's first records: its lag is known now (the fetch brought the high
            # watermark) and is reported at once; librdkafka may drain it within the second.
            self._report_lag()
        self._callbacks.on_records(batch)

    def _unreadable(self, tp: Any, offset: int, exc: BaseException) -> None:
        self._next[tp] = offset + 1
        super()._unreadable(tp, offset, exc)

    def _message_error(self, err: KafkaError) -> None:
        if err.code() == KafkaError._PARTITION_EOF:
            return
        if err.fatal():
            raise KafkaException(err)  # a new consumer, as for a lost kafka-python one
        logger.warning("kafka consume: %s", err.str(), extra={"trigger": self.config.name})

    def _report_lag(self) -> None:
        consumer = self._consumer
        for tp in list(self._assigned):
            try:
                _low, high = consumer.get_watermark_offsets(
                    CTopicPartition(tp.topic, tp.partition), cached=True
                )
            except KafkaException:
                continue
            if high is None or high < 0:
                continue
            base = self._book.restart_point(tp)
            if base is None:
                try:
                    base = consumer.position([CTopicPartition(tp.topic, tp.partition)])[0].offset
                except KafkaException:
                    continue
                if base is None or base < 0:
                    continue
            metrics.LAG.labels(
                self.config.function, self.config.name, tp.topic, str(tp.partition)
            ).set(max(high - base, 0))
            self._lag_unknown.discard(tp)

    def _flow_control(self) -> tuple[bool, bool]:
        """Pause partitions with a full backlog, resume them once it has drained."""
        cfg = self.config
        consumer = self._consumer
        assigned, paused = self._assigned, self._paused
        n_paused = 0
        for tp in assigned:
            backlog = self._book.outstanding(tp)
            if tp in paused:
                if backlog < cfg.resume_below:
                    self._resume(tp)
                    paused.discard(tp)
                else:
                    n_paused += 1
            elif backlog > cfg.pause_above:
                consumer.pause([CTopicPartition(tp.topic, tp.partition)])
                paused.add(tp)
                n_paused += 1
        return bool(assigned) and n_paused == len(assigned), n_paused > 0

    def _resume(self, tp: TopicPartition) -> None:
        """Resume ``tp`` and fetch it again now. A pause drops the records librdkafka had
        prefetched, and a plain resume only fetches again about a second later (measured:
        0.94 s, whatever the fetch settings; with a seek 5 ms), which held numWorkers=4 at a
        fifth of the direct path's rate."""
        ctp = CTopicPartition(tp.topic, tp.partition)
        self._consumer.resume([ctp])
        position = self._next.get(tp)
        if position is None:
            return
        try:
            self._consumer.seek(CTopicPartition(tp.topic, tp.partition, position))
        except KafkaException as exc:  # then the plain resume fetches, a little later
            logger.debug("seek after resume of %s: %s", tp, exc)

    # --- rebalance (librdkafka calls these inside consume() or close(), on this thread) -------

    def _on_assign(self, consumer: Any, partitions: list[CTopicPartition]) -> None:
        tps = [self._tp(p.topic, p.partition) for p in partitions]
        restart, self._restart = self._restart, {}
        if any(tp in restart for tp in tps):
            # Where this member stopped handling (its commit may have failed before revoke).
            for p, tp in zip(partitions, tps, strict=True):
                if tp in restart:
                    p.offset = restart[tp]
        consumer.assign(partitions)
        self._assigned.update(tps)
        self._lag_unknown.update(tps)
        self._callbacks.on_assigned(tps)
        self._log_partitions("assigned", tps)

    def _on_revoke(self, consumer: Any, partitions: list[CTopicPartition]) -> None:
        self._revoked(partitions, commit=self._commit_on_revoke)

    def _on_lost(self, consumer: Any, partitions: list[CTopicPartition]) -> None:
        # Evicted from the group: another member may own them already, committing is futile.
        self._revoked(partitions, commit=False)

    def _revoked(self, partitions: list[CTopicPartition], *, commit: bool) -> None:
        tps = [self._tp(p.topic, p.partition) for p in partitions]
        if not tps:
            return
        started = time.monotonic()
        if not self._closing:
            settled: Future[None] = self._callbacks.on_revoked(tps)
            try:
                # Blocking is fine here: librdkafka heartbeats in its own thread.
                settled.result(self.config.rebalance_wait_s + 5.0)
            except Exception as exc:
                logger.warning("settling revoked partitions: %s", describe_error(exc))
        if commit:
            self.commits.now(tps)
        self._forget(tps)
        self._log_partitions("revoked", tps, settle_s=round(time.monotonic() - started, 3))

    def _forget(self, tps: list[TopicPartition]) -> None:
        consumer = self._consumer
        for tp in tps:
            restart = self._book.restart_point(tp)
            if restart is not None:
                self._restart[tp] = restart
            if tp in self._paused and consumer is not None:
                # Never hand a partition back paused (librdkafka may keep the flag).
                try:
                    consumer.resume([CTopicPartition(tp.topic, tp.partition)])
                except KafkaException as exc:
                    logger.debug("resume of a revoked partition: %s", exc)
            self._paused.discard(tp)
            self._assigned.discard(tp)
            self._lag_unknown.discard(tp)
            self._next.pop(tp, None)
            self._zero_lag(tp)
        self._book.drop(tps)

    # --- shutdown ----------------------------------------------------------------------------

    def _close(self, *, commit: bool) -> None:
        if not commit:
            self._settle_lost()
        self._restart.clear()
        consumer, self._consumer = self._consumer, None
        if consumer is not None:
            if commit:
                self.commits.now()
            self._closing = True
            self._commit_on_revoke = commit
            try:
                # Leaving the group now hands our partitions over at once (the revoke callback
                # runs inside close(): it commits what the final commit above left, if any).
                consumer.close()
            except Exception as exc:
                logger.warning("kafka consumer close failed: %s", describe_error(exc))
            self.commits.attach(None)
            self._closing = False
            self._commit_on_revoke = True
        self._assigned.clear()
        self._paused.clear()
        self._lag_unknown.clear()
        self._next.clear()
        if commit:
            self._close_producer()
        self._connected.set(0)
