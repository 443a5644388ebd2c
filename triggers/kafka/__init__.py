"""The Kafka trigger (``kind: kafka-cluster``), on kafka-python or, as an option, confluent-kafka.

A worker process is one consumer-group member: with ``tickrun serve --workers N`` or several
replicas, the topics' partitions spread over the processes. Within a partition, events reach the
handler in offset order; partitions run in parallel up to the trigger's ``maxWorkers`` /
``numWorkers``. Offsets are committed (in batches) only once handled, before a rebalance takes
partitions away, and on shutdown; failures retry, then go to a dead-letter topic
(the retry policy is :mod:`tickrun.triggers.retry`; giving up, :mod:`.failures` and
:mod:`.envelope`).

``numWorkers: 1`` (the default) with a sync handler is the fast path: the consumer thread runs
the handler itself between polls, as a hand-written consumer loop would: with a no-op handler
it kept 0.92-0.94x a raw kafka-python loop's events/s (best of 5 rounds; per-round median
0.92-0.99x; two runs of ``python -m bench.kafka --rounds 5``). More workers (or an
``async def`` handler) go through the event loop (and a handler thread pool for sync ones),
a batch of a partition's events per hop: worth it for handlers that wait on I/O, not for
CPU-bound Python, whose threads share one GIL; for those, add worker processes instead
(``spec.workers``). With more workers, a sync handler measured fast (under 50 µs an event)
runs on the consumer thread too while the pool is idle (``inlineFastHandler``, on by default,
:mod:`.inline`); an event that runs long there (0.2 s) is taken over: it holds one slot, as on
the pool, polling moves to a new thread and the other partitions go on. While a sync handler is
measured fast on the pool, the pool takes the ready partitions' batches in one hop, one such
batch at a time (:mod:`.lane`).

``attributes.client: confluent-kafka`` runs the same trigger on librdkafka (:mod:`.confluent`):
same groups, at-least-once commits, rebalance settling, dead letters, flow control and events;
records are decoded in C with the GIL released, so a replica takes ~2x the events of a raw
kafka-python loop for about half the CPU per event (``python -m bench.kafka``, which measures
both clients beside raw loops of each). kafka-python stays the default.

In ``function.yaml`` (Nuclio's attribute names, plus tickrun's commit and failure policy)::

    triggers:
      klines:
        kind: kafka-cluster
        numWorkers: 1                  # partitions handled at once per worker process
        attributes:
          brokers: "kafka-0:9092,kafka-1:9092"   # optional: default TICKRUN_KAFKA_BROKERS
          topics: [market.klines]
          consumerGroup: market-signals
          initialOffset: earliest      # or latest
          sessionTimeout: 10s
          heartbeatInterval: 3s
          maxWaitHandlerDuringRebalance: 5s
          maxWaitTime: 50ms            # fetch wait (kafka-python's 500 ms default is slow)
          commitInterval: 1s           # commit at least this often …
          commitBatchSize: 1000        # … or after this many handled events
          maxRetries: 3                # then onFailure:
          retryBackoff: 200ms          # doubled per attempt up to retryBackoffMax
          retryBackoffMax: 10s
          onFailure: dead-letter       # or skip, or block
          deadLetterTopic: market.klines.dlq   # default <topic>.dlq
          outputTopic: market.signals  # handler return values go here
          sasl: {enable: true, user: svc, password: "…", mechanism: SCRAM-SHA-256}
          tls: {enable: true, caCert: /etc/kafka/ca.pem}
          client: kafka-python         # or confluent-kafka (librdkafka)
          inlineFastHandler: true      # numWorkers > 1: a fast sync handler on the consumer
                                       # thread while the pool is idle (false: always the pool)

What a handler sees (see :mod:`.event` for the body decoding rule)::

    event.body        # dict/list for JSON values, else bytes
    event.key         # record key, bytes or None
    event.headers     # {name: str (UTF-8) or bytes}
    event.topic, event.shard_id (partition), event.offset, event.id ("topic/partition/offset")
    event.timestamp   # datetime, UTC, millisecond precision
    event.trigger.kind == "kafka-cluster", event.trigger.name

Publishing (e.g. signals of a market pipeline)::

    def handler(context, event):
        context.kafka.publish({"signal": "buy"}, key=event.key)        # to outputTopic
        context.kafka.publish(b"raw", topic="audit")                    # any topic
        return {"signal": "buy"}   # also produced to outputTopic when it is set; None → nothing

Outputs are acknowledged by Kafka before the offset that produced them is committed.

One bad record never stops a partition: a failed record the dead-letter topic cannot take as it
is (too big, refused) goes there as a JSON envelope (where it came from, key, size, error,
headers; not the value, see :mod:`.envelope`), and so does a record the client cannot decode.
The producer's size limit follows the brokers' ``message.max.bytes`` and the topics'
``max.message.bytes`` (read once at start, :mod:`.limits`); a result bigger than the output
topic takes fails its event, which then retries and is dead-lettered like any failure.

The package registers the kind (:data:`KIND`) with only its spec model imported (:mod:`.spec`);
kafka-python loads with the trigger, when a function runs one.
"""

from __future__ import annotations

import threading
from typing import TYPE_CHECKING, Any

from tickrun.functions.interfaces import TriggerFactory

from ..base import lazy_exports

if TYPE_CHECKING:
    from tickrun.functions.spec.triggers import TriggerKind

    from .config import KafkaConfig
    from .publish import KafkaContext
    from .spec import KafkaTriggerSpec
    from .trigger import KafkaTrigger

    KIND: TriggerKind

__all__ = ["KIND", "KafkaConfig", "KafkaContext", "KafkaTrigger", "KafkaTriggerSpec"]


def _load_trigger() -> TriggerFactory:
    from .trigger import KafkaTrigger

    return KafkaTrigger


# KIND (with its pydantic spec) is built on first use, by the spec registry resolving
# "tickrun.triggers.kafka:KIND": importing this package for `tickrun kafka replay`'s parser
# (every `tickrun --help`) must not import pydantic and the function spec.
_kind_lock = threading.Lock()
_exports = lazy_exports(
    __name__,
    {
        "KafkaTrigger": ".trigger",
        "KafkaConfig": ".config",
        "KafkaContext": ".publish",
        "KafkaTriggerSpec": ".spec",
    },
)


def _kind() -> TriggerKind:
    from tickrun.functions.spec.triggers import TriggerKind

    from .spec import KafkaTriggerSpec

    with _kind_lock:
        kind = globals().get("KIND")
        if not isinstance(kind, TriggerKind):
            kind = TriggerKind(
                name="kafka-cluster",
                spec=KafkaTriggerSpec,
                load_trigger=_load_trigger,
                extra="kafka",
            )
            globals()["KIND"] = kind  # one object: the registry and callers see the same
        return kind


def __getattr__(name: str) -> Any:
    if name == "KIND":
        return _kind()
    return _exports(name)
