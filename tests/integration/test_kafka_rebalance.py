"""Replicas of one function share a topic's partitions, rebalance when one stops, and lose
nothing when one is killed with SIGKILL."""

from __future__ import annotations

import os
import signal
import time
import uuid
from pathlib import Path

import pytest

from tests.peers import KafkaBroker
from tests.support.kafka_functions import (
    committed,
    done,
    duplicates,
    end_offsets,
    produce,
    serve,
    wait_for,
    write_function,
)
from tickrun.triggers.kafka.loop import IN_BATCHES_MAX_WINDOWS
from tickrun.triggers.kafka.spec import KafkaAttributes

MAX_POLL_RECORDS = KafkaAttributes.model_fields["max_poll_records"].default

pytestmark = [pytest.mark.kafka, pytest.mark.slow, pytest.mark.timeout(420)]


@pytest.fixture(params=[1, 2], ids=["consumer-thread", "handler-pool"])
def slots(request: pytest.FixtureRequest) -> int:
    """numWorkers: 1 runs a sync handler on the consumer thread itself, more on a pool."""
    return int(request.param)


def _owners(root: Path, start: dict[int, int]) -> dict[int, set[int]]:
    """Which processes handled each partition's events at or after ``start[partition]``."""
    out: dict[int, set[int]] = {}
    for h in done(root):
        if h.offset >= start.get(h.partition, 0):
            out.setdefault(h.partition, set()).add(h.pid)
    return out


def test_two_replicas_share_four_partitions_and_rebalance_when_one_stops(
    kafka_broker: KafkaBroker, tmp_path: Path, slots: int
) -> None:
    bs = kafka_broker.bootstrap_servers
    tag = uuid.uuid4().hex[:8]
    topic, group = f"share-{tag}", f"group-share-{tag}"
    kafka_broker.create_topic(topic, partitions=4)
    fn_dir = write_function(tmp_path, brokers=bs, topics=[topic], group=group, num_workers=slots)
    a = serve(fn_dir)
    b = serve(fn_dir)
    try:
        # Trickle events into every partition until both replicas hold two partitions each.
        def spread() -> bool:
            start = end_offsets(bs, topic, 4)
            produce(bs, topic, ({"i": i} for i in range(40)), partition_of=lambda i: i % 4)
            time.sleep(1.0)
            recent = _owners(tmp_path, start)
            owners = [next(iter(p)) for p in recent.values() if len(p) == 1]
            return len(recent) == 4 and len(owners) == 4 and len(set(owners)) == 2

        wait_for(spread, 90, "4 partitions spread over 2 replicas", step_s=0.1)
        print("\nowners before the stop:", _owners(tmp_path, {}))

        assert b.terminate() == 0
        mark = end_offsets(bs, topic, 4)
        produce(bs, topic, ({"i": i} for i in range(400)), partition_of=lambda i: i % 4)
        wait_for(
            lambda: (
                len({(h.partition, h.offset) for h in done(tmp_path)})
                >= sum(end_offsets(bs, topic, 4).values())
            ),
            60,
            "every event handled after the rebalance",
        )
        after = _owners(tmp_path, mark)
        assert sorted(after) == [0, 1, 2, 3]
        survivors = {pid for pids in after.values() for pid in pids}
        assert len(survivors) == 1, f"the remaining replica took every partition: {after}"
        wait_for(
            lambda: committed(bs, group, topic) == end_offsets(bs, topic, 4),
            30,
            "commits up to the end",
        )
    finally:
        a.terminate()
        b.terminate()
    dups = duplicates(done(tmp_path))
    print(f"events handled twice across the rebalance: {dups}")
    assert dups == 0, "a clean stop commits before handing partitions over"


def test_kill_9_mid_stream_loses_nothing_and_bounds_duplicates(
    kafka_broker: KafkaBroker, tmp_path: Path, slots: int
) -> None:
    bs = kafka_broker.bootstrap_servers
    tag = uuid.uuid4().hex[:8]
    topic, group = f"kill-{tag}", f"group-kill-{tag}"
    partitions, n = 4, 20_000
    batch, workers = 500, 2
    kafka_broker.create_topic(topic, partitions=partitions)
    produce(bs, topic, ({"i": i} for i in range(n)), partition_of=lambda i: i % partitions)
    fn_dir = write_function(
        tmp_path,
        brokers=bs,
        topics=[topic],
        group=group,
        num_workers=slots,
        attributes={"commitBatchSize": batch, "commitInterval": "1s"},
    )
    replica = serve(fn_dir, workers=workers)
    wait_for(lambda: len(done(tmp_path)) >= n * 0.3, 180, "30% of the events handled", step_s=0.05)
    assert replica.proc is not None
    os.kill(replica.proc.pid, signal.SIGKILL)  # workers follow via PDEATHSIG
    replica.proc.wait(timeout=10)
    time.sleep(0.5)
    before_restart = done(tmp_path)
    committed_at_kill = committed(bs, group, topic)

    again = serve(fn_dir, workers=workers)
    try:
        wait_for(
            lambda: len({(h.partition, h.offset) for h in done(tmp_path)}) >= n,
            240,
            "every event handled after the restart",
            step_s=0.5,
        )
        wait_for(
            lambda: committed(bs, group, topic) == end_offsets(bs, topic, partitions),
            30,
            "commits up to the end",
        )
    finally:
        again.terminate()
    records = done(tmp_path)
    distinct = {(h.partition, h.offset) for h in records}
    dups = duplicates(records)
    # What was handled but not yet committed at the kill is handled again. Per worker: on
    # the consumer thread, two commit windows (handlers wait for the commit's answer there)
    # plus the rest of the poll's records, handled first (up to maxPollRecords; seen in CI on
    # a loaded machine: 2,170 duplicates against a bound of 2 x (1,000 + 64)). On the handler
    # pool a batch starts only below two windows of uncommitted events and while the batches
    # taken by all partitions hold less than IN_BATCHES_MAX_WINDOWS more (seen in CI before
    # they were counted together, each partition taking two windows: 3,561 against 3,024).
    uncommitted_at_kill = len(
        {
            (h.partition, h.offset)
            for h in before_restart
            if h.offset >= committed_at_kill.get(h.partition, 0)
        }
    )
    in_flight = IN_BATCHES_MAX_WINDOWS * batch if slots > 1 else MAX_POLL_RECORDS
    bound = workers * (2 * batch + in_flight)
    print(
        f"\nkill -9 at {len(before_restart)} handled / {n}; committed then: "
        f"{sum(committed_at_kill.values())}; handled-but-uncommitted: {uncommitted_at_kill}; "
        f"total handled {len(records)}, distinct {len(distinct)}, duplicates {dups} "
        f"(bound {bound})"
    )
    assert len(distinct) == n, "nothing lost"
    expected = {(p, o) for p in range(partitions) for o in range(n // partitions)}
    assert distinct == expected
    assert dups <= uncommitted_at_kill, "only events past the committed offsets are redone"
    assert dups <= bound
