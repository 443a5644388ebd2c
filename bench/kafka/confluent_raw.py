"""The raw confluent-kafka (librdkafka) consumer loop: the baseline of the trigger's
``attributes.client: confluent-kafka`` rows in ``python -m bench.kafka --client confluent-kafka``.

Same contract as :func:`bench.kafka.__main__.raw_loop`: one consumer of a fresh group, the same
fetch wait, ``consume(500)`` batches, JSON-decode and call the handler per record, a synchronous
commit of the handled offsets once a second; the clock starts after the first tenth.
"""

from __future__ import annotations

import json
import time
import uuid
from collections.abc import Callable
from typing import Any

from confluent_kafka import Consumer, TopicPartition


def raw_confluent_loop(
    bootstrap: str,
    topic: str,
    n: int,
    fn: Callable[[Any], Any],
    *,
    fetch_max_wait_ms: int,
    batch: int,
    commit_interval_s: float,
    warmup: float,
) -> tuple[int, float]:
    """(events timed, seconds) for consuming ``n`` records of ``topic``."""
    consumer = Consumer(
        {
            "bootstrap.servers": bootstrap,
            "group.id": f"raw-confluent-{uuid.uuid4().hex[:8]}",
            "auto.offset.reset": "earliest",
            "enable.auto.commit": False,
            "enable.auto.offset.store": False,
            "fetch.wait.max.ms": fetch_max_wait_ms,
        }
    )
    consumer.subscribe([topic])
    seen = 0
    warm = max(int(n * warmup), 1)
    t0: float | None = None
    last_commit = time.monotonic()
    done: dict[tuple[str, int], int] = {}
    loads = json.loads
    try:
        while seen < n:
            for m in consumer.consume(batch, 0.1):
                if m.error() is not None:
                    continue
                fn(loads(m.value()))
                done[(m.topic(), m.partition())] = m.offset() + 1
                seen += 1
                if seen == warm:
                    t0 = time.perf_counter()
            if done and (time.monotonic() - last_commit >= commit_interval_s or seen >= n):
                offsets = [TopicPartition(t, p, o) for (t, p), o in done.items()]
                consumer.commit(offsets=offsets, asynchronous=False)
                last_commit = time.monotonic()
        if t0 is None:
            raise RuntimeError("the raw confluent loop never passed its warm-up")
        return seen - warm, time.perf_counter() - t0
    finally:
        consumer.close()
