"""A confluent-kafka ``Producer`` with the face :class:`.publish.Publisher` expects of
kafka-python's ``KafkaProducer`` (``send`` → a future with ``add_errback``/``get``,
``flush(timeout=)``, ``close(timeout=)``, ``partitions_for``), so outputs, ``context.kafka`` and
dead letters go through librdkafka unchanged when ``attributes.client`` is confluent-kafka.

librdkafka reports deliveries only from ``poll()``/``flush()``: each ``send`` serves the ones
already due (``poll(0)``, microseconds), and ``get`` polls while it waits. Errors come back as
kafka-python's (``MessageSizeTooLargeError`` for a record too big, anything else with its
``retriable`` flag) so :mod:`.failures` classifies them as it does today.
"""

from __future__ import annotations

import threading
import time
from typing import Any

from confluent_kafka import KafkaError, KafkaException, Producer
from kafka.errors import KafkaTimeoutError, MessageSizeTooLargeError

from tickrun.functions.errors import TriggerError

# How long send() waits for room when librdkafka's local queue is full (it raises BufferError).
QUEUE_FULL_WAIT_S = 10.0
GET_POLL_S = 0.05
# The broker's code, and librdkafka's local one (RD_KAFKA_RESP_ERR__MSG_SIZE_TOO_LARGE).
_TOO_LARGE = frozenset({KafkaError.MSG_SIZE_TOO_LARGE, -141})


class ProduceError(Exception):
    """A record librdkafka could not deliver (``retriable`` as librdkafka says)."""

    def __init__(self, message: str, *, retriable: bool) -> None:
        super().__init__(message)
        self.retriable = retriable


def as_error(err: KafkaError) -> Exception:
    """librdkafka's error as the kafka-python family the trigger classifies."""
    text = str(err.str() or err.name())
    if err.code() in _TOO_LARGE:
        too_large: Exception = MessageSizeTooLargeError(text)
        return too_large
    return ProduceError(f"{err.name()}: {text}", retriable=bool(err.retriable()))


class Delivery:
    """One record's delivery: kafka-python's ``FutureRecordMetadata`` as far as it is used."""

    __slots__ = ("_done", "_errbacks", "_lock", "_producer", "exception")

    def __init__(self, producer: Producer) -> None:
        self._producer = producer
        self._done = False
        self._lock = threading.Lock()
        self._errbacks: list[Any] = []
        self.exception: Exception | None = None

    def settle(self, err: KafkaError | None, _msg: Any) -> None:
        """librdkafka's delivery report (on whichever thread polled)."""
        with self._lock:
            self.exception = as_error(err) if err is not None else None
            self._done = True
            errbacks, self._errbacks = self._errbacks, []
        if self.exception is not None:
            for errback in errbacks:
                errback(self.exception)

    def add_errback(self, fn: Any) -> None:
        with self._lock:
            if not self._done:
                self._errbacks.append(fn)
                return
        if self.exception is not None:
            fn(self.exception)

    def get(self, timeout: float | None = None) -> None:
        """Wait for the broker's acknowledgement; raise the delivery's error."""
        deadline = time.monotonic() + (timeout if timeout is not None else 1e9)
        while not self._done:
            left = deadline - time.monotonic()
            if left <= 0:
                raise KafkaTimeoutError(f"no delivery report after {timeout} s")
            self._producer.poll(min(GET_POLL_S, left))
        if self.exception is not None:
            raise self.exception


class ConfluentProducer:
    """Thread-safe as librdkafka's producer is: handler threads and the loop share it."""

    def __init__(self, settings: dict[str, Any]) -> None:
        self._producer = Producer(settings)

    def send(self, topic: str, *, value: bytes, key: bytes | None, headers: list[Any]) -> Delivery:
        producer = self._producer
        delivery = Delivery(producer)
        deadline = 0.0
        while True:
            try:
                producer.produce(
                    topic,
                    value=value,
                    key=key,
                    headers=headers or None,
                    on_delivery=delivery.settle,
                )
                break
            except BufferError:
                # librdkafka's queue is full: serve deliveries until there is room.
                now = time.monotonic()
                deadline = deadline or now + QUEUE_FULL_WAIT_S
                if now >= deadline:
                    raise KafkaTimeoutError("the producer queue stayed full") from None
                producer.poll(0.05)
            except KafkaException as exc:
                raise as_error(exc.args[0]) from exc
        producer.poll(0)
        return delivery

    def flush(self, timeout: float | None = None) -> None:
        left = self._producer.flush(timeout if timeout is not None else -1)
        if left:
            raise KafkaTimeoutError(f"{left} records not acknowledged after {timeout} s")

    def close(self, timeout: float | None = None) -> None:
        self.flush(timeout)

    def partitions_for(self, topic: str) -> set[int]:
        """Fetch ``topic``'s metadata now (a missing topic is reported at start)."""
        try:
            meta = self._producer.list_topics(topic, timeout=10.0).topics.get(topic)
        except KafkaException as exc:
            raise TriggerError(f"cannot read topic {topic!r}: {exc.args[0]}") from exc
        # A topic the broker is still creating answers LEADER_NOT_AVAILABLE: fine here.
        if meta is None or (
            meta.error is not None and meta.error.code() == KafkaError.UNKNOWN_TOPIC_OR_PART
        ):
            raise TriggerError(f"topic {topic!r} does not exist")
        return set(meta.partitions)
