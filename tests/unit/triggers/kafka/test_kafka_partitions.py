"""The trigger's loop side (ordering, retries, policies, revoke, drain) against a fake
dispatcher — our own seam; the consumer thread is exercised against real Kafka in
tests/integration/test_kafka_*.py."""

from __future__ import annotations

import asyncio
import json
import random
from collections.abc import Awaitable, Callable
from typing import Any

import pytest
from kafka.structs import TopicPartition

from tests.support.kafka_units import Record, unstarted_trigger
from tickrun.functions.errors import TriggerError, WorkerUnavailableError
from tickrun.functions.interfaces import BatchOutcome, HandlerFailure
from tickrun.functions.results import Result, to_result
from tickrun.triggers.kafka import KafkaTrigger

Handler = Callable[[Any], Awaitable[Any]]


class FakeDispatcher:
    trigger_name = "ticks"
    trigger_kind = "kafka-cluster"

    def __init__(self, handler: Handler, slots: int = 4) -> None:
        self._handler = handler
        self._slots = asyncio.Semaphore(slots)
        self.in_flight = 0
        self.peak = 0

    batches = False
    sync = False  # async handlers: their batches never take turns (.lane)

    async def dispatch(self, event: Any) -> Result:
        async with self._slots:
            self.in_flight += 1
            self.peak = max(self.peak, self.in_flight)
            try:
                out = await self._handler(event)
            except WorkerUnavailableError:
                raise
            except Exception as exc:
                raise HandlerFailure(exc, event.id) from exc
            finally:
                self.in_flight -= 1
        return to_result(out)


class FakeBatchDispatcher(FakeDispatcher):
    """The same seam with batching, as the real dispatcher offers it for sync handlers: one
    slot per batch, events in order, stop at the first failure (raise or 5xx)."""

    batches = True

    def __init__(self, handler: Handler, slots: int = 4) -> None:
        super().__init__(handler, slots)
        self.batch_sizes: list[int] = []

    async def dispatch_batch(
        self, events: Any, should_stop: Callable[[], bool] | None = None
    ) -> BatchOutcome:
        self.batch_sizes.append(len(events))
        results: list[Result] = []
        async with self._slots:
            self.in_flight += 1
            self.peak = max(self.peak, self.in_flight)
            try:
                for event in events:
                    if should_stop is not None and should_stop():
                        break
                    try:
                        result = to_result(await self._handler(event))
                    except WorkerUnavailableError:
                        raise
                    except Exception as exc:
                        return BatchOutcome(results, HandlerFailure(exc, event.id))
                    results.append(result)
                    if result.status >= 500:
                        break
            finally:
                self.in_flight -= 1
        return BatchOutcome(results)


BATCHING = {"on": False}


@pytest.fixture(autouse=True, params=["per-event", "batched"])
def dispatch_mode(request: pytest.FixtureRequest) -> str:
    """Every loop-side test runs over both dispatch paths."""
    BATCHING["on"] = request.param == "batched"
    return str(request.param)


def make_trigger(handler: Handler, **attrs: Any) -> tuple[KafkaTrigger, FakeDispatcher]:
    trigger = unstarted_trigger(4, **attrs)
    dispatcher = (FakeBatchDispatcher if BATCHING["on"] else FakeDispatcher)(handler)
    trigger.dispatcher = dispatcher  # type: ignore[assignment]
    return trigger, dispatcher


def feed(
    trigger: KafkaTrigger, partition: int, offsets: range, value: bytes = b"{}"
) -> TopicPartition:
    tp = TopicPartition("t", partition)
    records = [Record("t", partition, o, 1_700_000_000_000 + o, None, value, []) for o in offsets]
    trigger.book.add(tp, list(offsets))
    trigger.loop_path.enqueue({tp: records})
    return tp


def counter(metric: Any) -> float:
    # Metrics are process-global, so tests compare before/after values.
    return float(metric._value.get())


async def until(cond: Callable[[], bool], timeout_s: float = 5.0) -> None:
    async with asyncio.timeout(timeout_s):
        while not cond():  # noqa: ASYNC110 - polling state owned by the code under test
            await asyncio.sleep(0.005)


async def test_order_within_partition_parallel_across() -> None:
    seen: dict[int, list[int]] = {0: [], 1: [], 2: []}

    async def handler(event: Any) -> None:
        await asyncio.sleep(random.uniform(0, 0.003))
        seen[event.shard_id].append(event.offset)

    trigger, dispatcher = make_trigger(handler)
    tps = [feed(trigger, p, range(0, 60)) for p in seen]
    for p in seen:  # a second poll's records append behind the first
        feed(trigger, p, range(60, 100))
    await until(lambda: all(len(v) == 100 for v in seen.values()))
    assert all(v == list(range(100)) for v in seen.values())
    assert dispatcher.peak >= 2, "partitions should be handled concurrently"
    await until(lambda: trigger.book.to_commit() == {tp: 100 for tp in tps})


