"""The dispatcher's batch path for sync handlers: order, stop at the first failure, timeouts."""

from __future__ import annotations

import asyncio
import threading
import time
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import nuclio_sdk
import pytest

from tests.support.kafka_units import real_dispatcher
from tickrun.functions.errors import EventTimeoutError, HandlerFailure
from tickrun.functions.processor.dispatcher import TriggerDispatcher


def events(n: int) -> list[nuclio_sdk.Event]:
    return [nuclio_sdk.Event(body=i, _id=f"e{i}") for i in range(n)]


@pytest.fixture
def executor() -> Iterator[ThreadPoolExecutor]:
    pool = ThreadPoolExecutor(2)
    yield pool
    pool.shutdown(wait=True)


def dispatcher(
    fn: Any, executor: ThreadPoolExecutor, timeout_s: float | None = None
) -> TriggerDispatcher:
    return real_dispatcher(fn, executor, timeout_s=timeout_s)


async def test_runs_all_in_order(executor: ThreadPoolExecutor) -> None:
    seen: list[int] = []

    def handler(context: Any, event: Any) -> Any:
        seen.append(event.body)
        return {"n": event.body}

    d = dispatcher(handler, executor)
    assert d.batches
    outcome = await d.dispatch_batch(events(50))
    assert outcome.error is None
    assert seen == list(range(50))
    assert [r.json()["n"] for r in outcome.results] == list(range(50))
    assert d.in_flight == 0


async def test_stops_at_the_first_exception(executor: ThreadPoolExecutor) -> None:
    seen: list[int] = []

    def handler(context: Any, event: Any) -> Any:
        seen.append(event.body)
        if event.body == 3:
            raise ValueError("boom")
        return "ok"

    outcome = await dispatcher(handler, executor).dispatch_batch(events(10))
    assert len(outcome.results) == 3
    assert isinstance(outcome.error, HandlerFailure)
    assert outcome.error.event_id == "e3"
    assert seen == [0, 1, 2, 3]  # nothing after the failed event ran


async def test_stops_after_a_5xx_answer(executor: ThreadPoolExecutor) -> None:
    def handler(context: Any, event: Any) -> Any:
        return (503, "later") if event.body == 2 else "ok"

    outcome = await dispatcher(handler, executor).dispatch_batch(events(6))
    assert [r.status for r in outcome.results] == [200, 200, 503]
    assert outcome.error is None


async def test_event_over_the_timeout_fails_that_event(executor: ThreadPoolExecutor) -> None:
    def handler(context: Any, event: Any) -> Any:
        if event.body == 1:
            time.sleep(0.3)
        return "ok"

    outcome = await dispatcher(handler, executor, timeout_s=0.1).dispatch_batch(events(4))
    assert len(outcome.results) == 1
    assert isinstance(outcome.error, EventTimeoutError)


async def test_should_stop_halts_between_events(executor: ThreadPoolExecutor) -> None:
    seen: list[int] = []
    stop = {"now": False}

    def handler(context: Any, event: Any) -> Any:
        seen.append(event.body)
        if event.body == 4:
            stop["now"] = True
        return "ok"

    outcome = await dispatcher(handler, executor).dispatch_batch(events(20), lambda: stop["now"])
    assert seen == [0, 1, 2, 3, 4]
    assert len(outcome.results) == 5 and outcome.error is None


async def test_a_hung_event_is_noticed_after_its_own_timeout(executor: ThreadPoolExecutor) -> None:
    release = {"go": False}

    def handler(context: Any, event: Any) -> Any:
        if event.body == 2:
            deadline = time.monotonic() + 5
            while not release["go"] and time.monotonic() < deadline:
                time.sleep(0.01)
        return "ok"

    d = dispatcher(handler, executor, timeout_s=0.2)
    started = time.monotonic()
    outcome = await d.dispatch_batch(events(60))
    waited = time.monotonic() - started
    release["go"] = True
    # One event timeout (plus slack), not the 61 timeouts a whole-batch bound would allow.
    assert waited < 1.5
    assert len(outcome.results) == 2
    assert isinstance(outcome.error, EventTimeoutError)


async def test_run_here_runs_on_the_calling_thread_like_a_batch(
    executor: ThreadPoolExecutor,
) -> None:
    threads: set[str] = set()

    def handler(context: Any, event: Any) -> Any:
        threads.add(threading.current_thread().name)
        if event.body == 3:
            raise ValueError("boom")
        return {"n": event.body}

    d = dispatcher(handler, executor)
    outcome = await asyncio.to_thread(d.run_here, events(10))
    assert [r.json()["n"] for r in outcome.results] == [0, 1, 2]
    assert isinstance(outcome.error, HandlerFailure)
    assert outcome.error.event_id == "e3"
    assert len(threads) == 1 and not next(iter(threads)).startswith("ThreadPoolExecutor")
    assert d.in_flight == 0


