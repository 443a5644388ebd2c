"""Retry with backoff, then give up: a policy around one dispatcher call, for any trigger kind.

Dramatiq's ``Retries`` middleware in shape: the trigger hands over the work for one event
(``attempt_once``: dispatch it and deliver its result) and the hooks only it can implement,
``pause`` (wait, unless the event's source went away meanwhile) and ``give_up`` (what giving
up means for its source: skip it, produce it to a dead-letter topic). The policy decides what a
failure means: try again after an exponential backoff, up to ``max_retries`` times, then give
up; ``on_failure="block"`` tries for ever (the source waits).

Nothing here knows Kafka: a cron or queue trigger wraps its dispatch the same way. The Kafka
trigger calls it for events that take the one-at-a-time path; its direct path (a chunk of
events on the consumer thread) does not come here until an event fails.
"""

from __future__ import annotations

import logging
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import NamedTuple

from tickrun.functions.errors import (
    EventTimeoutError,
    HandlerFailure,
    HandlerStatusError,
    TickrunError,
    TriggerError,
    WorkerUnavailableError,
)

logger = logging.getLogger(__name__)

MAX_ERROR_CHARS = 1000

RETRIED: tuple[type[BaseException], ...] = (
    HandlerFailure,
    EventTimeoutError,
    TriggerError,
    HandlerStatusError,
)
"""Failures of one event. :class:`WorkerUnavailableError` is not one: every slot was busy
(backpressure), so the policy waits for a slot without counting an attempt."""

Pause = Callable[[float], Awaitable[bool]]
"""Sleep that long unless the event's source went away first (then True: stop trying)."""


def error_text(exc: BaseException) -> str:
    """The failure as logs and dead-letter records show it: the handler's exception type and
    message (never a traceback), bounded."""
    if isinstance(exc, HandlerFailure) and exc.__cause__ is not None:
        cause = exc.__cause__
        text = f"{type(cause).__name__}: {cause}"
    elif isinstance(exc, TickrunError):
        text = exc.message
    else:
        text = str(exc)
    return text[:MAX_ERROR_CHARS]


class RetryOutcome(NamedTuple):
    settled: bool
    """True: handled, or given up by policy. False: abandoned (the source went away)."""
    attempts: int
    """Tries counted so far: where to resume if the same event comes back (a rebalance)."""


@dataclass(frozen=True, slots=True)
class RetryPolicy:
    max_retries: int
    backoff_s: float
    backoff_max_s: float
    on_failure: str  # "dead-letter" | "skip" | "block"
    kind: str = "trigger"  # for the log line

    def delay_s(self, attempt: int) -> float:
        """Backoff after failed attempt ``attempt`` (1-based): doubled each time, capped."""
        # The exponent is capped too: a blocked event retries without end, and 2**1024 no
        # longer converts to a float.
        return float(min(self.backoff_s * 2.0 ** min(attempt - 1, 64), self.backoff_max_s))

    async def run(
        self,
        attempt_once: Callable[[], Awaitable[object]],
        *,
        event_id: str,
        trigger: str,
        pause: Pause,
        closed: Callable[[], bool],
        give_up: Callable[[BaseException, int], Awaitable[bool]],
        attempts: int = 0,
        first_failure: BaseException | None = None,
        failed: Callable[[], object] | None = None,
    ) -> RetryOutcome:
        """Try until the event is handled, given up, or abandoned.

        ``attempts``: tries made earlier (by this process, before a revoke); ``first_failure``:
        the event already failed once elsewhere (e.g. in a batch), which counts as a try;
        ``failed``: called on each failed try (a metric).
        """
        attempt = attempts
        while True:
            attempt += 1
            try:
                if first_failure is not None:
                    exc, first_failure = first_failure, None
                    raise exc
                await attempt_once()
            except WorkerUnavailableError:
                attempt -= 1
                if closed():
                    return RetryOutcome(False, attempt)
                continue
            except RETRIED as exc:
                if failed is not None:
                    failed()
                if self.on_failure == "block" or attempt <= self.max_retries:
                    delay = self.delay_s(attempt)
                    logger.warning(
                        "%s event failed; retrying",
                        self.kind,
                        extra={
                            "trigger": trigger,
                            "event_id": event_id,
                            "attempt": attempt,
                            "retry_in_s": delay,
                            "error": error_text(exc),
                        },
                    )
                    if await pause(delay):
                        return RetryOutcome(False, attempt)
                    continue
                return RetryOutcome(await give_up(exc, attempt), attempt)
            return RetryOutcome(True, attempt)