async def test_fails_twice_then_succeeds_and_commits_once_done() -> None:
    attempts: list[int] = []

    async def handler(event: Any) -> str:
        attempts.append(event.offset)
        if event.offset == 0 and attempts.count(0) <= 2:
            raise RuntimeError("flaky")
        return "ok"

    trigger, _ = make_trigger(handler, maxRetries=3)
    tp = feed(trigger, 0, range(3))
    await until(lambda: trigger.book.to_commit() == {tp: 3})
    assert attempts == [0, 0, 0, 1, 2], "the partition waits for the retried event (order)"


async def test_skip_policy_moves_on_after_retries() -> None:
    calls: list[int] = []

    async def handler(event: Any) -> str:
        calls.append(event.offset)
        if event.offset == 1:
            raise ValueError("poison")
        return "ok"

    trigger, _ = make_trigger(handler, maxRetries=2, onFailure="skip")
    tp = feed(trigger, 0, range(4))
    await until(lambda: trigger.book.to_commit() == {tp: 4})
    assert calls == [0, 1, 1, 1, 2, 3]


async def test_5xx_result_counts_as_failure() -> None:
    calls: list[int] = []

    async def handler(event: Any) -> Any:
        calls.append(event.offset)
        return (503, "upstream down") if len(calls) == 1 else "ok"

    trigger, _ = make_trigger(handler, maxRetries=1)
    tp = feed(trigger, 0, range(1))
    await until(lambda: trigger.book.to_commit() == {tp: 1})
    assert calls == [0, 0]


async def test_worker_unavailable_is_not_an_attempt() -> None:
    calls: list[str] = []

    async def handler(event: Any) -> str:
        calls.append("x")
        if len(calls) <= 3:
            raise WorkerUnavailableError("busy")
        return "ok"

    trigger, _ = make_trigger(handler, maxRetries=0, onFailure="skip")
    skipped_before = counter(trigger.failures.skipped["t"])
    tp = feed(trigger, 0, range(1))
    await until(lambda: trigger.book.to_commit() == {tp: 1})
    assert len(calls) == 4
    assert counter(trigger.failures.skipped["t"]) == skipped_before


async def test_revoke_interrupts_a_blocked_partition_without_committing() -> None:
    async def handler(event: Any) -> str:
        raise RuntimeError("always")

    trigger, _ = make_trigger(handler, onFailure="block", retryBackoff="5s", retryBackoffMax="5s")
    failed_before = counter(trigger.failed["t"])
    tp = feed(trigger, 0, range(2))
    await until(lambda: counter(trigger.failed["t"]) > failed_before)
    loop = asyncio.get_running_loop()
    started = loop.time()
    await trigger.loop_path.settle([tp], wait_s=2.0)
    assert loop.time() - started < 1.0, "the 5 s backoff must be cut short by the revoke"
    assert tp not in trigger.loop_path.parts
    assert trigger.book.to_commit() == {}


async def test_revoke_waits_for_the_in_flight_event() -> None:
    release = asyncio.Event()
    done: list[int] = []

    async def handler(event: Any) -> str:
        await release.wait()
        done.append(event.offset)
        return "ok"

    trigger, _ = make_trigger(handler)
    tp = feed(trigger, 0, range(5))
    await until(lambda: trigger.dispatcher.in_flight == 1)  # type: ignore[union-attr]
    settle = asyncio.create_task(trigger.loop_path.settle([tp], wait_s=5.0))
    await asyncio.sleep(0.05)
    assert not settle.done()
    release.set()
    await settle
    assert done == [0], "queued events are dropped, the in-flight one finishes"


async def test_stop_drains_in_flight_and_keeps_it_committable() -> None:
    release = asyncio.Event()

    async def handler(event: Any) -> str:
        await release.wait()
        return "ok"

    trigger, _ = make_trigger(handler)
    tp = feed(trigger, 0, range(10))
    await until(lambda: trigger.dispatcher.in_flight == 1)  # type: ignore[union-attr]
    stopping = asyncio.create_task(trigger.stop(drain_timeout_s=5.0))
    await asyncio.sleep(0.05)
    release.set()
    await stopping
    assert trigger.book.to_commit() == {tp: 1}
    assert not trigger.ready()


