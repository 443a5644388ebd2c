"""The Kafka trigger in real ``tickrun serve`` replicas against the real broker: order per
partition, retry then success, poison → dead-letter topic, outputs, drain on SIGTERM."""

from __future__ import annotations

import uuid
from collections import defaultdict
from pathlib import Path
from typing import Any, NamedTuple

import pytest

from tests.peers import KafkaBroker
from tests.support.kafka_functions import (
    committed,
    done,
    end_offsets,
    handled,
    metrics_text,
    produce,
    read_topic,
    serve,
    wait_for,
    write_function,
)

pytestmark = [pytest.mark.kafka, pytest.mark.timeout(240)]


class Mode(NamedTuple):
    slots: int  # numWorkers: 1 runs a sync handler on the consumer thread itself
    is_async: bool  # `async def` handlers run on the event loop

    def function(
        self, root: Path, brokers: str, topics: list[str], group: str, **options: Any
    ) -> Path:
        """The test function's folder, served in this mode."""
        return write_function(
            root,
            brokers=brokers,
            topics=topics,
            group=group,
            num_workers=self.slots,
            async_handler=self.is_async,
            **options,
        )


@pytest.fixture(
    params=[Mode(1, False), Mode(4, False), Mode(4, True)],
    ids=["consumer-thread", "handler-pool", "async-handler"],
)
def mode(request: pytest.FixtureRequest) -> Mode:
    return Mode(*request.param)


def _names(prefix: str) -> tuple[str, str]:
    tag = uuid.uuid4().hex[:8]
    return f"{prefix}-{tag}", f"group-{prefix}-{tag}"


