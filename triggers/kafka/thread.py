"""What the two consumer threads (kafka-python's in :mod:`.consumer`, librdkafka's in
:mod:`.confluent`) share: the reconnect loop, the state they report, the log lines, the
settling of partitions a dead consumer lost and the producer's close.

A subclass owns the client: how it connects, polls, reports lag, pauses and rebalances.

The polling may move to a new thread (:meth:`ConsumerThreadBase.move_on`): when a handler
running on the polling thread itself (the direct path with several slots) runs long, the event
loop takes its batch over and a new thread polls from the next round on, so one slow event
holds one slot, as on the pool. The old thread finishes that event and ends
(:class:`ConsumerMoved`); the client is never used by two threads at once, since the old one
was inside the handler, away from the client, when the new one started.
"""

from __future__ import annotations

import logging
import threading
from concurrent.futures import Future
from typing import TYPE_CHECKING, Any, Protocol

from . import metrics
from .commits import FLUSH_TIMEOUT_S, Committer, describe_error

if TYPE_CHECKING:
    from .config import KafkaConfig
    from .offsets import OffsetBook
    from .publish import Publisher

logger = logging.getLogger(__name__)

RECONNECT_BACKOFF_S = (1.0, 30.0)


class ConsumerMoved(BaseException):
    """Raised on a polling thread whose polling has moved to another thread (it was running
    a handler meanwhile): it leaves the client alone and ends. A BaseException, so no
    ``except Exception`` on the way treats it as a failure of the consumer."""


class ConsumerCallbacks(Protocol):
    def on_records(self, batch: dict[Any, list[Any]]) -> None:
        """Called on the consumer thread with each poll's records; must not block."""

    def on_revoked(self, tps: list[Any]) -> Future[None]:
        """Start settling revoked partitions (drop queued records, finish in-flight ones);
        the future completes when that is done. Must not block."""

    def on_assigned(self, tps: list[Any]) -> None: ...

    def on_unreadable(self, tp: Any, offset: int, exc: BaseException) -> None:
        """A record the client cannot decode, already added to the book: dead-letter (or
        skip) it and complete its offset. Must not block."""

    def on_state(self, connected: bool, error: str | None) -> None: ...

    def on_committed(self) -> None:
        """A commit was recorded (offsets acknowledged by the broker). Must not block."""


