"""Producing from a Kafka-triggered function: return values, ``context.kafka``, dead letters.

One ``KafkaProducer`` per trigger per worker process (kafka-python's producer is thread-safe, so
sync handlers in the thread pool and the event loop share it). Sends are asynchronous; the
consumer thread flushes the producer before every offset commit, so an output produced while
handling offset N is acknowledged by Kafka before N is committed (at-least-once output).
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Mapping
from typing import TYPE_CHECKING, Any

from kafka.errors import MessageSizeTooLargeError

from tickrun.functions.errors import HandlerStatusError, TriggerError
from tickrun.functions.results import json_bytes

from . import metrics
from .limits import SizeLimits, record_size

if TYPE_CHECKING:
    from tickrun.functions.interfaces import BatchOutcome

logger = logging.getLogger(__name__)

Headers = Mapping[str, str | bytes] | list[tuple[str, bytes]] | None


def encode_value(value: Any) -> bytes:
    """What a handler hands over, as record bytes: bytes as-is, str as UTF-8, the rest as JSON."""
    if isinstance(value, bytes):
        return value
    if isinstance(value, bytearray | memoryview):
        return bytes(value)
    if isinstance(value, str):
        return value.encode("utf-8")
    encoded: bytes = json_bytes(value)
    return encoded


def _encode_key(key: Any) -> bytes | None:
    if key is None or isinstance(key, bytes):
        return key
    return str(key).encode("utf-8")


def _encode_headers(headers: Headers) -> list[tuple[str, bytes]]:
    if not headers:
        return []
    items = headers.items() if isinstance(headers, Mapping) else headers
    return [(str(k), v if isinstance(v, bytes) else str(v).encode("utf-8")) for k, v in items]


class Publisher:
    """The trigger's producer. ``attach`` is called from the consumer thread once connected."""

    def __init__(self, function: str, trigger: str) -> None:
        self._producer: Any = None
        self._lock = threading.Lock()
        self._unflushed = 0
        self._published = metrics.PUBLISHED.labels(function, trigger)
        self._errors = metrics.PUBLISH_ERRORS.labels(function, trigger)
        self.limits = SizeLimits()
        # A value below this fits every topic: the common case costs one comparison.
        self._fits_all = self.limits.smallest_bytes - 64 * 1024

    @property
    def connected(self) -> bool:
        return self._producer is not None

    def attach(self, producer: Any, limits: SizeLimits | None = None) -> None:
        if limits is not None:
            self.limits = limits
            self._fits_all = limits.smallest_bytes - 64 * 1024
        self._producer = producer

    def too_large(
        self, topic: str, value: bytes, key: bytes | None, headers: list[tuple[str, bytes]]
    ) -> str | None:
        """Why ``topic`` would refuse this record for its size, or None if it fits."""
        limit = self.limits.for_topic(topic)
        size = record_size(key, value, headers)
        if size <= limit:
            return None
        return f"the record is {size} bytes, above the {limit} bytes topic {topic!r} accepts"

    def detach(self) -> Any:
        producer, self._producer = self._producer, None
        return producer

    def _on_error(self, exc: BaseException) -> None:
        self._errors.inc()
        logger.error("kafka produce failed: %s", exc)

    def send(self, topic: str, value: Any, *, key: Any = None, headers: Headers = None) -> Any:
        """Queue one record; returns kafka-python's future. Raises TriggerError when offline."""
        producer = self._producer
        if producer is None:
            raise TriggerError("kafka producer is not connected")
        data, raw_key, raw_headers = encode_value(value), _encode_key(key), _encode_headers(headers)
        if len(data) > self._fits_all:
            # Refused here, not later by the broker in the background where the handler's
            # event would already count as done: the event fails and goes by its policy.
            why = self.too_large(topic, data, raw_key, raw_headers)
            if why is not None:
                self._errors.inc()
                raise TriggerError(f"cannot produce to topic {topic!r}: {why}") from (
                    MessageSizeTooLargeError(why)
                )
        try:
            future = producer.send(topic, value=data, key=raw_key, headers=raw_headers)
        except Exception as exc:  # kafka-python raises its own KafkaError family and ValueError
            self._errors.inc()
            raise TriggerError(f"cannot produce to topic {topic!r}: {exc}") from exc
        future.add_errback(self._on_error)
        with self._lock:
            self._unflushed += 1
        self._published.inc()
        return future

    def flush(self, timeout_s: float) -> None:
        """Wait until Kafka acknowledged every queued record (called before commits)."""
        with self._lock:
            if not self._unflushed:
                return
            self._unflushed = 0
        producer = self._producer
        if producer is not None:
            producer.flush(timeout=timeout_s)


class KafkaContext:
    """``context.kafka`` in a handler of a function with a Kafka trigger.

    ``context.kafka.publish(value, topic=None, key=None, headers=None)`` produces one record;
    ``topic`` defaults to the trigger's ``outputTopic``. ``value``: bytes, str (UTF-8) or any
    JSON-serialisable object. Safe from sync (thread pool) and async handlers; it queues the
    record and returns at once, and the record is acknowledged before the triggering offset is
    committed.
    """

    def __init__(self, publisher: Publisher, output_topic: str | None) -> None:
        self._publisher = publisher
        self.output_topic = output_topic

    def publish(
        self, value: Any, *, topic: str | None = None, key: Any = None, headers: Headers = None
    ) -> None:
        target = topic or self.output_topic
        if not target:
            raise TriggerError("no topic given and the kafka trigger has no outputTopic")
        self._publisher.send(target, value, key=key, headers=headers)


class Outputs:
    """Handled events' results to the output topic, in offset order (both handling paths)."""

    __slots__ = ("_publisher", "output_topic")

    def __init__(self, publisher: Publisher, output_topic: str | None) -> None:
        self._publisher = publisher
        self.output_topic = output_topic

    def publish(self, record: Any, result: Any) -> None:
        """Produce a handler's result (if any); TriggerError if it cannot be queued."""
        topic = self.output_topic
        if topic is not None and result.value is not None:
            self._publisher.send(
                topic, result.body, key=record.key, headers={"content-type": result.content_type}
            )

    def sort_out(
        self, records: list[Any], outcome: BatchOutcome, start: int = 0
    ) -> tuple[list[int], int, BaseException | None]:
        """Publish a batch's results from ``start`` in order: (offsets done, where that
        stopped, why).

        It stops at a record whose handler failed or answered 5xx, or whose result could not
        be published (the failure is returned), or that the batch did not reach (None).
        """
        results = outcome.results
        output_topic = self.output_topic
        reached = len(results)
        if output_topic is None and start == 0:
            # Nothing to publish (the common case): only a 5xx answer stops short of the
            # results, and at most the last one has it (a batch ends there).
            if reached and results[-1].status >= 500:
                reached -= 1
                return (
                    [r.offset for r in records[:reached]],
                    reached,
                    HandlerStatusError(results[-1].status),
                )
            done = [r.offset for r in records[:reached]]
            if reached == len(records):
                return done, reached, None
            return done, reached, outcome.error
        done = []
        for i in range(start, len(records)):
            if i >= len(results):
                return done, i, outcome.error if i == len(results) else None
            record, result = records[i], results[i]
            if result.status >= 500:
                return done, i, HandlerStatusError(result.status)
            if output_topic is not None and result.value is not None:
                try:
                    self.publish(record, result)
                except TriggerError as exc:
                    return done, i, exc
            done.append(record.offset)
        return done, len(records), None