def test_order_per_partition_and_everything_committed(
    kafka_broker: KafkaBroker, tmp_path: Path, mode: Mode
) -> None:
    bs = kafka_broker.bootstrap_servers
    topic, group = _names("order")
    kafka_broker.create_topic(topic, partitions=4)
    n = 2000
    produce(bs, topic, ({"i": i} for i in range(n)), partition_of=lambda i: i % 4)
    fn = serve(
        mode.function(
            tmp_path,
            bs,
            [topic],
            group,
        )
    )
    try:
        wait_for(lambda: len(done(tmp_path)) >= n, 90, f"{n} events handled")
        wait_for(
            lambda: committed(bs, group, topic) == {p: n // 4 for p in range(4)},
            30,
            "offsets committed up to the end of every partition",
        )
        text = metrics_text(fn)
    finally:
        assert fn.terminate() == 0
    per_partition: dict[int, list[int]] = defaultdict(list)
    for h in done(tmp_path):
        per_partition[h.partition].append(h.offset)
    assert sorted(per_partition) == [0, 1, 2, 3]
    for partition, offsets in per_partition.items():
        assert offsets == list(range(n // 4)), f"partition {partition} out of order"
    assert f'tickrun_kafka_processed_total{{function="kafka-test",topic="{topic}"' in text
    assert "tickrun_kafka_commit_duration_seconds_count" in text
    assert "tickrun_kafka_consumer_lag{" in text, [ln for ln in text.splitlines() if "lag" in ln]


def test_handler_failing_twice_then_succeeding(
    kafka_broker: KafkaBroker, tmp_path: Path, mode: Mode
) -> None:
    bs = kafka_broker.bootstrap_servers
    topic, group = _names("retry")
    kafka_broker.create_topic(topic, partitions=1)
    produce(bs, topic, [{"i": 0}, {"i": 1, "fail_times": 2}, {"i": 2}])
    fn = serve(
        mode.function(
            tmp_path,
            bs,
            [topic],
            group,
            attributes={"maxRetries": 3},
        )
    )
    try:
        wait_for(lambda: len(done(tmp_path)) >= 3, 60, "3 events handled")
        wait_for(lambda: committed(bs, group, topic) == {0: 3}, 30, "commit of offset 3")
    finally:
        fn.terminate()
    sequence = [(h.kind, h.offset) for h in handled(tmp_path)]
    assert sequence == [
        ("A", 0),
        ("D", 0),
        ("A", 1),
        ("A", 1),
        ("A", 1),
        ("D", 1),
        ("A", 2),
        ("D", 2),
    ], "retries happen in place, in order"
    assert read_topic(bs, f"{topic}.dlq", expect=1, timeout_s=3) == []


def test_poison_message_is_dead_lettered_and_the_partition_moves_on(
    kafka_broker: KafkaBroker, tmp_path: Path, mode: Mode
) -> None:
    bs = kafka_broker.bootstrap_servers
    topic, group = _names("poison")
    dlq = f"{topic}-dead"
    kafka_broker.create_topic(topic, partitions=2)
    kafka_broker.create_topic(dlq, partitions=1)
    bodies = [{"i": i, "poison": i == 3} for i in range(10)]
    produce(
        bs,
        topic,
        bodies,
        partition_of=lambda i: 0,
        key_of=lambda i: f"k{i}".encode(),
        headers=[("source", b"test")],
    )
    fn = serve(
        mode.function(
            tmp_path,
            bs,
            [topic],
            group,
            attributes={"maxRetries": 2, "deadLetterTopic": dlq},
        )
    )
    try:
        wait_for(lambda: len(done(tmp_path)) >= 9, 60, "the 9 good events")
        wait_for(lambda: committed(bs, group, topic).get(0) == 10, 30, "commit past the poison")
        dead = read_topic(bs, dlq, expect=1)
        text = metrics_text(fn)
    finally:
        fn.terminate()
    assert [h.offset for h in done(tmp_path)] == [0, 1, 2, 4, 5, 6, 7, 8, 9]
    attempts = [h for h in handled(tmp_path) if h.kind == "A" and h.offset == 3]
    assert len(attempts) == 3, "one try plus maxRetries=2"
    assert len(dead) == 1
    rec = dead[0]
    assert rec.key == b"k3"
    assert rec.value == b'{"i": 3, "poison": true}'
    headers = dict(rec.headers)
    assert headers["source"] == b"test", "original headers are kept"
    assert headers["x-tickrun-topic"] == topic.encode()
    assert headers["x-tickrun-partition"] == b"0"
    assert headers["x-tickrun-offset"] == b"3"
    assert headers["x-tickrun-attempts"] == b"3"
    assert headers["x-tickrun-error"].startswith(b"ValueError: refusing")
    assert f'tickrun_kafka_dead_lettered_total{{function="kafka-test",topic="{topic}"' in text


def test_return_value_is_produced_to_the_output_topic(
    kafka_broker: KafkaBroker, tmp_path: Path, mode: Mode
) -> None:
    bs = kafka_broker.bootstrap_servers
    topic, group = _names("out")
    out = f"{topic}-signals"
    kafka_broker.create_topic(topic, partitions=1)
    kafka_broker.create_topic(out, partitions=1)
    produce(
        bs,
        topic,
        [{"reply": {"signal": "buy", "i": 0}}, {"i": 1}, {"reply": "sell"}],
        key_of=lambda i: b"BTCUSDT",
    )
    fn = serve(
        mode.function(
            tmp_path,
            bs,
            [topic],
            group,
            attributes={"outputTopic": out},
        )
    )
    try:
        records = read_topic(bs, out, expect=2)
    finally:
        fn.terminate()
    assert [r.value for r in records] == [b'{"signal":"buy","i":0}', b"sell"], (
        "dict → JSON, str → text, None → nothing"
    )
    assert all(r.key == b"BTCUSDT" for r in records)
    assert dict(records[0].headers)["content-type"] == b"application/json"


def test_sigterm_drains_and_commits_what_was_done(
    kafka_broker: KafkaBroker, tmp_path: Path, mode: Mode
) -> None:
    bs = kafka_broker.bootstrap_servers
    topic, group = _names("drain")
    kafka_broker.create_topic(topic, partitions=2)
    n = 400
    produce(bs, topic, ({"i": i, "sleep_s": 0.01} for i in range(n)), partition_of=lambda i: i % 2)
    # A long commit interval: whatever is committed at exit was committed by the drain.
    fn_dir = mode.function(
        tmp_path,
        bs,
        [topic],
        group,
        attributes={"commitInterval": "60s", "commitBatchSize": 100_000},
    )
    fn = serve(fn_dir)
    wait_for(lambda: len(done(tmp_path)) >= 60, 60, "some events handled")
    assert fn.terminate() == 0
    first = done(tmp_path)
    assert len(first) < n, "the replica was stopped mid-stream"
    high = {
        p: max(h.offset for h in first if h.partition == p) + 1
        for p in {h.partition for h in first}
    }
    assert committed(bs, group, topic) == high, "every handled event is committed, no more"

    again = serve(fn_dir)
    try:
        wait_for(lambda: len(done(tmp_path)) >= n, 90, "the rest handled after restart")
    finally:
        again.terminate()
    keys = [(h.partition, h.offset) for h in done(tmp_path)]
    assert len(keys) == len(set(keys)) == n, "no event handled twice after a clean drain"
    assert end_offsets(bs, topic, 2) == committed(bs, group, topic)


def test_a_handler_hung_past_the_event_timeout_does_not_stall_the_partition(
    kafka_broker: KafkaBroker, tmp_path: Path, mode: Mode
) -> None:
    bs = kafka_broker.bootstrap_servers
    topic, group = _names("hung")
    kafka_broker.create_topic(topic, partitions=1)
    produce(bs, topic, [{"i": 0}, {"i": 1, "hang_once_s": 120}, {"i": 2}, {"i": 3}])
    fn = serve(
        mode.function(
            tmp_path,
            bs,
            [topic],
            group,
            event_timeout="1s",
            drain_timeout="2s",
            attributes={"maxRetries": 3},
        )
    )
    try:
        wait_for(lambda: len({h.offset for h in done(tmp_path)}) >= 4, 120, "all 4 events")
        wait_for(lambda: committed(bs, group, topic) == {0: 4}, 30, "commit past the hang")
        assert fn.proc is not None and fn.proc.poll() is None, "the replica stays up"
    finally:
        fn.terminate()
    hung = [h for h in handled(tmp_path) if h.kind == "A" and h.offset == 1]
    finished = [h for h in done(tmp_path) if h.offset == 1]
    assert len(hung) >= 2 and finished, "the hung event was tried again and then handled"
    if mode.slots == 1 and not mode.is_async:
        # The consumer thread itself was stuck: the worker process was replaced.
        assert finished[0].pid != hung[0].pid
    else:
        # A pool thread (or a coroutine, cancelled) was stuck: the same worker retried it.
        assert finished[0].pid == hung[0].pid
    offsets = [h.offset for h in done(tmp_path)]
    assert sorted(set(offsets)) == [0, 1, 2, 3]
    # Only what was not committed when the worker went may run twice; nothing after the hang.
    assert offsets.count(2) == offsets.count(3) == 1


def test_a_long_event_on_the_consumer_thread_holds_one_slot_only(
    kafka_broker: KafkaBroker, tmp_path: Path
) -> None:
    """numWorkers > 1, a fast sync handler: it runs on the consumer thread (inlineFastHandler,
    the default) until one event runs long; that event is taken over and holds one slot,
    polling moves to a new thread, and the other partition goes on meanwhile, as on the pool."""
    bs = kafka_broker.bootstrap_servers
    topic, group = _names("takeover")
    kafka_broker.create_topic(topic, partitions=2)
    n = 300
    hang_at, hang_s = 120, 8
    produce(
        bs,
        topic,
        ({"hang_once_s": hang_s} if i == 2 * hang_at else {"i": i} for i in range(2 * n)),
        partition_of=lambda i: i % 2,
    )
    fn = serve(Mode(4, False).function(tmp_path, bs, [topic], group, drain_timeout="2s"))
    try:
        marker = tmp_path / "results" / f"hung-0-{hang_at}"
        wait_for(marker.exists, 60, "the long event to start")
        # Partition 1 is handled to its end while partition 0's event still runs.
        wait_for(
            lambda: len({h.offset for h in done(tmp_path) if h.partition == 1}) == n,
            hang_s - 2,
            "partition 1 to go on beside the long event",
        )
        assert not [h for h in done(tmp_path) if h.partition == 0 and h.offset >= hang_at]
        wait_for(lambda: len(done(tmp_path)) >= 2 * n, 60, "every event")
        wait_for(lambda: committed(bs, group, topic) == {0: n, 1: n}, 30, "all committed")
        assert fn.proc is not None and fn.proc.poll() is None, "the replica stays up"
    finally:
        fn.terminate()
    finished = done(tmp_path)
    assert len({h.pid for h in finished}) == 1, "the same worker did everything"
    for p in (0, 1):
        assert [h.offset for h in finished if h.partition == p] == list(range(n)), (
            "each event once, in order"
        )


def _metric(text: str, name: str, **labels: str) -> float:
    """Sum of the samples of ``name`` whose labels include ``labels``."""
    total = 0.0
    for line in text.splitlines():
        if not line.startswith(name + "{"):
            continue
        head, _, value = line.rpartition(" ")
        if all(f'{k}="{v}"' in head for k, v in labels.items()):
            total += float(value)
    return total


def test_several_topics_one_group_with_counted_metrics(
    kafka_broker: KafkaBroker, tmp_path: Path, mode: Mode
) -> None:
    bs = kafka_broker.bootstrap_servers
    klines, group = _names("klines")
    trades = klines.replace("klines", "trades")
    kafka_broker.create_topic(klines, partitions=2)
    kafka_broker.create_topic(trades, partitions=3)
    produce(bs, klines, ({"i": i} for i in range(300)), partition_of=lambda i: i % 2)
    produce(
        bs,
        trades,
        ({"i": i, "fail_times": 1 if i == 7 else 0} for i in range(200)),
        partition_of=lambda i: i % 3,
    )
    fn = serve(
        mode.function(
            tmp_path,
            bs,
            [klines, trades],
            group,
            attributes={"maxRetries": 2},
        )
    )
    try:
        wait_for(lambda: len(done(tmp_path)) >= 500, 90, "500 events from both topics")
        wait_for(
            lambda: (
                sum(committed(bs, group, klines).values()) == 300
                and sum(committed(bs, group, trades).values()) == 200
            ),
            30,
            "both topics committed to the end",
        )
        # Lag is published once a poll round; it reaches 0 once everything is handled.
        wait_for(
            lambda: _metric(metrics_text(fn), "tickrun_kafka_consumer_lag") == 0,
            20,
            "lag 0",
        )
        text = metrics_text(fn)
        # One member, topics created before it started: one assignment, never a rebalance
        # (kafka-python used to join before knowing the partitions, then rebalance again).
        messages = [r.get("message") for r in fn.log_records()]
        assert messages.count("kafka partitions assigned") == 1
        assert "kafka partitions revoked" not in messages
    finally:
        assert fn.terminate() == 0
    by_topic: dict[str, set[tuple[int, int]]] = defaultdict(set)
    for h in done(tmp_path):
        by_topic[h.topic].add((h.partition, h.offset))
    assert len(by_topic[klines]) == 300 and len(by_topic[trades]) == 200
    assert {p for p, _ in by_topic[trades]} == {0, 1, 2}
    for topic, n in ((klines, 300), (trades, 200)):
        assert _metric(text, "tickrun_kafka_consumed_total", topic=topic) == n
        assert _metric(text, "tickrun_kafka_processed_total", topic=topic) == n
    assert _metric(text, "tickrun_kafka_failed_total", topic=trades) == 1
    assert _metric(text, "tickrun_kafka_failed_total", topic=klines) == 0
    assert _metric(text, "tickrun_kafka_dead_lettered_total") == 0
    lag_series = [ln for ln in text.splitlines() if ln.startswith("tickrun_kafka_consumer_lag{")]
    assert len(lag_series) == 5, lag_series  # one per assigned partition of both topics
    assert _metric(text, "tickrun_kafka_commits_total", outcome="ok") >= 1
