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
from tickrun.triggers.kafka import trigger as trigger_mod
from tickrun.triggers.kafka.inline import InlineGate
from tickrun.triggers.kafka.thread import ConsumerMoved

SLOTS = 4


class FakeConsumerThread:
    """The calls the trigger makes on its consumer thread."""

    def __init__(self) -> None:
        self.rejoin = False
        self.movable = True  # the clients set it around their last delivery of a round
        self.moved = 0

    def move_on(self) -> None:
        self.movable = False
        self.moved += 1

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


def make_trigger(
    handler: Callable[[Any], Any],
    pool: ThreadPoolExecutor,
    *,
    event_timeout_s: float | None = None,
    on_stuck: Callable[[], None] | None = None,
) -> KafkaTrigger:
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
        event_timeout_s=event_timeout_s,
        executor=pool,
        on_stuck=on_stuck,
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


def poll_on_thread(
    trigger: KafkaTrigger, batch: dict[TopicPartition, list[Record]]
) -> tuple[threading.Thread, list[BaseException]]:
    """:func:`poll` on a thread of its own (it may block in a handler); what it raised."""
    for tp, recs in batch.items():
        trigger.book.add(tp, [r.offset for r in recs])
    raised: list[BaseException] = []

    def consumer_side() -> None:
        try:
            trigger.on_records(batch)
        except BaseException as exc:  # ConsumerMoved after a take-over
            raised.append(exc)

    thread = threading.Thread(target=consumer_side, name="polling")
    thread.start()
    return thread, raised


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
    assert not gate.allows(), "a retry put off (the pool did not drain) backs off too"
    assert gate.backoff_s == 8 * inline.RETRY_S
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


async def test_the_inline_path_for_several_slots_is_on_by_default() -> None:
    assert unstarted_trigger(SLOTS).config.inline_fast_handler
    assert not unstarted_trigger(SLOTS, inlineFastHandler=False).config.inline_fast_handler


async def ended_taken_over(
    trigger: KafkaTrigger,
    polling: threading.Thread,
    raised: list[BaseException],
    watch: asyncio.Task[None],
) -> None:
    """After a take-over and the hung event's end: the old polling thread ended without
    polling again, every slot is free, nothing is in flight."""
    polling.join(10)
    assert raised and isinstance(raised[0], ConsumerMoved), "it ended without polling again"
    dispatcher = trigger.dispatcher
    assert isinstance(dispatcher, TriggerDispatcher)
    await until(lambda: dispatcher.in_flight == 0 and dispatcher._free == SLOTS)
    watch.cancel()
    trigger.loop_path.close_all()


