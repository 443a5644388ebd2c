"""Kafka-triggered test functions served as real ``tickrun serve`` replicas.

The handler (``HANDLER`` below) appends one line per attempt and per success to a file per
process (``<pid>.log`` in ``$RESULTS_DIR``) with an O_APPEND write, so the record survives a
``kill -9`` of the replica a microsecond later. Each event's JSON body steers the handler:
``{"fail_times": n}`` raises on the first n attempts, ``{"poison": true}`` always raises,
``{"sleep_s": x}`` sleeps, ``{"hang_once_s": x}`` sleeps on its first attempt in any process.
``main:async_handler`` (``async_handler=True``) does the same as a coroutine.
"""

from __future__ import annotations

import json
import time
import urllib.error
import urllib.request
from collections import Counter
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml
from kafka import KafkaAdminClient, KafkaConsumer, KafkaProducer
from kafka.structs import TopicPartition

from tests.support.processes import ServedFunction, live_logs

HANDLER = """
import asyncio, json, os, threading, time

_fd = None
_attempts = {}
_lock = threading.Lock()


def init_context(context):
    global _fd
    path = os.path.join(os.environ["RESULTS_DIR"], f"{os.getpid()}.log")
    _fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o644)


def _line(kind, event):
    os.write(_fd, f"{kind} {event.topic} {event.shard_id} {event.offset}\\n".encode())


def _attempt(event):
    body = event.body if isinstance(event.body, dict) else {}
    _line("A", event)
    with _lock:
        n = _attempts[event.id] = _attempts.get(event.id, 0) + 1
    return body, n


def _first_hang(event, body):
    if not body.get("hang_once_s"):
        return False
    marker = os.path.join(os.environ["RESULTS_DIR"], f"hung-{event.shard_id}-{event.offset}")
    try:
        os.close(os.open(marker, os.O_CREAT | os.O_EXCL))
    except FileExistsError:
        return False
    return True


def _finish(event, body, n):
    if body.get("poison") or n <= body.get("fail_times", 0):
        raise ValueError(f"refusing {event.id} on attempt {n}")
    _line("D", event)
    return body.get("reply")


def handler(context, event):
    body, n = _attempt(event)
    if body.get("sleep_s"):
        time.sleep(body["sleep_s"])
    if _first_hang(event, body):
        time.sleep(body["hang_once_s"])
    return _finish(event, body, n)


async def async_handler(context, event):
    body, n = _attempt(event)
    if body.get("sleep_s"):
        await asyncio.sleep(body["sleep_s"])
    if _first_hang(event, body):
        await asyncio.sleep(body["hang_once_s"])
    return _finish(event, body, n)
"""


@dataclass(frozen=True)
class Handled:
    kind: str  # "A" attempt, "D" done
    pid: int
    topic: str
    partition: int
    offset: int


def write_function(
    root: Path,
    *,
    brokers: str,
    topics: list[str],
    group: str,
    name: str = "kafka-test",
    num_workers: int = 4,
    attributes: dict[str, Any] | None = None,
    drain_timeout: str = "20s",
    event_timeout: str | None = None,
    async_handler: bool = False,
) -> Path:
    fn_dir = root / name
    fn_dir.mkdir(parents=True, exist_ok=True)
    (root / "results").mkdir(exist_ok=True)
    (fn_dir / "main.py").write_text(HANDLER, encoding="utf-8")
    attrs: dict[str, Any] = {
        "brokers": brokers,
        "topics": topics,
        "consumerGroup": group,
        "initialOffset": "earliest",
        # Short group timeouts so rebalances take seconds (the test broker allows >= 1 s).
        "sessionTimeout": "6s",
        "heartbeatInterval": "1s",
        "maxWaitHandlerDuringRebalance": "5s",
        "retryBackoff": "50ms",
        "retryBackoffMax": "200ms",
    }
    attrs.update(attributes or {})
    spec = {
        "metadata": {"name": name},
        "spec": {
            "handler": "main:async_handler" if async_handler else "main:handler",
            "drainTimeout": drain_timeout,
            **({"eventTimeout": event_timeout} if event_timeout else {}),
            "env": [{"name": "RESULTS_DIR", "value": str(root / "results")}],
            "triggers": {
                "ticks": {"kind": "kafka-cluster", "numWorkers": num_workers, "attributes": attrs}
            },
        },
    }
    (fn_dir / "function.yaml").write_text(yaml.safe_dump(spec), encoding="utf-8")
    return fn_dir


