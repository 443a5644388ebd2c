"""The retry policy around a dispatcher call, with no Kafka: what any trigger kind gets."""

from __future__ import annotations

import pytest

from tickrun.functions.errors import (
    EventTimeoutError,
    HandlerFailure,
    HandlerStatusError,
    WorkerUnavailableError,
)
from tickrun.triggers.retry import RetryOutcome, RetryPolicy, error_text


class Source:
    """A trigger's side of the policy: what it records when asked to wait or give up."""

    def __init__(self, *, gone_after_pauses: int | None = None, give_up_result: bool = True):
        self.pauses: list[float] = []
        self.given_up: list[tuple[str, int]] = []
        self.failures = 0
        self._gone_after = gone_after_pauses
        self._give_up_result = give_up_result

    async def pause(self, delay_s: float) -> bool:
        self.pauses.append(delay_s)
        return self._gone_after is not None and len(self.pauses) >= self._gone_after

    def closed(self) -> bool:
        return self._gone_after is not None and len(self.pauses) >= self._gone_after

    async def give_up(self, exc: BaseException, attempts: int) -> bool:
        self.given_up.append((error_text(exc), attempts))
        return self._give_up_result

    def failed(self) -> None:
        self.failures += 1


def flaky(failures: list[BaseException]):  # type: ignore[no-untyped-def]
    calls: list[int] = []

    async def attempt_once() -> None:
        calls.append(1)
        if failures:
            raise failures.pop(0)

    return attempt_once, calls


def policy(on_failure: str = "dead-letter", max_retries: int = 3) -> RetryPolicy:
    return RetryPolicy(max_retries, 0.1, 0.25, on_failure, kind="cron")


async def run(p: RetryPolicy, source: Source, attempt_once, **kw):  # type: ignore[no-untyped-def]
    return await p.run(
        attempt_once,
        event_id="e1",
        trigger="t",
        pause=source.pause,
        closed=source.closed,
        give_up=source.give_up,
        failed=source.failed,
        **kw,
    )


def boom() -> HandlerFailure:
    """As the dispatcher raises it: the handler's exception chained as the cause."""
    try:
        try:
            raise ValueError("bad tick")
        except ValueError as exc:
            raise HandlerFailure(exc, "e1") from exc
    except HandlerFailure as failure:
        return failure


async def test_retries_with_capped_exponential_backoff_until_handled() -> None:
    source = Source()
    attempt_once, calls = flaky([boom(), EventTimeoutError("slow"), HandlerStatusError(503)])
    outcome = await run(policy(), source, attempt_once)
    assert outcome == RetryOutcome(True, 4)
    assert len(calls) == 4 and source.failures == 3
    assert source.pauses == [0.1, 0.2, 0.25]
    assert source.given_up == []


async def test_gives_up_after_max_retries_with_the_handlers_error() -> None:
    source = Source(give_up_result=True)
    attempt_once, calls = flaky([boom() for _ in range(10)])
    outcome = await run(policy(max_retries=2), source, attempt_once)
    assert outcome == RetryOutcome(True, 3)
    assert len(calls) == 3
    assert source.given_up == [("ValueError: bad tick", 3)]


async def test_block_keeps_trying_until_the_source_goes_away() -> None:
    source = Source(gone_after_pauses=6)
    attempt_once, calls = flaky([boom() for _ in range(100)])
    outcome = await run(policy("block", max_retries=1), source, attempt_once)
    assert outcome == RetryOutcome(False, 6)  # abandoned: the caller remembers 6 tries
    assert len(calls) == 6 and source.given_up == []


async def test_busy_slots_are_waited_out_not_counted() -> None:
    source = Source()
    attempt_once, calls = flaky([WorkerUnavailableError("busy"), WorkerUnavailableError("busy")])
    outcome = await run(policy(), source, attempt_once, attempts=2)
    assert outcome == RetryOutcome(True, 3)
    assert len(calls) == 3 and source.failures == 0 and source.pauses == []


async def test_a_failure_from_elsewhere_counts_as_the_first_try() -> None:
    source = Source()
    attempt_once, calls = flaky([])
    outcome = await run(policy(max_retries=0), source, attempt_once, first_failure=boom())
    assert outcome == RetryOutcome(True, 1)
    assert calls == [] and source.given_up == [("ValueError: bad tick", 1)]


async def test_errors_that_are_not_event_failures_propagate() -> None:
    source = Source()
    attempt_once, _ = flaky([RuntimeError("a bug in the trigger")])
    with pytest.raises(RuntimeError):
        await run(policy(), source, attempt_once)


def test_backoff_stays_capped_however_many_attempts() -> None:
    # A blocked event (or a dead-letter topic out of reach) retries without end.
    p = policy()
    assert p.delay_s(1) == 0.1
    assert p.delay_s(3) == 0.25
    assert p.delay_s(5000) == 0.25
    assert RetryPolicy(0, 0.0, 5.0, "block").delay_s(5000) == 0.0
