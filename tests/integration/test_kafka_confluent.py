"""The Kafka trigger's behaviour tests again, with ``attributes.client: confluent-kafka``.

The tests of test_kafka_trigger.py (order, retries, dead letters, outputs, drain on SIGTERM, a
hung handler, a long event taken over from the consumer thread), test_kafka_rebalance.py (a second member joining and leaving, kill -9 loses
nothing and bounds duplicates) and test_kafka_oversized.py (envelopes, the producer following
the brokers' limits, an unreadable record) run here unchanged, their functions served with the
librdkafka consumer thread (:mod:`tickrun.triggers.kafka.confluent`), and so do two of
test_kafka_start_errors.py (a topic created later, SASL against a plaintext listener); plus flow
control (a slow handler's backlog stays bounded: partitions paused), unreachable brokers
reported, and the event a handler sees, field by field the same as with kafka-python.
"""

from __future__ import annotations

import json
import uuid
from pathlib import Path
from typing import Any

import pytest
import yaml
from kafka import KafkaProducer

from tests.integration import test_kafka_oversized as oversized
from tests.integration import test_kafka_rebalance as rebalance
from tests.integration import test_kafka_start_errors as start_errors
from tests.integration import test_kafka_trigger as trigger
from tests.integration.test_kafka_oversized import (  # noqa: F401  (fixtures and tests reused)
    big_broker,
    slots,
    test_a_record_the_client_cannot_decode_goes_as_an_envelope,
    test_a_record_too_big_for_the_dead_letter_topic_goes_as_an_envelope,
    test_a_result_too_big_for_the_output_topic_fails_its_event_and_the_partition_moves_on,
    test_the_producer_follows_the_brokers_raised_limit,
)
from tests.integration.test_kafka_rebalance import (  # noqa: F401
    test_kill_9_mid_stream_loses_nothing_and_bounds_duplicates,
    test_two_replicas_share_four_partitions_and_rebalance_when_one_stops,
)
from tests.integration.test_kafka_start_errors import (  # noqa: F401
    _not_ready_with_error,
    test_sasl_against_a_plaintext_listener,
    test_unknown_topic_then_created,
)
from tests.integration.test_kafka_trigger import (  # noqa: F401
    mode,
    test_a_handler_hung_past_the_event_timeout_does_not_stall_the_partition,
    test_a_long_event_on_the_consumer_thread_holds_one_slot_only,
    test_handler_failing_twice_then_succeeding,
    test_order_per_partition_and_everything_committed,
    test_poison_message_is_dead_lettered_and_the_partition_moves_on,
    test_return_value_is_produced_to_the_output_topic,
    test_several_topics_one_group_with_counted_metrics,
    test_sigterm_drains_and_commits_what_was_done,
)
from tests.peers import KafkaBroker
from tests.support.kafka_functions import (
    committed,
    done,
    metrics_text,
    produce,
    serve,
    wait_for,
    write_function,
)
from tests.support.processes import free_port

pytestmark = [pytest.mark.kafka, pytest.mark.slow, pytest.mark.timeout(420)]

CLIENT = "confluent-kafka"


def _write_confluent(*args: Any, attributes: dict[str, Any] | None = None, **kwargs: Any) -> Path:
    return write_function(*args, attributes={"client": CLIENT, **(attributes or {})}, **kwargs)


@pytest.fixture(autouse=True)
def _confluent_client(monkeypatch: pytest.MonkeyPatch) -> None:
    """Every function the reused tests write asks for the confluent-kafka client."""
    for module in (trigger, rebalance, oversized, start_errors):
        monkeypatch.setattr(module, "write_function", _write_confluent)


def _counter(text: str, name: str, topic: str) -> float:
    total = 0.0
    for line in text.splitlines():
        if line.startswith(name + "{") and f'topic="{topic}"' in line:
            total += float(line.rsplit(" ", 1)[1])
    return total