@pytest.mark.parametrize("value", [b'{"sym": "BTCUSDT"}', b"raw"])
async def test_handler_sees_decoded_body(value: bytes) -> None:
    bodies: list[Any] = []

    async def handler(event: Any) -> None:
        bodies.append(event.body)

    trigger, _ = make_trigger(handler)
    feed(trigger, 0, range(1), value=value)
    await until(lambda: len(bodies) == 1)
    assert bodies[0] == ({"sym": "BTCUSDT"} if value.startswith(b"{") else b"raw")


async def test_retry_budget_survives_a_rebalance() -> None:
    calls: list[int] = []

    async def handler(event: Any) -> str:
        calls.append(event.offset)
        raise RuntimeError("poison")

    trigger, _ = make_trigger(
        handler, maxRetries=2, onFailure="skip", retryBackoff="2s", retryBackoffMax="2s"
    )
    tp = feed(trigger, 0, range(1))
    await until(lambda: len(calls) == 1)
    await trigger.loop_path.settle([tp], wait_s=1.0)  # revoked during the first backoff
    trigger.book.drop([tp])
    tp = feed(trigger, 0, range(1))  # assigned again: the same record comes back
    await until(lambda: trigger.book.to_commit() == {tp: 1}, timeout_s=10)
    assert calls == [0, 0, 0], "3 attempts in all (1 + maxRetries), not 1 + 3"


async def test_a_result_that_cannot_be_published_is_retried_not_lost() -> None:
    calls: list[int] = []
    sent: list[tuple[str, Any]] = []

    async def handler(event: Any) -> dict[str, int]:
        calls.append(event.offset)
        return {"signal": event.offset}

    trigger, _ = make_trigger(handler, outputTopic="signals", maxRetries=3)
    failures = {"left": 1}

    def send(topic: str, value: Any, **kwargs: Any) -> None:
        if failures["left"]:
            failures["left"] -= 1
            raise TriggerError("kafka producer is not connected")
        sent.append((topic, value))

    trigger.publisher.send = send  # type: ignore[method-assign]
    tp = feed(trigger, 0, range(3))
    await until(lambda: trigger.book.to_commit() == {tp: 3})
    # Only the event whose publish failed runs again (a batch may already have run the rest),
    # and results still reach the output topic in offset order.
    assert sorted(calls) == [0, 0, 1, 2]
    assert [json.loads(v)["signal"] for _, v in sent] == [0, 1, 2]
    assert {t for t, _ in sent} == {"signals"}


async def test_handlers_wait_when_two_commit_windows_are_uncommitted() -> None:
    seen: list[int] = []

    async def handler(event: Any) -> str:
        seen.append(event.offset)
        return "ok"

    trigger, _ = make_trigger(handler, commitBatchSize=10)
    tp = feed(trigger, 0, range(100))
    await until(lambda: len(seen) >= 20)
    await asyncio.sleep(0.1)
    # At most two windows run ahead of the commits (a batch may finish the one it started).
    assert 20 <= len(seen) < 20 + 64
    stalled_at = len(seen)
    trigger.book.committed(trigger.book.to_commit())  # what the consumer thread does
    await until(lambda: len(seen) > stalled_at)
    while len(seen) < 100:
        trigger.book.committed(trigger.book.to_commit())
        await asyncio.sleep(0.01)
    assert seen == list(range(100))
    await until(lambda: trigger.book.to_commit() == {tp: 100})


async def test_batches_of_all_partitions_stay_within_four_commit_windows(
    dispatch_mode: str,
) -> None:
    # A crash redoes what ran and was not committed: the partitions' batches taken side by
    # side count together (IN_BATCHES_MAX_WINDOWS), not two windows each.
    release = asyncio.Event()
    seen: list[tuple[int, int]] = []

    async def handler(event: Any) -> str:
        await release.wait()
        seen.append((event.shard_id, event.offset))
        return "ok"

    trigger, dispatcher = make_trigger(handler, commitBatchSize=10)
    for partition in range(4):
        feed(trigger, partition, range(100))
    await until(lambda: dispatcher.in_flight >= 1)
    await asyncio.sleep(0.1)
    if dispatch_mode == "batched":
        assert isinstance(dispatcher, FakeBatchDispatcher)
        assert sum(dispatcher.batch_sizes) == 40, dispatcher.batch_sizes
    else:
        assert dispatcher.in_flight == 4  # one event per partition at a time
    release.set()
    while len(seen) < 400:
        trigger.book.committed(trigger.book.to_commit())
        await asyncio.sleep(0.01)
    for partition in range(4):
        assert [o for p, o in seen if p == partition] == list(range(100))