async def test_an_event_running_long_inline_is_taken_over_and_holds_one_slot(
    pool: ThreadPoolExecutor, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(trigger_mod, "TAKEOVER_S", 0.05)
    release = threading.Event()
    seen: list[tuple[int, int, str]] = []
    lock = threading.Lock()

    def handler(event: Any) -> None:
        if (event.shard_id, event.offset) == (0, 5):
            release.wait(30)
        with lock:
            seen.append((event.shard_id, event.offset, threading.current_thread().name))

    trigger = make_trigger(handler, pool)
    thread = trigger.thread
    assert isinstance(thread, FakeConsumerThread)
    dispatcher = trigger.dispatcher
    assert isinstance(dispatcher, TriggerDispatcher)
    watch = asyncio.get_running_loop().create_task(trigger._watch_takeovers())
    tp0, tp1 = TopicPartition("t", 0), TopicPartition("t", 1)
    n = 40
    polling, raised = poll_on_thread(
        trigger, {tp0: records(0, range(n)), tp1: records(1, range(n))}
    )
    try:
        # Partition 1 and the rest of the poll go on while offset 5 of partition 0 hangs.
        await until(lambda: sum(1 for q, *_ in seen if q == 1) == n)
        assert thread.moved == 1, "polling moved to a new thread"
        assert [o for q, o, _ in seen if q == 0] == [0, 1, 2, 3, 4], "nothing after the hang"
        late = {name for q, o, name in seen if q == 1 and o >= inline.PROBE_EVENTS}
        assert late and all(name.startswith("handler") for name in late), "on the pool"
        assert polling.is_alive(), "the old thread is still in the handler"
        assert dispatcher.in_flight >= 1
    finally:
        release.set()
    await until(lambda: trigger.book.to_commit() == {tp0: n, tp1: n})
    await ended_taken_over(trigger, polling, raised, watch)
    assert [o for q, o, _ in seen if q == 0] == list(range(n)), "order kept"
    assert sum(1 for q, o, _ in seen if q == 0 and o == 5) == 1, "the event ran once"
    gate = trigger.direct_path.gate
    assert gate is not None and not gate.allows(), "the pool takes the handler for a while"


async def test_a_taken_over_event_past_the_event_timeout_is_retried_in_the_same_worker(
    pool: ThreadPoolExecutor, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(trigger_mod, "TAKEOVER_S", 0.05)
    release = threading.Event()
    calls: list[int] = []
    stuck: list[int] = []

    def handler(event: Any) -> None:
        calls.append(event.offset)
        if event.offset == 3 and calls.count(3) == 1:
            release.wait(30)  # hangs the first time only

    trigger = make_trigger(handler, pool, event_timeout_s=0.5, on_stuck=lambda: stuck.append(1))
    watch = asyncio.get_running_loop().create_task(trigger._watch_takeovers())
    tp = TopicPartition("t", 0)
    polling, raised = poll_on_thread(trigger, {tp: records(0, range(10))})
    try:
        # The event timed out on the loop side and was retried while the first try hangs.
        await until(lambda: trigger.book.to_commit() == {tp: 10})
        assert calls.count(3) == 2 and polling.is_alive()
        assert sorted(set(calls)) == list(range(10))
        assert not stuck, "one overdue event holds one slot; the worker is not replaced"
    finally:
        release.set()
    await ended_taken_over(trigger, polling, raised, watch)


async def test_no_take_over_while_the_round_has_more_to_deliver(
    pool: ThreadPoolExecutor, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(trigger_mod, "TAKEOVER_S", 0.02)
    release = threading.Event()

    def handler(event: Any) -> None:
        if event.offset == 1:
            release.wait(30)

    trigger = make_trigger(handler, pool)
    thread = trigger.thread
    assert isinstance(thread, FakeConsumerThread)
    thread.movable = False  # e.g. a decode failure met while gathering waits to be reported
    watch = asyncio.get_running_loop().create_task(trigger._watch_takeovers())
    tp = TopicPartition("t", 0)
    polling, raised = poll_on_thread(trigger, {tp: records(0, range(4))})
    await asyncio.sleep(0.2)
    assert thread.moved == 0 and not trigger.take_over()
    release.set()
    polling.join(10)
    assert not raised, "the thread finished its poll itself"
    assert trigger.book.to_commit() == {tp: 4}
    watch.cancel()


async def test_a_take_over_leaves_a_partition_revoked_meanwhile_to_its_next_owner(
    pool: ThreadPoolExecutor, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(trigger_mod, "TAKEOVER_S", 0.05)
    release, entered = threading.Event(), threading.Event()
    seen: list[tuple[int, int]] = []

    def handler(event: Any) -> None:
        if (event.shard_id, event.offset) == (0, 2):
            entered.set()
            release.wait(30)
        seen.append((event.shard_id, event.offset))

    trigger = make_trigger(handler, pool)
    tp0, tp1 = TopicPartition("t", 0), TopicPartition("t", 1)
    polling, raised = poll_on_thread(
        trigger, {tp0: records(0, range(6)), tp1: records(1, range(6))}
    )
    assert await asyncio.to_thread(entered.wait, 10)
    trigger.revoking.add(tp0)  # what a rebalance's revoke does, from kafka-python's IO thread
    watch = asyncio.get_running_loop().create_task(trigger._watch_takeovers())
    try:
        await until(lambda: sum(1 for q, _ in seen if q == 1) == 6)  # partition 1 goes on
    finally:
        release.set()
    await ended_taken_over(trigger, polling, raised, watch)
    assert [o for q, o in seen if q == 0] == [0, 1, 2], "stopped after the running event"
    assert tp0 not in trigger.loop_path.parts and trigger.loop_path.in_batches == 0
    # Its chunk (offsets 0-5) was adopted unfinished: none of it is committed here.
    assert tp0 not in trigger.book.to_commit()
