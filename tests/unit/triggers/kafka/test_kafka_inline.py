"""Several slots and a sync handler: a fast handler runs on the consumer thread while the pool
is idle (:mod:`tickrun.triggers.kafka.inline`); a slow one keeps the pool. The real dispatcher
and trigger; the consumer thread is a plain thread here (tests/integration/test_kafka_*.py run
the trigger against real Kafka)."""

from __future__ import annotations

import asyncio
import inspect
import threading
import time
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import pytest
from kafka.structs import TopicPartition

from tests.support.kafka_units import Record, unstarted_trigger
from tickrun.functions.handler import LoadedHandler
from tickrun.functions.processor.dispatcher import TriggerDispatcher
from tickrun.triggers.kafka import KafkaTrigger, inline, loop
from tickrun.triggers.kafka.inline import InlineGate

SLOTS = 4


class FakeConsumerThread:
    """The calls the trigger makes on its consumer thread."""

    def __init__(self) -> None:
        self.rejoin = False

    def wake(self) -> None:
        pass

    def rejoin_pending(self) -> bool:
        return self.rejoin

    def commit_if_due(self) -> None:
        pass


@pytest.fixture
def pool() -> Iterator[ThreadPoolExecutor]:
    executor = ThreadPoolExecutor(SLOTS, thread_name_prefix="handler")
    yield executor
    executor.shutdown(wait=True)


def make_trigger(handler: Callable[[Any], Any], pool: ThreadPoolExecutor) -> KafkaTrigger:
    """What KafkaTrigger.start() sets up for a sync handler with SLOTS slots."""
    trigger = unstarted_trigger(SLOTS)

    def fn(context: Any, event: Any) -> Any:
        return handler(event)

    trigger.dispatcher = TriggerDispatcher(
        handler=LoadedHandler(
            fn=fn,
            is_async=inspect.iscoroutinefunction(fn),
            init_context=None,
            module_name="m",
            entrypoint="h",
        ),
        context=object(),
        function_name="f",
        trigger_name="ticks",
        trigger_kind="kafka-cluster",
        slots=SLOTS,
        availability_timeout_s=5.0,
        event_timeout_s=None,
        executor=pool,
    )
    trigger.direct_path.gate = InlineGate()
    trigger.thread = FakeConsumerThread()  # type: ignore[assignment]
    return trigger


def records(partition: int, offsets: range) -> list[Record]:
    return [Record("t", partition, o, 1_700_000_000_000 + o, None, b"{}", []) for o in offsets]


async def poll(trigger: KafkaTrigger, batch: dict[TopicPartition, list[Record]]) -> str:
    """What the consumer thread does with a poll's records; returns that thread's name."""
    for tp, recs in batch.items():
        trigger.book.add(tp, [r.offset for r in recs])
    name = ""

    def consumer_side() -> None:
        nonlocal name
        name = threading.current_thread().name
        trigger.on_records(batch)

    await asyncio.to_thread(consumer_side)
    return name


async def until(cond: Callable[[], bool], timeout_s: float = 10.0) -> None:
    async with asyncio.timeout(timeout_s):
        while not cond():  # noqa: ASYNC110 - polling state owned by the code under test
            await asyncio.sleep(0.005)


async def test_a_fast_handler_runs_on_the_polling_thread_while_the_pool_is_idle(
    pool: ThreadPoolExecutor,
) -> None:
    seen: list[tuple[int, int, str]] = []

    def handler(event: Any) -> None:
        seen.append((event.shard_id, event.offset, threading.current_thread().name))

    trigger = make_trigger(handler, pool)
    tp0, tp1 = TopicPartition("t", 0), TopicPartition("t", 1)
    n = 300
    polling = await poll(trigger, {tp0: records(0, range(n)), tp1: records(1, range(n))})
    # Everything ran before on_records returned, on the polling thread, in order.
    assert len(seen) == 2 * n
    assert {name for *_, name in seen} == {polling}
    for p in (0, 1):
        assert [o for q, o, _ in seen if q == p] == list(range(n))
    assert trigger.book.to_commit() == {tp0: n, tp1: n}
    assert trigger.loop_path.parts == {}, "the pool was never involved"
    gate = trigger.direct_path.gate
    assert gate is not None and gate.fast


