"""What happens to a Kafka event that keeps failing: skip it, or produce it to a dead-letter
topic with the original key, value and headers plus where it came from and why it failed.

No record stops its partition for good: one the dead-letter topic cannot take as it is (too
big for the topic or the producer, refused by the broker, or still failing after a few tries)
goes as an envelope (:mod:`.envelope`) instead, and so does one the client cannot read at all.
Only the envelope itself is retried until it is sent: it is small and built by tickrun, so
what can stop it is the cluster (unreachable, no such topic, no permission), not the record.
"""

from __future__ import annotations

import asyncio
import logging
from typing import Any, Literal, NamedTuple

from kafka.errors import MessageSizeTooLargeError

from tickrun.functions.errors import TriggerError

from ..retry import Pause, error_text
from . import metrics
from .config import KafkaConfig
from .envelope import envelope_headers, envelope_key, envelope_value
from .event import dead_letter_headers, dead_letter_meta, event_id
from .limits import record_size
from .offsets import OffsetBook
from .publish import Publisher

logger = logging.getLogger(__name__)

DEAD_LETTER_TIMEOUT_S = 30.0
# Tries to dead-letter a record as it is when the failure may pass (a timeout, a leader
# change); then it goes as an envelope. Failures that cannot pass go at once.
AS_IS_TRIES = 3


class Unreadable(NamedTuple):
    """Stands in for a record the client could not decode: only its place is known."""

    topic: str
    partition: int
    offset: int
    timestamp: int | None = None
    key: bytes | None = None
    value: bytes | None = None
    headers: tuple[tuple[str, bytes], ...] = ()


def retriable(exc: BaseException) -> bool:
    """Whether producing may succeed if tried again (kafka-python marks its errors)."""
    if isinstance(exc, TriggerError):
        if exc.__cause__ is None:
            return True  # the producer is not connected yet
        exc = exc.__cause__
    return bool(getattr(exc, "retriable", False))