def test_a_slow_handlers_backlog_stays_bounded(kafka_broker: KafkaBroker, tmp_path: Path) -> None:
    """librdkafka prefetches whole topics; the trigger pauses a partition whose fetched but
    unhandled records pass its bound, so memory stays bounded, and resumes it once drained."""
    bs = kafka_broker.bootstrap_servers
    tag = uuid.uuid4().hex[:8]
    topic, group = f"flow-{tag}", f"group-flow-{tag}"
    kafka_broker.create_topic(topic, partitions=1)
    n, max_poll = 6000, 50  # pause above max(50 * 4, 1000) = 1000 outstanding events
    produce(bs, topic, ({"i": i, "sleep_s": 0.0005} for i in range(n)))
    fn = serve(
        _write_confluent(
            tmp_path,
            brokers=bs,
            topics=[topic],
            group=group,
            num_workers=2,
            attributes={"maxPollRecords": max_poll},
        )
    )
    backlogs: list[float] = []
    try:

        def sampled_done() -> bool:
            text = metrics_text(fn)
            consumed = _counter(text, "tickrun_kafka_consumed_total", topic)
            processed = _counter(text, "tickrun_kafka_processed_total", topic)
            backlogs.append(consumed - processed)
            return processed >= n

        wait_for(sampled_done, 180, f"{n} events handled")
        wait_for(lambda: committed(bs, group, topic) == {0: n}, 30, "everything committed")
    finally:
        assert fn.terminate() == 0
    # librdkafka alone would have fetched all 6,000 at once; paused, the backlog stays within
    # the bound plus one consume() and what was in flight when the pause was asked.
    assert max(backlogs) <= 1000 + 2 * max_poll + 500, max(backlogs)
    assert len({(h.partition, h.offset) for h in done(tmp_path)}) == n


def test_unreachable_brokers_are_reported(tmp_path: Path) -> None:
    dead = f"127.0.0.1:{free_port()}"
    fn = serve(_write_confluent(tmp_path, brokers=dead, topics=["t"], group="g"))
    try:
        record = _not_ready_with_error(fn, dead)
    finally:
        fn.terminate()
    assert record["brokers"] == [dead]
    assert "retrying in" in str(record["message"])
    assert "Traceback" not in str(record)


EVENT_HANDLER = """
import json, os

def handler(context, event):
    fields = {
        "topic": event.topic, "path": event.path, "shard_id": event.shard_id,
        "offset": event.offset, "id": event.id, "size": event.size,
        "key": event.key.hex() if event.key is not None else None,
        "headers": {k: v if isinstance(v, str) else v.hex() for k, v in event.headers.items()},
        "timestamp": event.timestamp.isoformat(), "body": repr(event.body),
        "content_type": event.content_type, "trigger": [event.trigger.kind, event.trigger.name],
        "type": type(event).__name__,
    }
    path = os.path.join(os.environ["RESULTS_DIR"], os.environ["CLIENT"] + ".jsonl")
    with open(path, "a", encoding="utf-8") as fh:
        fh.write(json.dumps(fields) + "\\n")
"""


def test_handlers_see_the_same_event_on_both_clients(
    kafka_broker: KafkaBroker, tmp_path: Path
) -> None:
    bs = kafka_broker.bootstrap_servers
    tag = uuid.uuid4().hex[:8]
    topic = f"fields-{tag}"
    kafka_broker.create_topic(topic, partitions=2)
    producer = KafkaProducer(bootstrap_servers=bs, acks="all")
    try:
        sends = [
            (b'{"a": 1}', b"k1", [("content-type", b"application/json"), ("x-bin", b"\xff\x00")]),
            (b"[1, 2]", None, []),
            (b"plain bytes", b"\x00\x01", [("trace", b"abc")]),
            (b"", b"empty", []),
        ]
        for i, (value, key, headers) in enumerate(sends):
            producer.send(topic, value, key=key, headers=headers, partition=i % 2).get(30)
    finally:
        producer.close()
    results = tmp_path / "results"
    results.mkdir()
    seen: dict[str, list[dict[str, Any]]] = {}
    for client in ("kafka-python", CLIENT):
        fn_dir = tmp_path / f"fn-{client}"
        fn_dir.mkdir()
        (fn_dir / "main.py").write_text(EVENT_HANDLER, encoding="utf-8")
        spec = {
            "metadata": {"name": "fields"},
            "spec": {
                "handler": "main:handler",
                "env": [
                    {"name": "RESULTS_DIR", "value": str(results)},
                    {"name": "CLIENT", "value": client},
                ],
                "triggers": {
                    "ticks": {
                        "kind": "kafka-cluster",
                        "numWorkers": 1,
                        "attributes": {
                            "brokers": bs,
                            "topics": [topic],
                            "consumerGroup": f"g-{client}-{tag}",
                            "client": client,
                        },
                    }
                },
            },
        }
        (fn_dir / "function.yaml").write_text(yaml.safe_dump(spec), encoding="utf-8")
        out = results / f"{client}.jsonl"
        fn = serve(fn_dir)
        try:
            wait_for(
                lambda out=out: out.exists() and len(out.read_text().splitlines()) >= len(sends),
                60,
                f"{client}: every record handled",
            )
        finally:
            assert fn.terminate() == 0
        lines = [json.loads(line) for line in out.read_text().splitlines()]
        seen[client] = sorted(lines, key=lambda f: (f["shard_id"], f["offset"]))
    assert len(seen[CLIENT]) == len(sends)
    assert seen[CLIENT] == seen["kafka-python"]
    assert {f["content_type"] for f in seen[CLIENT]} >= {"application/json"}
