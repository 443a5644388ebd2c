"""The direct path: a one-slot sync handler run by the consumer thread itself, handing over to
the loop side on failure, on records with earlier attempts, on a pending rebalance and while
the loop side still has work. The real dispatcher; the consumer thread is a plain thread here
(tests/integration/test_kafka_*.py run it against real Kafka)."""

from __future__ import annotations

import asyncio
import threading
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import pytest
from kafka.structs import TopicPartition

from tests.support.kafka_units import Record, real_dispatcher, unstarted_trigger
from tickrun.triggers.kafka import KafkaTrigger
from tickrun.triggers.kafka.trigger import BATCH_MAX_EVENTS


class FakeConsumerThread:
    """The calls the trigger makes on its consumer thread."""

    def __init__(self) -> None:
        self.rejoin = False
        self.commit_checks = 0
        self.wakes = 0

    def wake(self) -> None:
        self.wakes += 1

    def rejoin_pending(self) -> bool:
        return self.rejoin

    def commit_if_due(self) -> None:
        self.commit_checks += 1


Handler = Callable[[Any], Any]


@pytest.fixture
def pool() -> Iterator[ThreadPoolExecutor]:
    executor = ThreadPoolExecutor(1, thread_name_prefix="handler")
    yield executor
    executor.shutdown(wait=True)


def make_trigger(
    handler: Handler, pool: ThreadPoolExecutor, **attrs: Any
) -> tuple[KafkaTrigger, FakeConsumerThread]:
    trigger = unstarted_trigger(1, **attrs)
    trigger.dispatcher = real_dispatcher(
        lambda context, event: handler(event),
        pool,
        availability_timeout_s=5.0,
        trigger_name="ticks",
    )
    trigger.direct = True
    thread = FakeConsumerThread()
    trigger.thread = thread  # type: ignore[assignment]
    return trigger, thread


def records(partition: int, offsets: range) -> list[Record]:
    return [Record("t", partition, o, 1_700_000_000_000 + o, None, b"{}", []) for o in offsets]


async def poll(trigger: KafkaTrigger, batch: dict[TopicPartition, list[Record]]) -> None:
    """What the consumer thread does with a poll's records, on a thread of its own."""
    for tp, recs in batch.items():
        trigger.book.add(tp, [r.offset for r in recs])
    await asyncio.to_thread(trigger.on_records, batch)


async def until(cond: Callable[[], bool], timeout_s: float = 5.0) -> None:
    async with asyncio.timeout(timeout_s):
        while not cond():  # noqa: ASYNC110 - polling state owned by the code under test
            await asyncio.sleep(0.005)


async def test_records_run_on_the_polling_thread_in_order_partitions_taking_turns(
    pool: ThreadPoolExecutor,
) -> None:
    seen: list[tuple[int, int, str]] = []

    def handler(event: Any) -> None:
        seen.append((event.shard_id, event.offset, threading.current_thread().name))

    trigger, thread = make_trigger(handler, pool)
    tp0, tp1 = TopicPartition("t", 0), TopicPartition("t", 1)
    n = 2 * BATCH_MAX_EVENTS + 10
    await poll(trigger, {tp0: records(0, range(n)), tp1: records(1, range(n))})
    # Everything ran before on_records returned, none of it on the loop or the pool.
    assert len(seen) == 2 * n
    names = {name for *_, name in seen}
    assert len(names) == 1, names
    assert not names & {"MainThread"} and not next(iter(names)).startswith("handler")
    for p in (0, 1):
        assert [o for q, o, _ in seen if q == p] == list(range(n))
    # Partitions alternate a chunk at a time rather than one draining first.
    assert [q for q, _, _ in seen[: 2 * BATCH_MAX_EVENTS : BATCH_MAX_EVENTS]] == [0, 1]
    assert trigger.book.to_commit() == {tp0: n, tp1: n}
    assert thread.commit_checks >= 4, "commits are considered between chunks"
    assert trigger.loop_path.parts == {}, "the loop side was never involved"


