"""librdkafka's side of what the trigger reads and commits, for ``attributes.client:
confluent-kafka``: :class:`Record` (a message as the attributes a kafka-python
``ConsumerRecord`` has, so events look exactly as they do on kafka-python) and
:class:`ConfluentCommitter` (:class:`.commits.Committer` on librdkafka's commit calls).
"""

from __future__ import annotations

import time
from typing import TYPE_CHECKING, Any

from confluent_kafka import KafkaError, KafkaException
from confluent_kafka import TopicPartition as CTopicPartition

from .commits import FLUSH_TIMEOUT_S, Committer

if TYPE_CHECKING:
    from .config import KafkaConfig
    from .offsets import OffsetBook
    from .publish import Publisher


class Record:
    """What the trigger reads of a kafka-python ``ConsumerRecord``, from a librdkafka message."""

    __slots__ = ("headers", "key", "offset", "partition", "timestamp", "topic", "value")

    def __init__(
        self,
        topic: str,
        partition: int,
        offset: int,
        key: bytes | None,
        value: bytes | None,
        headers: Any,
        timestamp: int,
    ) -> None:
        self.topic = topic
        self.partition = partition
        self.offset = offset
        self.key = key
        self.value = value
        self.headers = headers
        self.timestamp = timestamp

    def __repr__(self) -> str:
        return f"Record({self.topic}/{self.partition}/{self.offset})"


def _positions(positions: dict[Any, int]) -> list[CTopicPartition]:
    return [CTopicPartition(tp.topic, tp.partition, pos) for tp, pos in positions.items()]


class ConfluentCommitter(Committer):
    """:class:`.commits.Committer` on librdkafka's commit calls."""

    def __init__(self, config: KafkaConfig, book: OffsetBook, publisher: Publisher) -> None:
        super().__init__(config, book, publisher)
        self._inflight: tuple[dict[Any, int], float] | None = None

    def attach(self, consumer: Any) -> None:
        super().attach(consumer)
        self._inflight = None

    def soon(self) -> None:
        """An async commit; librdkafka answers through :meth:`answered`, inside a consume()."""
        due = self._async_due()
        if due is None:
            return
        consumer, positions = due
        started = time.perf_counter()
        try:
            self._publisher.flush(FLUSH_TIMEOUT_S)  # outputs acknowledged before their offsets
            self._inflight = (positions, started)
            consumer.commit(offsets=_positions(positions), asynchronous=True)
        except Exception as exc:
            self._inflight = None
            self._failure(exc, len(positions))
            return
        self.sent = time.monotonic()

    def answered(self, err: KafkaError | None, partitions: list[CTopicPartition]) -> None:
        """librdkafka's ``on_commit`` (this thread, inside consume()) for the async commit."""
        inflight = self._inflight
        if inflight is None:
            return  # a synchronous commit's report: recorded by now()
        positions, started = inflight
        if {(p.topic, p.partition, p.offset) for p in partitions} != {
            (tp.topic, tp.partition, pos) for tp, pos in positions.items()
        }:
            return
        self._inflight = None
        self.sent = None
        failed = err or next((p.error for p in partitions if p.error is not None), None)
        if failed is not None:
            self._failure(KafkaException(failed), len(positions))
            return
        self._record(positions, time.perf_counter() - started)

    def now(self, tps: list[Any] | None = None) -> None:
        """Flush output, then commit (synchronously) every moved position, or those of ``tps``."""
        positions = self._book.to_commit(tps)
        consumer = self.consumer
        if not positions or consumer is None:
            return
        started = time.perf_counter()
        try:
            self._publisher.flush(FLUSH_TIMEOUT_S)
            answer = consumer.commit(offsets=_positions(positions), asynchronous=False)
            failed = next((p.error for p in answer or () if p.error is not None), None)
            if failed is not None:
                raise KafkaException(failed)
        except Exception as exc:
            self._failure(exc, len(positions))
            return
        self._record(positions, time.perf_counter() - started)