class ConsumerThreadBase(threading.Thread):
    """Owns one Kafka trigger's consumer in one worker process (constructor does no I/O)."""

    def __init__(
        self,
        config: KafkaConfig,
        book: OffsetBook,
        callbacks: ConsumerCallbacks,
        publisher: Publisher,
        commits: Committer,
    ) -> None:
        super().__init__(name=f"kafka-{config.name}", daemon=True)
        self.config = config
        self._book = book
        self._callbacks = callbacks
        self._publisher = publisher
        self._stop_event = threading.Event()
        self._wake = threading.Event()
        self._consumer: Any = None
        self._restart: dict[Any, int] = {}  # revoked partition → first offset not completed
        self._closing = False
        self.commits = commits  # the one owner of commits
        # move_on() may hand the polling over only while this is True: the polling thread has
        # nothing of its poll round left to deliver (see the clients' poll loops).
        self.movable = False
        self._owner: threading.Thread | None = None  # the thread polling since a move_on()
        commits.on_committed = callbacks.on_committed
        # Direct path: asked between handler chunks (on this thread); bound once, not per call.
        self.commit_if_due = commits.if_due
        labels = (config.function, config.name)
        self._connected = metrics.CONNECTED.labels(*labels)
        self._consumed = {t: metrics.CONSUMED.labels(*labels, t) for t in config.topics}
        self.last_error: str | None = None

    # --- what a client implements --------------------------------------------------------

    def _connect(self) -> None:
        raise NotImplementedError

    def _poll_loop(self) -> None:
        raise NotImplementedError

    def _on_moved(self) -> None:
        """On a new polling thread, before its first poll: what the old thread would have done
        after the delivery it was in (kafka-python: take a kept decode failure)."""

    def _close(self, *, commit: bool) -> None:
        raise NotImplementedError

    def _security(self) -> str:
        """The security settings in use, for a failed connection's message (no secrets)."""
        raise NotImplementedError

    def rejoin_pending(self) -> bool:
        """The group wants this member to (re)join: stop handling, poll (consumer thread)."""
        raise NotImplementedError

    # --- any thread ------------------------------------------------------------------------

    def request_stop(self) -> None:
        self._stop_event.set()
        self._wake.set()

    def wake(self) -> None:
        """Handlers drained a backlog or finished a commit batch: look again now (any thread)."""
        self._wake.set()

    def move_on(self) -> None:
        """Poll on a new thread from now on (the event loop, while the polling thread runs a
        handler inside a movable delivery, see :attr:`movable`)."""
        self.movable = False
        thread = threading.Thread(
            target=self._serve, args=(True,), name=f"{self.name}-moved", daemon=True
        )
        self._owner = thread
        thread.start()

    def join(self, timeout: float | None = None) -> None:
        """Wait for the thread polling now (after a :meth:`move_on`, not the first one)."""
        owner = self._owner
        if owner is None:
            super().join(timeout)
        else:
            owner.join(timeout)

    # --- thread body -----------------------------------------------------------------------

    def run(self) -> None:
        self._serve(False)

    def _serve(self, connected: bool) -> None:
        """The thread body: ``connected`` on a thread the polling moved to."""
        delay = RECONNECT_BACKOFF_S[0]
        moved = connected
        while not self._stop_event.is_set():
            if not connected:
                try:
                    self._connect()
                except Exception as exc:
                    self._report_down(exc, "cannot start", delay)
                    self._close(commit=False)
                    self._stop_event.wait(delay)
                    delay = min(delay * 2, RECONNECT_BACKOFF_S[1])
                    continue
                delay = RECONNECT_BACKOFF_S[0]
                self._up()
            connected = False
            try:
                if moved:
                    moved = False
                    self._on_moved()
                self._poll_loop()
            except ConsumerMoved:
                return  # another thread polls now, and closes at the end
            except Exception as exc:
                self._report_down(exc, "lost its consumer", delay)
                self._close(commit=False)
                self._stop_event.wait(delay)
                continue
        self._close(commit=True)

    def _up(self) -> None:
        self.last_error = None
        self._connected.set(1)
        self._callbacks.on_state(True, None)

    def _report_down(self, exc: BaseException, what: str, delay: float) -> None:
        cfg = self.config
        cause = describe_error(exc)
        if cfg.sasl.enable or cfg.tls.enable:
            # A security mismatch usually surfaces as a failed bootstrap: name the settings
            # (never the password) so the cause is findable.
            cause = f"{cause} (security: {self._security()})"
        self.last_error = f"brokers {cfg.describe_brokers()}: {cause}"
        self._connected.set(0)
        logger.error(
            "kafka trigger %s %s (brokers %s): %s; retrying in %.0fs",
            cfg.name,
            what,
            cfg.describe_brokers(),
            cause,
            delay,
            extra={
                "trigger": cfg.name,
                "brokers": list(cfg.brokers),
                "topics": list(cfg.topics),
                "cause": cause,
            },
        )
        self._callbacks.on_state(False, self.last_error)

    def _log_subscribed(self, client: str) -> None:
        cfg = self.config
        logger.info(
            "kafka trigger %s subscribed (%s)",
            cfg.name,
            client,
            extra={
                "trigger": cfg.name,
                "topics": list(cfg.topics),
                "group": cfg.group,
                "brokers": list(cfg.brokers),
            },
        )

    def _log_partitions(self, what: str, tps: list[Any], **extra: Any) -> None:
        logger.info(
            "kafka partitions %s",
            what,
            extra={
                "trigger": self.config.name,
                "partitions": [f"{t.topic}/{t.partition}" for t in tps],
                **extra,
            },
        )

    def _unreadable(self, tp: Any, offset: int, exc: BaseException) -> None:
        """A record the client cannot decode: counted, in the book, to the failure policy."""
        logger.error(
            "kafka record %s/%d/%d cannot be read: %s",
            tp.topic,
            tp.partition,
            offset,
            describe_error(exc)[:1000],
            extra={"trigger": self.config.name},
        )
        self._book.add(tp, [offset])
        self._consumed[tp.topic].inc()
        self._callbacks.on_unreadable(tp, offset, exc)

    def _zero_lag(self, tp: Any) -> None:
        metrics.LAG.labels(self.config.function, self.config.name, tp.topic, str(tp.partition)).set(
            0
        )

    # --- shutdown ----------------------------------------------------------------------------

    def _settle_lost(self) -> None:
        """The consumer died without a rebalance callback: its partitions are no longer ours
        (the group reassigns them), so settle and forget them here."""
        lost = self._book.partitions()
        if not lost:
            return
        try:
            self._callbacks.on_revoked(lost).result(self.config.rebalance_wait_s + 5.0)
        except Exception as exc:
            logger.warning("settling lost partitions failed: %r", exc)
        finally:
            self._book.drop(lost)

    def _close_producer(self) -> None:
        producer = self._publisher.detach()
        if producer is None:
            return
        try:
            producer.close(timeout=FLUSH_TIMEOUT_S)
        except Exception as exc:
            logger.warning("kafka producer close failed: %s", describe_error(exc))
