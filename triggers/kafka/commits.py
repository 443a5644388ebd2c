"""Offset commits: the one place a Kafka trigger commits, always from the consumer thread (or,
before a rebalance, kafka-python's IO loop that thread drives).

What is committable is the offset book's answer (:mod:`.offsets`): an offset counts once its
event and every earlier one are handled. Output is flushed first, so what a handler produced is
acknowledged by Kafka before the offset that produced it is committed.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from typing import Any

from kafka.structs import OffsetAndMetadata

from . import metrics
from .config import KafkaConfig
from .offsets import OffsetBook
from .publish import Publisher

logger = logging.getLogger(__name__)

FLUSH_TIMEOUT_S = 30.0
# An async commit whose callback has not come after this long is given up on (a new one goes).
COMMIT_STALE_S = 60.0


def describe_error(exc: BaseException) -> str:
    text = str(exc) or type(exc).__name__
    return text if type(exc).__name__ in text else f"{type(exc).__name__}: {text}"


def _offsets(positions: dict[Any, int]) -> dict[Any, OffsetAndMetadata]:
    return {tp: OffsetAndMetadata(pos, "", -1) for tp, pos in positions.items()}


class Committer:
    """Commits the book's completed offsets with the consumer of the moment (``consumer``)."""

    def __init__(self, config: KafkaConfig, book: OffsetBook, publisher: Publisher) -> None:
        self.config = config
        self._book = book
        self._publisher = publisher
        self.consumer: Any = None
        # Told after each recorded commit (handlers a commit window ahead wait for it).
        self.on_committed: Callable[[], None] | None = None
        self.last = 0.0  # when a commit was last due (monotonic)
        self.sent: float | None = None  # when the async commit in flight was sent
        self._acked: float | None = None  # when the broker answered it
        labels = (config.function, config.name)
        self._latency = metrics.COMMIT_LATENCY.labels(*labels)
        self._ok = metrics.COMMITS.labels(*labels, "ok")
        self._failed = metrics.COMMITS.labels(*labels, "failed")

    def attach(self, consumer: Any) -> None:
        self.consumer = consumer
        self.sent = None  # a request of the previous consumer never calls back

    def if_due(self) -> None:
        """Commit once a commit batch is complete or the commit interval has passed (on the
        consumer thread: each poll round, and between handler chunks on the direct path)."""
        now = time.monotonic()
        if (
            self._book.uncommitted >= self.config.commit_batch_size
            or now - self.last >= self.config.commit_interval_s
        ):
            self.soon()
            self.last = now

    def soon(self) -> None:
        """Commit every moved position without waiting for the broker (this thread goes on).

        For the size and interval commits: a blocking commit costs this thread a round trip
        (~2 ms) per commit batch, which was a seventh of a no-op handler's time. One request
        is in flight at a time; its callback (run by kafka-python on this thread, in the next
        poll) records it. Revokes and shutdown still commit synchronously.
        """
        due = self._async_due()
        if due is None:
            return
        consumer, positions = due
        started = time.perf_counter()
        self._acked = None
        try:
            self._publisher.flush(FLUSH_TIMEOUT_S)  # outputs acknowledged before their offsets
            future = consumer.commit_async(
                _offsets(positions),
                callback=lambda _offsets, response: self._committed(positions, started, response),
            )
            # The callback waits for the next poll; the broker's answer time is the latency.
            future.add_both(lambda _response: setattr(self, "_acked", time.perf_counter()))
        except Exception as exc:
            self._failure(exc, len(positions))
            return
        self.sent = time.monotonic()

    def _async_due(self) -> tuple[Any, dict[Any, int]] | None:
        """(the consumer, the positions to commit) when an async commit should go now: none is
        in flight (or the one in flight is stale) and some position moved."""
        consumer = self.consumer
        if consumer is None:
            return None
        sent = self.sent
        if sent is not None:
            if time.monotonic() - sent < COMMIT_STALE_S:
                return None
            logger.warning("kafka async commit never completed; sending another")
        positions = self._book.to_commit()
        if not positions:
            return None
        return consumer, positions

    def _committed(self, positions: dict[Any, int], started: float, response: Any) -> None:
        self.sent = None
        if isinstance(response, BaseException):
            self._failure(response, len(positions))
            return
        self._record(positions, (self._acked or time.perf_counter()) - started)

    def _record(self, positions: dict[Any, int], seconds: float) -> None:
        self._book.committed(positions)
        self._ok.inc()
        self._latency.observe(seconds)
        if self.on_committed is not None:
            self.on_committed()

    def _failure(self, exc: BaseException, partitions: int, when: str = "") -> None:
        # Typically a rebalance in progress: the partitions' next owner re-handles the events
        # after the last commit (bounded duplicates, never a loss).
        self._failed.inc()
        logger.warning(
            "kafka offset commit%s failed: %s",
            when,
            describe_error(exc),
            extra={"trigger": self.config.name, "partitions": partitions},
        )

    def now(self, tps: list[Any] | None = None) -> None:
        """Flush output, then commit every moved position (or just those of ``tps``)."""
        positions = self._book.to_commit(tps)
        if not positions or self.consumer is None:
            return
        started = time.perf_counter()
        try:
            self._publisher.flush(FLUSH_TIMEOUT_S)
            self.consumer.commit(_offsets(positions))
        except Exception as exc:
            self._failure(exc, len(positions))
            return
        self._record(positions, time.perf_counter() - started)

    async def before_rebalance(self, consumer: Any, tps: list[Any]) -> None:
        """Commit ``tps`` from inside kafka-python's rebalance callback (its IO loop)."""
        positions = self._book.to_commit(tps)
        if not positions:
            return
        started = time.perf_counter()
        try:
            self._publisher.flush(FLUSH_TIMEOUT_S)
            # The public commit() blocks on this very loop; the coordinator's coroutine is
            # what kafka-python's own pre-rebalance auto-commit awaits.
            await consumer._coordinator._commit_offsets_sync_async(
                _offsets(positions), timeout_ms=10_000
            )
        except Exception as exc:
            self._failure(exc, len(positions), " before rebalance")
            return
        self._record(positions, time.perf_counter() - started)
