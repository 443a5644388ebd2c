"""The poll shortcuts of :mod:`tickrun.triggers.kafka.roundtrips` on a real broker.

They skip hops to kafka-python's network thread that would do nothing; what must not change is
what a consumer reads: every record once, in offset order per partition, with small polls
(many of them answered from the buffered fetch) and with the fetches that follow.
"""

from __future__ import annotations

import time
import uuid
from collections import defaultdict

from kafka import KafkaConsumer, KafkaProducer
from kafka.structs import OffsetAndMetadata, TopicPartition

from tests.peers import KafkaBroker
from tickrun.triggers.kafka import roundtrips


def _consumer(bootstrap: str, topic: str, group: str) -> KafkaConsumer:
    return KafkaConsumer(
        topic,
        bootstrap_servers=bootstrap,
        group_id=group,
        auto_offset_reset="earliest",
        enable_auto_commit=False,
        max_poll_records=7,  # many polls per fetch: the buffered path and the fetch path
        fetch_max_wait_ms=50,
    )


def test_every_record_once_in_order_with_the_shortcuts(kafka_broker: KafkaBroker) -> None:
    bootstrap = kafka_broker.bootstrap_servers
    topic, group = f"rt-{uuid.uuid4().hex[:6]}", f"rt-{uuid.uuid4().hex[:6]}"
    kafka_broker.create_topic(topic, partitions=3)
    producer = KafkaProducer(bootstrap_servers=bootstrap)
    n = 600
    for i in range(n):
        producer.send(topic, str(i).encode(), partition=i % 3)
    producer.flush()
    producer.close()

    consumer = _consumer(bootstrap, topic, group)
    assert roundtrips.install(consumer), "kafka-python 3's internals are where we expect"
    seen: dict[int, list[int]] = defaultdict(list)
    deadline = time.monotonic() + 60
    try:
        while sum(map(len, seen.values())) < n and time.monotonic() < deadline:
            for tp, records in consumer.poll(timeout_ms=200).items():
                seen[tp.partition].extend(int(r.value) for r in records)
        consumer.commit(
            {TopicPartition(topic, p): OffsetAndMetadata(n // 3, "", -1) for p in range(3)}
        )
    finally:
        consumer.close()
    for p in range(3):
        assert seen[p] == list(range(p, n, 3)), f"partition {p}: each record once, in order"

    # The coordinator shortcut answered polls; the commit went through the real coordinator.
    again = _consumer(bootstrap, topic, group)
    roundtrips.install(again)
    try:
        left = [r for _ in range(5) for rs in again.poll(timeout_ms=300).values() for r in rs]
    finally:
        again.close()
    assert left == [], "the group's committed offsets were used: nothing read twice"