async def test_a_slow_handler_goes_to_the_pool_after_two_probe_chunks(
    pool: ThreadPoolExecutor,
) -> None:
    seen: list[tuple[int, int, str]] = []
    lock = threading.Lock()

    def handler(event: Any) -> None:
        time.sleep(0.002)  # 40x the inline limit per event: I/O the pool overlaps
        with lock:
            seen.append((event.shard_id, event.offset, threading.current_thread().name))

    trigger = make_trigger(handler, pool)
    tps = [TopicPartition("t", p) for p in range(SLOTS)]
    n = 40
    polling = await poll(trigger, {tp: records(tp.partition, range(n)) for tp in tps})
    probes = 2 * inline.PROBE_EVENTS
    # Two probe chunks ran inline, then on_records returned with the rest handed over.
    await until(lambda: len(seen) == SLOTS * n)
    assert [name for *_, name in seen[:probes]] == [polling] * probes
    assert polling not in {name for *_, name in seen[probes:]}
    pooled = {name for *_, name in seen[probes:]}
    assert pooled and all(name.startswith("handler") for name in pooled)
    assert len(pooled) > 1, "partitions ran on several handler threads at once"
    for tp in tps:
        assert [o for q, o, _ in seen if q == tp.partition] == list(range(n)), "order kept"
    await until(lambda: trigger.book.to_commit() == dict.fromkeys(tps, n))
    gate = trigger.direct_path.gate
    assert gate is not None and not gate.fast and not gate.allows()
    # The next poll goes straight to the pool: no inline probe before the retry is due.
    before = len(seen)
    polling = await poll(trigger, {tps[0]: records(0, range(n, n + 10))})
    await until(lambda: len(seen) == before + 10)
    assert polling not in {name for *_, name in seen[before:]}
    trigger.loop_path.close_all()


def test_the_gate_needs_two_slow_chunks_and_backs_off_while_slow(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    now = [100.0]
    monkeypatch.setattr(inline.time, "monotonic", lambda: now[0])
    gate = InlineGate()
    assert gate.allows() and gate.chunk() == inline.PROBE_EVENTS
    slow = inline.MAX_EVENT_S * 10
    fast = inline.MAX_EVENT_S / 10
    assert gate.observe(slow * 8, 8), "one slow chunk (a descheduled thread?) proves nothing"
    assert gate.observe(fast * 8, 8) and gate.fast, "the faster of the two decides"
    assert gate.chunk() == inline.BATCH_MAX_EVENTS
    assert gate.observe(slow * 256, 256), "one slow chunk while fast: still the faster"
    assert not gate.observe(slow * 256, 256), "two in a row: the pool"
    assert not gate.allows() and not gate.retry_due()
    now[0] += inline.RETRY_S
    assert gate.allows() and gate.retry_due() and gate.chunk() == inline.PROBE_EVENTS
    assert not gate.observe(slow * 8, 8), "still slow: back to the pool"
    now[0] += inline.RETRY_S
    assert not gate.allows(), "the wait doubled"
    now[0] += inline.RETRY_S
    assert gate.retry_due()
    gate.put_off()
    assert not gate.allows()
    now[0] += inline.RETRY_S
    assert gate.observe(fast * 8, 8) and gate.fast, "fast again: inline again"
    assert gate.backoff_s == inline.RETRY_S


async def test_a_due_retry_waits_for_the_pool_to_drain_then_runs_inline(
    pool: ThreadPoolExecutor, monkeypatch: pytest.MonkeyPatch
) -> None:
    slow = threading.Event()
    slow.set()
    seen: list[tuple[int, int, str]] = []
    lock = threading.Lock()

    def handler(event: Any) -> None:
        if slow.is_set():
            time.sleep(0.002)
        with lock:
            seen.append((event.shard_id, event.offset, threading.current_thread().name))

    trigger = make_trigger(handler, pool)
    tp = TopicPartition("t", 0)
    await poll(trigger, {tp: records(0, range(100))})  # probes, then the pool
    gate = trigger.direct_path.gate
    assert gate is not None and not gate.fast
    slow.clear()  # the handler got fast; the pool still holds most of the first poll
    gate.retry_at = 0.0
    polling = await poll(trigger, {tp: records(0, range(100, 150))})
    # on_records waited until the pool had done the first poll, then ran this one itself.
    assert len(seen) == 150
    assert [o for _, o, _ in seen] == list(range(150))
    assert {name for *_, name in seen[100:]} == {polling}
    assert gate.fast
    trigger.loop_path.close_all()


async def test_a_partition_a_commit_window_ahead_waits_for_the_commit_answer(
    pool: ThreadPoolExecutor, monkeypatch: pytest.MonkeyPatch
) -> None:
    # The fallback re-check is put out of reach: only the commit's answer can wake it.
    monkeypatch.setattr(loop, "COMMIT_WAKE_FALLBACK_S", 60.0)
    seen: list[int] = []

    def handler(event: Any) -> None:
        seen.append(event.offset)

    trigger = make_trigger(handler, pool)
    trigger.direct_path.gate = None  # the pool path, whose partitions wait for commits
    tp = TopicPartition("t", 0)
    limit = 2 * trigger.config.commit_batch_size
    n = limit + 100
    await poll(trigger, {tp: records(0, range(n))})
    await until(lambda: len(seen) == limit and bool(trigger.loop_path.commit_waiters))
    await asyncio.sleep(0.05)
    assert len(seen) == limit, "a crash never redoes more than two commit windows"
    # What the consumer thread does when the broker answers a commit.
    trigger.book.committed(trigger.book.to_commit())
    trigger.on_committed()
    await until(lambda: len(seen) == n)
    assert seen == list(range(n))
    assert not trigger.loop_path.commit_waiters
    trigger.loop_path.close_all()


async def test_the_inline_path_for_several_slots_is_opt_in() -> None:
    assert not unstarted_trigger(SLOTS).config.inline_fast_handler
    assert unstarted_trigger(SLOTS, inlineFastHandler=True).config.inline_fast_handler
