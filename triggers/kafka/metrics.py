"""Prometheus metrics of the Kafka trigger (summed over worker processes by ``/metrics``).

Lag is a gauge per partition: only the process that owns a partition reports a non-zero value
(it zeroes the gauge when the partition is revoked), so ``livesum`` over live processes is the
partition's lag. Topic-level counters avoid one series per partition where a sum is what people
graph.
"""

from __future__ import annotations

from prometheus_client import Counter, Gauge, Histogram

LABELS = ("function", "trigger", "topic")

CONSUMED = Counter(
    "tickrun_kafka_consumed_total", "Records fetched from Kafka and handed to the trigger.", LABELS
)
PROCESSED = Counter(
    "tickrun_kafka_processed_total", "Records whose handler succeeded (committable).", LABELS
)
FAILED = Counter(
    "tickrun_kafka_failed_total", "Handler attempts that failed (each retry counts).", LABELS
)
DEAD_LETTERED = Counter(
    "tickrun_kafka_dead_lettered_total",
    "Records given up on and produced to a dead-letter topic.",
    LABELS,
)
SKIPPED = Counter(
    "tickrun_kafka_skipped_total", "Records given up on and skipped (onFailure: skip).", LABELS
)
PUBLISHED = Counter(
    "tickrun_kafka_published_total",
    "Records produced: handler outputs (return value or context.kafka) and dead letters.",
    ("function", "trigger"),
)
PUBLISH_ERRORS = Counter(
    "tickrun_kafka_publish_errors_total",
    "Produce requests Kafka did not acknowledge.",
    ("function", "trigger"),
)
COMMIT_LATENCY = Histogram(
    "tickrun_kafka_commit_duration_seconds",
    "Time to flush pending output and commit one batch of offsets.",
    ("function", "trigger"),
    buckets=(0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0),
)
COMMITS = Counter(
    "tickrun_kafka_commits_total", "Offset commits, by outcome.", ("function", "trigger", "outcome")
)
LAG = Gauge(
    "tickrun_kafka_consumer_lag",
    "Records in the partition not yet handled here (log end - next offset to complete).",
    ("function", "trigger", "topic", "partition"),
    multiprocess_mode="livesum",
)
CONNECTED = Gauge(
    "tickrun_kafka_connected",
    "1 while the trigger's consumer is connected and subscribed.",
    ("function", "trigger"),
    multiprocess_mode="livesum",
)
ENVELOPED = Counter(
    "tickrun_kafka_dead_letter_envelopes_total",
    "Records dead-lettered as an envelope (too big, refused, or unreadable), not as they were.",
    LABELS,
)