def serve(fn_dir: Path, workers: int = 1, **kwargs: Any) -> ServedFunction:
    return ServedFunction(fn_dir, "--workers", str(workers)).start(**kwargs)


def handled(root: Path) -> list[Handled]:
    out: list[Handled] = []
    for path in sorted((root / "results").glob("*.log")):
        pid = int(path.stem)
        for line in path.read_text(encoding="utf-8").splitlines():
            parts = line.split()
            if len(parts) == 4:  # a line cut by kill -9 has fewer fields
                out.append(Handled(parts[0], pid, parts[1], int(parts[2]), int(parts[3])))
    return out


def done(root: Path) -> list[Handled]:
    return [h for h in handled(root) if h.kind == "D"]


def wait_for(cond: Callable[[], bool], timeout_s: float, what: str, step_s: float = 0.2) -> None:
    deadline = time.monotonic() + timeout_s
    while not cond():
        if time.monotonic() > deadline:
            raise AssertionError(
                f"timed out after {timeout_s:.0f}s waiting for {what}\n{live_logs()}"
            )
        time.sleep(step_s)


def produce(
    brokers: str,
    topic: str,
    bodies: Iterable[Any],
    *,
    partition_of: Callable[[int], int] | None = None,
    key_of: Callable[[int], bytes | None] | None = None,
    headers: list[tuple[str, bytes]] | None = None,
    **producer_options: Any,
) -> int:
    """Produce ``bodies`` (bytes as-is, the rest as JSON); ``producer_options`` go to the
    ``KafkaProducer`` (e.g. ``max_request_size`` for big records)."""
    producer = KafkaProducer(
        bootstrap_servers=brokers, linger_ms=10, acks="all", **producer_options
    )
    n = 0
    try:
        for i, body in enumerate(bodies):
            value = body if isinstance(body, bytes) else json.dumps(body).encode()
            producer.send(
                topic,
                value=value,
                key=key_of(i) if key_of else None,
                partition=partition_of(i) if partition_of else None,
                headers=headers or [],
            )
            n += 1
        producer.flush(timeout=60)
    finally:
        producer.close()
    return n


def end_offsets(brokers: str, topic: str, partitions: int) -> dict[int, int]:
    consumer = KafkaConsumer(bootstrap_servers=brokers)
    try:
        tps = [TopicPartition(topic, p) for p in range(partitions)]
        return {tp.partition: off for tp, off in consumer.end_offsets(tps).items()}
    finally:
        consumer.close()


def committed(brokers: str, group: str, topic: str) -> dict[int, int]:
    admin = KafkaAdminClient(bootstrap_servers=brokers)
    try:
        # kafka-python 3 renamed list_consumer_group_offsets; both return {tp: OffsetAndMetadata}.
        if hasattr(admin, "list_group_offsets"):
            offsets = admin.list_group_offsets(group).get(group, {})
        else:
            offsets = admin.list_consumer_group_offsets(group)
    finally:
        admin.close()
    return {tp.partition: meta.offset for tp, meta in offsets.items() if tp.topic == topic}


def read_topic(brokers: str, topic: str, expect: int, timeout_s: float = 30.0) -> list[Any]:
    consumer = KafkaConsumer(
        topic,
        bootstrap_servers=brokers,
        auto_offset_reset="earliest",
        consumer_timeout_ms=1000,
        enable_auto_commit=False,
    )
    records: list[Any] = []
    deadline = time.monotonic() + timeout_s
    try:
        while len(records) < expect and time.monotonic() < deadline:
            records.extend(consumer)
    finally:
        consumer.close()
    return records


def readyz(fn: ServedFunction) -> tuple[int, dict[str, Any]]:
    try:
        with urllib.request.urlopen(f"{fn.url}/readyz", timeout=5) as resp:
            return resp.status, json.loads(resp.read())
    except urllib.error.HTTPError as exc:
        return exc.code, json.loads(exc.read())


def metrics_text(fn: ServedFunction) -> str:
    with urllib.request.urlopen(f"{fn.url}/metrics", timeout=5) as resp:
        return str(resp.read().decode())


def duplicates(records: list[Handled]) -> int:
    counts = Counter((h.topic, h.partition, h.offset) for h in records)
    return sum(c - 1 for c in counts.values())