class FailurePolicy:
    """``onFailure`` once the retries are used up (``block`` never gets here)."""

    def __init__(self, config: KafkaConfig, publisher: Publisher) -> None:
        self.config = config
        self._publisher = publisher
        labels = (config.function, config.name)
        self.dead = {t: metrics.DEAD_LETTERED.labels(*labels, t) for t in config.topics}
        self.skipped = {t: metrics.SKIPPED.labels(*labels, t) for t in config.topics}
        self.enveloped = {t: metrics.ENVELOPED.labels(*labels, t) for t in config.topics}

    async def give_up(self, record: Any, exc: BaseException, attempts: int, pause: Pause) -> bool:
        """Skip or dead-letter ``record``; True once settled, False if ``pause`` (between
        dead-letter retries) says the partition was revoked or the trigger is stopping."""
        cfg = self.config
        error = error_text(exc)
        where = event_id(record.topic, record.partition, record.offset)
        if cfg.on_failure == "skip":
            self._skip(record, error, attempts)
            return True
        topic = cfg.dead_letter_topic_for(record.topic)
        headers = dead_letter_headers(
            record, error=error, attempts=attempts, function=cfg.function, group=cfg.group
        )
        value = record.value or b""
        reason = "too-large"
        why = self._publisher.too_large(topic, value, record.key, headers)
        if why is None:
            outcome = await self._send_as_is(topic, record, value, headers, pause)
            if outcome is None:
                return False
            if outcome is True:
                self.dead[record.topic].inc()
                logger.error(
                    "kafka event dead-lettered after %d attempts: %s",
                    attempts,
                    error,
                    extra={"trigger": cfg.name, "event_id": where, "dead_letter_topic": topic},
                )
                return True
            why = error_text(outcome)
            if not isinstance(outcome.__cause__ or outcome, MessageSizeTooLargeError):
                reason = "refused"
        return await self._send_envelope(
            topic, record, error, attempts, pause, reason=reason, why=why
        )

    async def unreadable(
        self, book: OffsetBook, tp: Any, offset: int, exc: BaseException, pause: Pause
    ) -> None:
        """A record the client cannot decode: an envelope (or a skip), then its offset counts
        as done. ``block`` cannot apply: nothing behind it on the partition could be read."""
        record = Unreadable(tp.topic, tp.partition, offset)
        error = f"the record cannot be read: {error_text(exc)}"
        if self.config.on_failure == "skip":
            self._skip(record, error, 0)
        else:
            topic = self.config.dead_letter_topic_for(tp.topic)
            why = "the kafka client cannot decode the record"
            if not await self._send_envelope(
                topic, record, error, 0, pause, reason="unreadable", why=why
            ):
                return
        book.complete(tp, offset)  # ignored if the partition was revoked meanwhile

    def unreadable_soon(
        self,
        loop: asyncio.AbstractEventLoop | None,
        book: OffsetBook,
        tp: Any,
        offset: int,
        exc: BaseException,
    ) -> None:
        """:meth:`unreadable` on the event loop (called on the consumer thread)."""

        async def pause(delay_s: float) -> bool:
            await asyncio.sleep(delay_s)
            return tp not in book.partitions()  # revoked: its next owner deals with it

        if loop is not None:
            asyncio.run_coroutine_threadsafe(self.unreadable(book, tp, offset, exc, pause), loop)

    def _skip(self, record: Any, error: str, attempts: int) -> None:
        self.skipped[record.topic].inc()
        logger.error(
            "kafka event skipped after %d attempts: %s",
            attempts,
            error,
            extra={
                "trigger": self.config.name,
                "event_id": event_id(record.topic, record.partition, record.offset),
                "attempts": attempts,
            },
        )

    async def _send_as_is(
        self,
        topic: str,
        record: Any,
        value: bytes,
        headers: list[tuple[str, bytes]],
        pause: Pause,
    ) -> Literal[True] | Exception | None:
        """True once sent; the failure when it should go as an envelope instead; None when
        abandoned (revoke / stop)."""
        where = event_id(record.topic, record.partition, record.offset)
        attempt = 0
        while True:
            attempt += 1
            try:
                await asyncio.to_thread(self._produce, topic, value, record.key, headers)
                return True
            except Exception as send_exc:
                if not retriable(send_exc) or attempt >= AS_IS_TRIES:
                    return send_exc
                delay = self.config.backoff_s(attempt)
                logger.error(
                    "cannot dead-letter %s to %s: %s; retrying in %.1fs",
                    where,
                    topic,
                    error_text(send_exc),
                    delay,
                    extra={"trigger": self.config.name},
                )
                if await pause(delay):
                    return None

    async def _send_envelope(
        self,
        topic: str,
        record: Any,
        error: str,
        attempts: int,
        pause: Pause,
        *,
        reason: str,
        why: str,
    ) -> bool:
        cfg = self.config
        readable = not isinstance(record, Unreadable)
        value = envelope_value(
            self._publisher.limits.for_topic(topic),
            record=record,
            reason=reason,
            error=error,
            dead_letter_error=why,
            attempts=attempts,
            function=cfg.function,
            group=cfg.group,
            size=len(record.value or b"") if readable else None,
            record_size=record_size(record.key, record.value, record.headers or ())
            if readable
            else None,
        )
        meta = dead_letter_meta(
            record, error=error, attempts=attempts, function=cfg.function, group=cfg.group
        )
        headers = envelope_headers(meta, reason)
        key = envelope_key(record.key)
        where = event_id(record.topic, record.partition, record.offset)
        retry = 0
        while True:
            try:
                await asyncio.to_thread(self._produce, topic, value, key, headers)
                break
            except Exception as send_exc:
                retry += 1
                delay = cfg.backoff_s(retry)
                logger.error(
                    "cannot dead-letter the envelope of %s to %s: %s; retrying in %.1fs",
                    where,
                    topic,
                    error_text(send_exc),
                    delay,
                    extra={"trigger": cfg.name},
                )
                if await pause(delay):
                    return False
        self.dead[record.topic].inc()
        self.enveloped[record.topic].inc()
        logger.error(
            "kafka event dead-lettered as an envelope (%s) after %d attempts: %s",
            why,
            attempts,
            error,
            extra={"trigger": cfg.name, "event_id": where, "dead_letter_topic": topic},
        )
        return True

    def _produce(
        self, topic: str, value: bytes, key: bytes | None, headers: list[tuple[str, bytes]]
    ) -> None:
        future = self._publisher.send(topic, value, key=key, headers=headers)
        future.get(timeout=DEAD_LETTER_TIMEOUT_S)