async def test_watch_here_replaces_the_worker_when_a_direct_event_hangs(
    executor: ThreadPoolExecutor,
) -> None:
    release = threading.Event()
    stuck: list[float] = []

    def handler(context: Any, event: Any) -> Any:
        if event.body == 1:
            release.wait(5)
        return "ok"

    d = dispatcher(handler, executor, timeout_s=0.2)
    d._on_stuck = lambda: stuck.append(time.monotonic())
    watch = asyncio.get_running_loop().create_task(d.watch_here())
    started = time.monotonic()
    running = asyncio.get_running_loop().run_in_executor(None, d.run_here, events(5))
    async with asyncio.timeout(3):
        while not stuck:  # noqa: ASYNC110 - set by the watchdog under test
            await asyncio.sleep(0.01)
    assert stuck[0] - started < 1.5, "noticed after about one event timeout"
    release.set()
    outcome = await running
    await watch
    assert len(outcome.results) == 1, "the hung event and those after it have no result"
    assert isinstance(outcome.error, EventTimeoutError)


def _held_at(body: int, release: threading.Event, entered: threading.Event) -> Any:
    def handler(context: Any, event: Any) -> Any:
        if event.body == body:
            entered.set()
            release.wait(5)
        return {"n": event.body}

    return handler


async def test_adopt_here_takes_a_running_batch_over_with_its_slot(
    executor: ThreadPoolExecutor,
) -> None:
    release, entered = threading.Event(), threading.Event()
    d = dispatcher(_held_at(1, release, entered), executor)
    assert d.adopt_here() is None and d.here_running_s() == 0.0, "nothing runs"
    running = asyncio.get_running_loop().run_in_executor(None, d.run_here, events(4))
    assert await asyncio.to_thread(entered.wait, 5)
    assert d.here_running_s() > 0.0
    adopted = d.adopt_here()
    assert adopted is not None
    assert d.adopt_here() is None, "taken over once"
    assert d._free == 0, "the batch holds the slot now"
    release.set()
    assert await running is None, "the thread finished the batch; the outcome is the adopter's"
    outcome = await adopted
    assert outcome.error is None
    assert [r.json()["n"] for r in outcome.results] == [0, 1, 2, 3]
    assert d._free == 1 and d.in_flight == 0


async def test_an_adopted_event_past_the_timeout_keeps_its_slot_until_it_returns(
    executor: ThreadPoolExecutor,
) -> None:
    release, entered = threading.Event(), threading.Event()
    d = real_dispatcher(_held_at(1, release, entered), executor, timeout_s=0.2, slots=2)
    stuck: list[int] = []
    d._on_stuck = lambda: stuck.append(1)
    watch = asyncio.get_running_loop().create_task(d.watch_here())
    running = asyncio.get_running_loop().run_in_executor(None, d.run_here, events(4))
    assert await asyncio.to_thread(entered.wait, 5)
    adopted = d.adopt_here()
    assert adopted is not None
    outcome = await adopted
    assert [r.json()["n"] for r in outcome.results] == [0]
    assert isinstance(outcome.error, EventTimeoutError)
    await asyncio.sleep(0.3)
    assert not stuck, "watch_here leaves an adopted batch alone; one overdue slot of two"
    assert d._free == 1, "its slot stays taken while the thread runs"
    release.set()
    assert await running is None
    async with asyncio.timeout(5):
        while d._free != 2:  # noqa: ASYNC110 - released by a callback of the thread's end
            await asyncio.sleep(0.01)
    assert d.in_flight == 0
    watch.cancel()


async def test_async_handlers_batch_in_one_slot_and_stop_at_the_first_failure(
    executor: ThreadPoolExecutor,
) -> None:
    seen: list[int] = []

    async def handler(context: Any, event: Any) -> Any:
        seen.append(event.body)
        await asyncio.sleep(0)
        if event.body == 4:
            raise ValueError("boom")
        return None if event.body % 2 else {"n": event.body}

    d = dispatcher(handler, executor)
    assert d.batches and not d.sync
    outcome = await d.dispatch_batch(events(10))
    assert seen == [0, 1, 2, 3, 4]
    assert [r.value for r in outcome.results] == [{"n": 0}, None, {"n": 2}, None]
    assert isinstance(outcome.error, HandlerFailure)
    assert outcome.error.event_id == "e4"
    assert d.in_flight == 0
    with pytest.raises(TypeError):
        d.run_here(events(1))


async def test_async_batch_times_out_the_slow_event_only(executor: ThreadPoolExecutor) -> None:
    async def handler(context: Any, event: Any) -> Any:
        if event.body == 2:
            await asyncio.sleep(1)
        return "ok"

    d = dispatcher(handler, executor, timeout_s=0.1)
    started = time.monotonic()
    outcome = await d.dispatch_batch(events(5), lambda: False)
    assert time.monotonic() - started < 0.8
    assert len(outcome.results) == 2
    assert isinstance(outcome.error, EventTimeoutError)
