"""Retrying a step: a policy object wrapping one step execution (middleware), with backoff.

Each attempt is a tracked run of its own (label ``tickrun.pipeline-attempt``); the outcome
counts the attempts and keeps their run uids. A step refused before it ran (a 400: bad target,
bad parameter) is not retried: it would fail the same way.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from dataclasses import dataclass, field

from ..errors import TickrunError
from .steps import ATTEMPT_LABEL, ERROR, Call, Outcome, StepCall

logger = logging.getLogger(__name__)


@dataclass(frozen=True)
class RetryPolicy:
    """Up to ``retries`` more attempts after a failure, waiting ``backoff_s * factor**(n-1)``
    (capped at ``max_backoff_s``) before attempt ``n + 1``."""

    retries: int = 0
    backoff_s: float = 1.0
    factor: float = 2.0
    max_backoff_s: float = 300.0
    sleep: Callable[[float], None] = field(default=time.sleep, repr=False, compare=False)

    def delay(self, failed_attempts: int) -> float:
        return float(min(self.max_backoff_s, self.backoff_s * self.factor ** (failed_attempts - 1)))

    def wrap(self, call: Call) -> Call:
        def with_retries(job: StepCall) -> Outcome:
            uids: list[str] = []
            attempt = 0
            while True:
                attempt += 1
                job.attempt = attempt
                job.labels[ATTEMPT_LABEL] = str(attempt)
                try:
                    outcome = call(job)
                except TickrunError as exc:
                    if exc.status < 500:  # refused as asked: another attempt gets the same
                        return Outcome(
                            ERROR, error=exc.message, attempts=attempt, attempt_uids=uids
                        )
                    outcome = Outcome(ERROR, error=exc.message)
                if outcome.run_uid:
                    uids.append(outcome.run_uid)
                outcome.attempts = attempt
                outcome.attempt_uids = list(uids)
                if outcome.ok or attempt > self.retries:
                    return outcome
                wait = self.delay(attempt)
                logger.warning(
                    "pipeline step failed, retrying",
                    extra={
                        "step": job.step.name,
                        "attempt": attempt,
                        "retries": self.retries,
                        "wait_s": wait,
                        "error": outcome.error,
                    },
                )
                self.sleep(wait)

        return with_retries


__all__ = ["RetryPolicy"]
