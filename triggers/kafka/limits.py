"""How big a record the brokers accept, so the trigger's producer follows them.

kafka-python refuses any record above its ``max_request_size`` (1 MiB by default) before it
reaches a broker, whatever the broker allows: a broker raised to 8 MB (``message.max.bytes``)
delivers 5 MB records that the trigger then could not dead-letter as they are. At start the
trigger asks the cluster (one admin round trip, never per event) for the broker's
``message.max.bytes`` and the effective ``max.message.bytes`` of the topics it produces to
(dead-letter and output topics) and sizes the producer by them. If the cluster does not answer
(no DescribeConfigs permission, an old broker), kafka-python's default stays and the
dead-letter envelope (:mod:`.envelope`) still keeps a too-big record from blocking a partition.
"""

from __future__ import annotations

import logging
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any

from kafka import KafkaAdminClient
from kafka.admin import ConfigResource, ConfigResourceType

logger = logging.getLogger(__name__)

# kafka-python's max_request_size default: the limit when the cluster does not say.
CLIENT_DEFAULT_BYTES = 1_048_576
# kafka-python's buffer_memory default: a single record cannot be larger than the buffer.
PRODUCER_BUFFER_BYTES = 32 * 1024 * 1024
# A record's bytes on the wire besides key, value and headers: the batch header (61 bytes) and
# the record's varints, rounded up. Used to compare a record with a topic's limit.
RECORD_OVERHEAD_BYTES = 128

TOPIC_LIMIT = "max.message.bytes"
BROKER_LIMIT = "message.max.bytes"


@dataclass(frozen=True, slots=True)
class SizeLimits:
    """The largest record, in bytes, each topic takes (``default_bytes`` for the others)."""

    default_bytes: int = CLIENT_DEFAULT_BYTES
    topics: Mapping[str, int] = field(default_factory=dict)
    from_cluster: bool = False  # False: the cluster did not say, these are client defaults

    def for_topic(self, topic: str) -> int:
        return self.topics.get(topic, self.default_bytes)

    @property
    def max_request_bytes(self) -> int:
        """The producer's ``max_request_size``: the largest limit of a topic it writes to."""
        largest = max([self.default_bytes, *self.topics.values()])
        return min(largest, PRODUCER_BUFFER_BYTES)

    @property
    def smallest_bytes(self) -> int:
        """Below this, a record fits every topic (a one-compare fast path for each send)."""
        return min([self.default_bytes, *self.topics.values()])


def record_size(key: bytes | None, value: bytes | None, headers: Iterable[Any]) -> int:
    """A record's size as the brokers' limits count it (an upper estimate)."""
    size = RECORD_OVERHEAD_BYTES + len(key or b"") + len(value or b"")
    for name, raw in headers:
        size += len(name) + len(raw or b"") + 10  # the two length varints, at most
    return size


def _int_value(configs: Mapping[str, Any], name: str) -> int | None:
    entry = configs.get(name)
    raw = entry.get("value") if isinstance(entry, Mapping) else None
    try:
        value = int(raw) if raw is not None else None
    except (TypeError, ValueError):
        return None
    return value if value is not None and value > 0 else None


def parse_limits(described: Mapping[str, Any], topics: Iterable[str]) -> SizeLimits:
    """:class:`SizeLimits` from kafka-python's ``describe_configs`` answer.

    A topic that does not exist yet (a dead-letter topic the broker will auto-create) answers
    with no configs and gets the broker's limit. The smallest broker value is used when
    several brokers answered.
    """
    brokers = described.get("broker") or {}
    broker_values = [v for v in (_int_value(c, BROKER_LIMIT) for c in brokers.values()) if v]
    default = min(broker_values) if broker_values else None
    topic_configs = described.get("topic") or {}
    limits = {}
    for topic in topics:
        value = _int_value(topic_configs.get(topic) or {}, TOPIC_LIMIT)
        if value is not None:
            limits[topic] = value
    if default is None and not limits:
        return SizeLimits()
    return SizeLimits(
        default_bytes=default or CLIENT_DEFAULT_BYTES, topics=limits, from_cluster=True
    )


def admin_kwargs(client_kwargs: Mapping[str, Any]) -> dict[str, Any]:
    """The connection settings (brokers, TLS, SASL, timeouts) the admin client also takes."""
    accepted = KafkaAdminClient.DEFAULT_CONFIG
    return {k: v for k, v in client_kwargs.items() if k in accepted}


def read_limits(client_kwargs: Mapping[str, Any], topics: Iterable[str]) -> SizeLimits:
    """Ask the cluster for its record size limits; client defaults if it cannot say.

    Blocking (a few round trips): called on the consumer thread when it connects.
    """
    wanted = sorted(set(topics))
    try:
        admin = KafkaAdminClient(**admin_kwargs(client_kwargs))
        try:
            brokers = admin.describe_cluster().get("brokers") or []
            resources = [
                ConfigResource(ConfigResourceType.TOPIC, topic, {TOPIC_LIMIT: None})
                for topic in wanted
            ]
            # One broker's config speaks for the cluster (they are configured alike).
            ids = [b.get("broker_id", b.get("node_id")) for b in brokers[:1]]
            resources += [
                ConfigResource(ConfigResourceType.BROKER, str(i), {BROKER_LIMIT: None})
                for i in ids
                if i is not None
            ]
            described = admin.describe_configs(resources, config_filter="all")
        finally:
            admin.close()
    except Exception as exc:  # an admin failure only costs the raised limit, never the start
        logger.warning(
            "cannot read the brokers' record size limits (%s: %s); producing with the client "
            "default of %d bytes, and records above it are dead-lettered as envelopes",
            type(exc).__name__,
            exc,
            CLIENT_DEFAULT_BYTES,
        )
        return SizeLimits()
    limits = parse_limits(described, wanted)
    logger.info(
        "kafka record size limits: %d bytes by default, %s; producer max_request_size %d",
        limits.default_bytes,
        dict(limits.topics) or "no topic overrides",
        limits.max_request_bytes,
    )
    return limits
