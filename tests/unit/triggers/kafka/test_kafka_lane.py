"""Several slots and a sync handler on the pool: a fast handler's partitions go to the pool
together, a slow one's side by side (:mod:`tickrun.triggers.kafka.lane`). The real dispatcher,
thread pool and trigger; records are queued as the consumer thread queues them
(tests/integration/test_kafka_*.py run the trigger against real Kafka)."""

from __future__ import annotations

import asyncio
import inspect
import threading
import time
from collections.abc import Callable, Iterator, Sequence
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import pytest
from kafka.structs import TopicPartition

from tests.support.kafka_units import Record, unstarted_trigger
from tickrun.functions.handler import LoadedHandler
from tickrun.functions.interfaces import BatchOutcome
from tickrun.functions.processor.dispatcher import TriggerDispatcher
from tickrun.triggers.kafka import KafkaTrigger, lane

SLOTS = 4


class FakeConsumerThread:
    def wake(self) -> None:
        pass


@pytest.fixture
def pool() -> Iterator[ThreadPoolExecutor]:
    executor = ThreadPoolExecutor(SLOTS, thread_name_prefix="handler")
    yield executor
    executor.shutdown(wait=True)


def make_trigger(
    handler: Callable[[Any], Any], pool: ThreadPoolExecutor, **attrs: Any
) -> tuple[KafkaTrigger, list[set[int]]]:
    """The pool path of a sync handler with SLOTS slots; also the partitions of every batch
    the dispatcher was given (one thread hop each)."""
    trigger = unstarted_trigger(SLOTS, **attrs)

    def fn(context: Any, event: Any) -> Any:
        return handler(event)

    dispatcher = TriggerDispatcher(
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
    hops: list[set[int]] = []
    real = dispatcher.dispatch_batch

    async def dispatch_batch(
        events: Sequence[Any], should_stop: Callable[[], bool] | None = None
    ) -> BatchOutcome:
        hops.append({e.shard_id for e in events})
        return await real(events, should_stop)

    dispatcher.dispatch_batch = dispatch_batch  # type: ignore[method-assign]
    trigger.dispatcher = dispatcher
    trigger.thread = FakeConsumerThread()  # type: ignore[assignment]
    return trigger, hops


def records(partition: int, offsets: range) -> list[Record]:
    return [Record("t", partition, o, 1_700_000_000_000 + o, None, b"{}", []) for o in offsets]


def queue(trigger: KafkaTrigger, batch: dict[TopicPartition, list[Record]]) -> None:
    """What the consumer thread does with a poll's records on the pool path."""
    for tp, recs in batch.items():
        trigger.book.add(tp, [r.offset for r in recs])
    trigger.loop_path.enqueue(batch)


async def until(cond: Callable[[], bool], timeout_s: float = 10.0) -> None:
    async with asyncio.timeout(timeout_s):
        while not cond():  # noqa: ASYNC110 - polling state owned by the code under test
            await asyncio.sleep(0.005)


def by_partition(seen: list[tuple[int, int, str]], p: int) -> list[int]:
    return [o for q, o, _ in seen if q == p]


async def test_a_fast_handlers_partitions_share_thread_hops_in_offset_order(
    pool: ThreadPoolExecutor,
) -> None:
    seen: list[tuple[int, int, str]] = []

    def handler(event: Any) -> None:
        seen.append((event.shard_id, event.offset, threading.current_thread().name))

    trigger, hops = make_trigger(handler, pool)
    tps = [TopicPartition("t", p) for p in range(SLOTS)]
    n = 300
    queue(trigger, {tp: records(tp.partition, range(n)) for tp in tps})
    await until(lambda: len(seen) == SLOTS * n)
    for p in range(SLOTS):
        assert by_partition(seen, p) == list(range(n))
    # The handler records an event before its batch's completion reaches the book (on the
    # loop): wait for the bookkeeping rather than race it.
    await until(lambda: trigger.book.to_commit() == dict.fromkeys(tps, n))
    # The first hop is deterministic: every partition's task queued its batch before the
    # lane's runner ran once.
    assert hops[0] == set(range(SLOTS)), "every hop carried one partition"
    trigger.loop_path.close_all()


async def test_a_slow_handlers_partitions_run_side_by_side(pool: ThreadPoolExecutor) -> None:
    seen: list[tuple[int, int, str]] = []
    running = peak = 0
    lock = threading.Lock()

    def handler(event: Any) -> None:
        nonlocal running, peak
        with lock:
            running += 1
            peak = max(peak, running)
        time.sleep(0.005)  # I/O the pool overlaps: 100x the fast limit per event
        with lock:
            running -= 1
            seen.append((event.shard_id, event.offset, threading.current_thread().name))

    trigger, _ = make_trigger(handler, pool)
    tps = [TopicPartition("t", p) for p in range(SLOTS)]
    n = 40
    queue(trigger, {tp: records(tp.partition, range(n)) for tp in tps})
    await until(lambda: len(seen) == SLOTS * n)
    for p in range(SLOTS):
        assert by_partition(seen, p) == list(range(n))
    assert not trigger.loop_path.lane.fast
    assert peak > 1, "partitions ran one after another"
    # The handler records an event before its batch's completion reaches the book (on the
    # loop): wait for the bookkeeping rather than race it.
    await until(lambda: trigger.book.to_commit() == dict.fromkeys(tps, n))
    trigger.loop_path.close_all()


async def test_a_failure_in_a_shared_hop_retries_that_record_and_loses_no_other(
    pool: ThreadPoolExecutor,
) -> None:
    seen: list[tuple[int, int, str]] = []
    failed = threading.Event()

    def handler(event: Any) -> None:
        if event.shard_id == 1 and event.offset == 5 and not failed.is_set():
            failed.set()
            raise RuntimeError("once")
        seen.append((event.shard_id, event.offset, threading.current_thread().name))

    trigger, hops = make_trigger(handler, pool)
    tps = [TopicPartition("t", p) for p in range(SLOTS)]
    n = 50
    queue(trigger, {tp: records(tp.partition, range(n)) for tp in tps})
    await until(lambda: len(seen) == SLOTS * n)
    assert failed.is_set()
    for p in range(SLOTS):
        assert by_partition(seen, p) == list(range(n)), "order kept, nothing lost or doubled"
    # The handler records an event before its batch's completion reaches the book (on the
    # loop): wait for the bookkeeping rather than race it.
    await until(lambda: trigger.book.to_commit() == dict.fromkeys(tps, n))
    assert any(len(parts) > 1 for parts in hops)
    trigger.loop_path.close_all()


async def test_a_hung_handler_holds_only_its_own_partition(
    pool: ThreadPoolExecutor, monkeypatch: pytest.MonkeyPatch
) -> None:
    # Shorter waits keep the test quick; the behaviour is the same.
    monkeypatch.setattr(lane, "WITHDRAW_S", 0.1)
    seen: list[tuple[int, int, str]] = []
    release = threading.Event()

    def handler(event: Any) -> None:
        if event.shard_id == 0 and event.offset == 3:
            release.wait(30)
        seen.append((event.shard_id, event.offset, threading.current_thread().name))

    trigger, _ = make_trigger(handler, pool)
    tps = [TopicPartition("t", p) for p in range(SLOTS)]
    n = 50
    queue(trigger, {tp: records(tp.partition, range(n)) for tp in tps})
    try:
        # Partition 0 is stuck at offset 3; the others finish meanwhile.
        await until(lambda: all(len(by_partition(seen, p)) == n for p in range(1, SLOTS)))
        assert by_partition(seen, 0) == [0, 1, 2]
        # Nothing of partition 0 is committable past the hung record.
        assert (trigger.book.position(tps[0]) or 0) <= 3
    finally:
        release.set()
    await until(lambda: len(seen) == SLOTS * n)
    for p in range(SLOTS):
        assert by_partition(seen, p) == list(range(n))
    # The handler records an event before its batch's completion reaches the book (on the
    # loop): wait for the bookkeeping rather than race it.
    await until(lambda: trigger.book.to_commit() == dict.fromkeys(tps, n))
    trigger.loop_path.close_all()


async def test_a_revoked_partition_leaves_the_shared_hop_and_the_others_go_on(
    pool: ThreadPoolExecutor,
) -> None:
    seen: list[tuple[int, int, str]] = []
    entered = threading.Event()
    release = threading.Event()

    def handler(event: Any) -> None:
        if event.shard_id == 0 and event.offset == 1:
            entered.set()
            release.wait(30)
        seen.append((event.shard_id, event.offset, threading.current_thread().name))

    trigger, _ = make_trigger(handler, pool)
    tps = [TopicPartition("t", p) for p in range(SLOTS)]
    n = 50
    queue(trigger, {tp: records(tp.partition, range(n)) for tp in tps})
    await until(entered.is_set)
    settle = asyncio.ensure_future(trigger.loop_path.settle([tps[0]], 5.0))
    await asyncio.sleep(0.05)
    release.set()  # the in-flight event finishes; nothing after it starts
    await settle
    await until(lambda: all(len(by_partition(seen, p)) == n for p in range(1, SLOTS)))
    assert by_partition(seen, 0) == [0, 1]
    assert tps[0] not in trigger.loop_path.parts
    for p in range(1, SLOTS):
        assert by_partition(seen, p) == list(range(n))
    trigger.loop_path.close_all()


def test_the_lane_splits_after_two_overruns_and_probes_again() -> None:
    gate = lane.Lane()
    assert gate.combines()
    gate._observe(overrun=True)
    assert gate.fast, "one overrun may be the host, not the handler"
    gate._observe(overrun=True)
    assert not gate.fast and not gate.combines()
    gate.retry_at = 0.0  # the probe is due
    assert gate.combines()
    gate._observe(overrun=False)
    assert gate.fast and gate.combines()
