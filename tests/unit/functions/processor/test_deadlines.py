"""One loop timer for a dispatcher's async event timeouts: each call times out after its own
timeout, as ``asyncio.timeout`` would, and only that call."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import pytest

from tickrun.functions.errors import EventTimeoutError
from tickrun.functions.processor.deadlines import Deadlines
from tickrun.functions.processor.dispatcher import TriggerDispatcher

from ....support.kafka_units import real_dispatcher


@pytest.fixture
def executor() -> Iterator[ThreadPoolExecutor]:
    with ThreadPoolExecutor(2) as pool:
        yield pool


async def timed(deadlines: Deadlines, work: Any) -> str:
    """``work()`` under the deadline, the way the dispatcher awaits a handler."""
    call = deadlines.enter()
    try:
        return str(await work())
    except asyncio.CancelledError:
        if deadlines.expired(call):
            return "timed out"
        raise
    finally:
        deadlines.leave(call)


def sleeper(seconds: float, answer: str = "ok") -> Any:
    async def work() -> str:
        await asyncio.sleep(seconds)
        return answer

    return work


async def test_only_the_slow_call_times_out_each_after_its_own_timeout() -> None:
    deadlines = Deadlines(0.2)
    started = time.monotonic()
    done: dict[str, float] = {}

    async def one(name: str, delay_s: float, work_s: float) -> str:
        await asyncio.sleep(delay_s)
        out = await timed(deadlines, sleeper(work_s))
        done[name] = time.monotonic() - started
        return out

    # "late" starts after "quick" ended: the timer set for quick's deadline must not take it
    outs = await asyncio.gather(
        one("quick", 0.0, 0.01), one("late", 0.15, 1.0), one("ok", 0.05, 0.1)
    )
    assert outs == ["ok", "timed out", "ok"]
    assert 0.15 + 0.2 <= done["late"] < 0.15 + 0.2 + 0.15  # its own deadline, not quick's
    assert not deadlines._calls and not deadlines._fired


async def test_a_call_after_a_timeout_runs_in_full_and_the_task_is_not_left_cancelled() -> None:
    deadlines = Deadlines(0.05)
    assert await timed(deadlines, sleeper(1.0)) == "timed out"
    task = asyncio.current_task()
    assert task is not None and task.cancelling() == 0
    assert await timed(deadlines, sleeper(0.01, "again")) == "again"
    await asyncio.sleep(0.1)  # no cancellation left pending for this task


async def test_a_cancellation_of_someone_elses_stays_a_cancellation() -> None:
    deadlines = Deadlines(0.05)

    async def both() -> str:
        task = asyncio.current_task()
        assert task is not None
        # the server cancels the request's task just as its timeout fires
        asyncio.get_running_loop().call_later(0.05, task.cancel)
        return await timed(deadlines, sleeper(1.0))

    with pytest.raises(asyncio.CancelledError):
        await asyncio.create_task(both())
    assert not deadlines._fired


async def test_a_handler_that_swallows_the_cancellation_keeps_its_answer() -> None:
    deadlines = Deadlines(0.05)

    async def stubborn() -> str:
        try:
            await asyncio.sleep(1.0)
        except asyncio.CancelledError:
            return "finished anyway"
        return "ok"

    assert await timed(deadlines, stubborn) == "finished anyway"
    task = asyncio.current_task()
    assert task is not None and task.cancelling() == 0
    assert not deadlines._fired


async def test_many_calls_share_one_timer() -> None:
    deadlines = Deadlines(0.5)
    armed: list[float] = []
    loop = asyncio.get_running_loop()
    call_at = loop.call_at

    def counting_call_at(when: float, callback: Any, *args: Any) -> asyncio.TimerHandle:
        armed.append(when)
        return call_at(when, callback, *args)

    loop.call_at = counting_call_at  # type: ignore[method-assign]
    try:
        assert (
            await asyncio.gather(*(timed(deadlines, sleeper(0)) for _ in range(200)))
            == ["ok"] * 200
        )
    finally:
        del loop.call_at
    assert len(armed) == 1


async def test_the_dispatcher_answers_an_async_event_past_its_timeout_with_504(
    executor: ThreadPoolExecutor,
) -> None:
    async def handler(context: Any, event: Any) -> str:
        await asyncio.sleep(float(event))
        return "done"

    dispatcher: TriggerDispatcher = real_dispatcher(handler, executor, timeout_s=0.1, slots=4)
    fast = [dispatcher.dispatch(0.01) for _ in range(3)]
    results = await asyncio.gather(*fast, dispatcher.dispatch(5.0), return_exceptions=True)
    assert [r.body for r in results[:3]] == [b"done"] * 3  # type: ignore[union-attr]
    assert isinstance(results[3], EventTimeoutError)
    assert results[3].status == 504
    assert dispatcher.in_flight == 0
