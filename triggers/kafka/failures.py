"""What happens to a Kafka event that keeps failing: skip it, or produce it to a dead-letter
topic with the original key, value and headers plus where it came from and why it failed."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable
from typing import Any

from tickrun.functions.errors import EventTimeoutError, TriggerError
from tickrun.functions.processor.dispatcher import HandlerFailure

from . import metrics
from .config import KafkaConfig
from .event import dead_letter_headers, event_id
from .publish import Publisher

logger = logging.getLogger(__name__)

DEAD_LETTER_TIMEOUT_S = 30.0
MAX_ERROR_CHARS = 1000


class FailedStatus(Exception):
    """A handler answered 5xx: a failure like an exception."""

    def __init__(self, status: int) -> None:
        super().__init__(f"handler answered with status {status}")


def error_text(exc: BaseException) -> str:
    """The failure as logs and the dead-letter header show it: the handler's exception type
    and message (never a traceback), bounded."""
    if isinstance(exc, HandlerFailure) and exc.__cause__ is not None:
        cause = exc.__cause__
        text = f"{type(cause).__name__}: {cause}"
    elif isinstance(exc, HandlerFailure | EventTimeoutError | TriggerError):
        text = exc.message
    else:
        text = str(exc)
    return text[:MAX_ERROR_CHARS]


class FailurePolicy:
    """``onFailure`` once the retries are used up (``block`` never gets here)."""

    def __init__(self, config: KafkaConfig, publisher: Publisher) -> None:
        self.config = config
        self._publisher = publisher
        labels = (config.function, config.name)
        self.dead = {t: metrics.DEAD_LETTERED.labels(*labels, t) for t in config.topics}
        self.skipped = {t: metrics.SKIPPED.labels(*labels, t) for t in config.topics}

    async def give_up(
        self,
        record: Any,
        exc: BaseException,
        attempts: int,
        pause: Callable[[float], Awaitable[bool]],
    ) -> bool:
        """Skip or dead-letter ``record``; True once settled, False if ``pause`` (between
        dead-letter retries) says the partition was revoked or the trigger is stopping."""
        cfg = self.config
        error = error_text(exc)
        where = event_id(record.topic, record.partition, record.offset)
        if cfg.on_failure == "skip":
            self.skipped[record.topic].inc()
            logger.error(
                "kafka event skipped after %d attempts: %s",
                attempts,
                error,
                extra={"trigger": cfg.name, "event_id": where, "attempts": attempts},
            )
            return True
        topic = cfg.dead_letter_topic_for(record.topic)
        headers = dead_letter_headers(
            record, error=error, attempts=attempts, function=cfg.function, group=cfg.group
        )
        retry = 0
        while True:
            try:
                await asyncio.to_thread(self._produce_dead_letter, topic, record, headers)
                break
            except Exception as send_exc:
                retry += 1
                delay = cfg.backoff_s(retry)
                logger.error(
                    "cannot dead-letter %s to %s: %r; retrying in %.1fs",
                    where,
                    topic,
                    send_exc,
                    delay,
                    extra={"trigger": cfg.name},
                )
                if await pause(delay):
                    return False
        self.dead[record.topic].inc()
        logger.error(
            "kafka event dead-lettered after %d attempts: %s",
            attempts,
            error,
            extra={"trigger": cfg.name, "event_id": where, "dead_letter_topic": topic},
        )
        return True

    def _produce_dead_letter(
        self, topic: str, record: Any, headers: list[tuple[str, bytes]]
    ) -> None:
        future = self._publisher.send(topic, record.value or b"", key=record.key, headers=headers)
        future.get(timeout=DEAD_LETTER_TIMEOUT_S)