async def test_a_failure_hands_the_rest_to_the_loop_side_which_retries_in_order(
    pool: ThreadPoolExecutor,
) -> None:
    calls: list[tuple[int, int, str]] = []

    def handler(event: Any) -> str:
        calls.append((event.shard_id, event.offset, threading.current_thread().name))
        flaky = event.shard_id == 0 and event.offset == 5
        if flaky and sum(1 for c in calls if c[:2] == (0, 5)) <= 2:
            raise RuntimeError("flaky")
        return "ok"

    trigger, _ = make_trigger(handler, pool, maxRetries=3)
    tp0, tp1 = TopicPartition("t", 0), TopicPartition("t", 1)
    polling = threading.current_thread().name
    await poll(trigger, {tp0: records(0, range(10)), tp1: records(1, range(10))})
    await until(lambda: trigger.book.to_commit() == {tp0: 10, tp1: 10})
    p0 = [o for p, o, _ in calls if p == 0]
    assert p0 == [0, 1, 2, 3, 4, 5, 5, 5, 6, 7, 8, 9], "retried in place, one try counted once"
    assert [o for p, o, _ in calls if p == 1] == list(range(10))
    # The first try ran on the polling thread, the retries on the handler pool.
    tries = [name for p, o, name in calls if (p, o) == (0, 5)]
    assert not tries[0].startswith("handler") and tries[0] != polling
    assert all(name.startswith("handler") for name in tries[1:])


async def test_the_loop_side_keeps_the_records_while_it_has_work(
    pool: ThreadPoolExecutor,
) -> None:
    release = threading.Event()
    where: dict[int, str] = {}

    def handler(event: Any) -> str:
        where[event.offset] = threading.current_thread().name
        if event.offset == 0 and not release.is_set():
            raise RuntimeError("not yet")
        return "ok"

    trigger, _ = make_trigger(handler, pool, maxRetries=1000, retryBackoff="20ms")
    tp = TopicPartition("t", 0)
    await poll(trigger, {tp: records(0, range(1))})  # fails: the loop side retries it
    await until(lambda: tp in trigger.loop_path.parts)
    await poll(trigger, {tp: records(0, range(1, 4))})  # must queue behind offset 0
    await asyncio.sleep(0.1)
    assert 1 not in where, "nothing may overtake the record being retried"
    release.set()
    await until(lambda: trigger.book.to_commit() == {tp: 4})
    assert all(where[o].startswith("handler") for o in (1, 2, 3))
    # Once the loop side is idle again, the next poll runs directly.
    await until(lambda: trigger.book.outstanding_total() == 0)
    await poll(trigger, {tp: records(0, range(4, 6))})
    assert trigger.book.to_commit() == {tp: 6}
    assert not where[5].startswith("handler")


async def test_a_pending_rebalance_hands_everything_to_the_loop_side(
    pool: ThreadPoolExecutor,
) -> None:
    names: list[str] = []
    trigger, thread = make_trigger(
        lambda event: names.append(threading.current_thread().name), pool
    )
    thread.rejoin = True
    tp = TopicPartition("t", 0)
    await poll(trigger, {tp: records(0, range(5))})
    await until(lambda: trigger.book.to_commit() == {tp: 5})
    assert len(names) == 5 and all(n.startswith("handler") for n in names)


async def test_revoking_the_running_partition_stops_after_the_current_event(
    pool: ThreadPoolExecutor,
) -> None:
    trigger: KafkaTrigger | None = None
    tp = TopicPartition("t", 0)
    seen: list[int] = []

    def handler(event: Any) -> None:
        seen.append(event.offset)
        if event.offset == 2:
            assert trigger is not None
            trigger.revoking.add(tp)  # what on_revoked does from kafka-python's IO thread

    trigger, _ = make_trigger(handler, pool)
    await poll(trigger, {tp: records(0, range(10))})
    assert seen == [0, 1, 2]
    assert trigger.book.to_commit() == {tp: 3}, "what ran is committed with the revoke"
    trigger.on_assigned([tp])  # assigned again: the direct path takes it again
    assert tp not in trigger.revoking


async def test_stopping_abandons_the_rest_of_the_poll(pool: ThreadPoolExecutor) -> None:
    trigger: KafkaTrigger | None = None
    seen: list[int] = []

    def handler(event: Any) -> None:
        seen.append(event.offset)
        if event.offset == 3:
            assert trigger is not None
            trigger.stopping = True

    trigger, _ = make_trigger(handler, pool)
    tp = TopicPartition("t", 0)
    await poll(trigger, {tp: records(0, range(10))})
    assert seen == [0, 1, 2, 3]
    assert trigger.book.to_commit() == {tp: 4}
    assert trigger.loop_path.parts == {}, "nothing is handed over while stopping"
