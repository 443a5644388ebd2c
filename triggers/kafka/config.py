"""The Kafka trigger's runtime settings: the spec's attributes as kafka-python arguments."""

from __future__ import annotations

import importlib.util
import os
import ssl
import tempfile
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from tickrun.functions.errors import SpecError, TriggerConfigError
from tickrun.functions.settings import KAFKA_BROKERS

from ..retry import RetryPolicy
from .spec import KafkaAttributes, KafkaTriggerSpec, SaslSpec, TlsSpec

# kafka-python's consumer is told to keep at most this many fetched-but-unhandled events per
# partition before the trigger pauses that partition (backpressure instead of unbounded memory).
PAUSE_FACTOR = 4


@dataclass(frozen=True, slots=True)
class KafkaConfig:
    """Everything the trigger needs, resolved once from the spec (no I/O here)."""

    name: str
    function: str
    brokers: tuple[str, ...]
    topics: tuple[str, ...]
    group: str
    commit_interval_s: float
    commit_batch_size: int
    retry: RetryPolicy
    dead_letter_topic: str | None
    output_topic: str | None
    rebalance_wait_s: float
    pause_above: int
    resume_below: int
    consumer: dict[str, Any] = field(repr=False)
    producer: dict[str, Any] = field(repr=False)
    sasl: SaslSpec = field(repr=False, default_factory=SaslSpec)
    tls: TlsSpec = field(repr=False, default_factory=TlsSpec)
    inline_fast_handler: bool = True  # see .inline
    client: str = "kafka-python"  # or "confluent-kafka" (see .confluent)
    rdkafka: dict[str, Any] = field(repr=False, default_factory=dict)  # librdkafka settings

    @classmethod
    def from_spec(
        cls, spec: KafkaTriggerSpec, function_name: str, env: Mapping[str, str] | None = None
    ) -> KafkaConfig:
        """``env`` (default os.environ) supplies TICKRUN_KAFKA_BROKERS when the spec names no
        brokers; a controller has already written its default into the spec."""
        a = spec.attributes
        name = spec.name or "kafka"
        brokers = resolve_brokers(spec, env)
        client_id = f"tickrun-{function_name}-{name}"
        common: dict[str, Any] = {
            "bootstrap_servers": list(brokers),
            "client_id": client_id,
            "security_protocol": _security_protocol(a.sasl, a.tls),
            # Report unreachable brokers within seconds instead of kafka-python's long default.
            "request_timeout_ms": 30_000,
            "reconnect_backoff_max_ms": 5_000,
            # Give up on unreachable brokers after 10 s (kafka-python: 30 s) and say so; the
            # consumer thread retries with backoff anyway.
            "bootstrap_timeout_ms": 10_000,
        }
        if a.sasl.enable:
            common["sasl_mechanism"] = a.sasl.mechanism
            common["sasl_plain_username"] = a.sasl.user
            common["sasl_plain_password"] = a.sasl.password
        consumer = {
            **common,
            "group_id": a.consumer_group,
            "auto_offset_reset": a.initial_offset,
            # tickrun commits itself, only offsets whose handler finished (at-least-once).
            "enable_auto_commit": False,
            # A missing topic is reported as an error, not silently created with defaults.
            "allow_auto_create_topics": False,
            "session_timeout_ms": int(a.session_timeout_s * 1000),
            "heartbeat_interval_ms": int(a.heartbeat_interval_s * 1000),
            "max_poll_interval_ms": max(int(a.rebalance_timeout_s * 1000), 1000),
            "max_poll_records": a.max_poll_records,
            "fetch_min_bytes": a.fetch_min_bytes,
            "fetch_max_bytes": a.fetch_max_bytes,
            "fetch_max_wait_ms": int(a.max_wait_time_s * 1000),
            "request_timeout_ms": max(30_000, int(a.session_timeout_s * 1000) + 5_000),
        }
        producer = {
            **common,
            "acks": "all",
            "linger_ms": 5,
            "retries": 5,
            # send() runs on the event loop: never let it block the loop for long.
            "max_block_ms": 10_000,
        }
        dead_letter = a.dead_letter_topic if a.on_failure == "dead-letter" else None
        if a.client == "confluent-kafka" and importlib.util.find_spec("confluent_kafka") is None:
            raise TriggerConfigError(
                f"kafka trigger {name!r} asks for client confluent-kafka, which is not "
                "installed here: install tickrun[kafka] (or confluent-kafka) in the image, "
                "or leave attributes.client at kafka-python"
            )
        pause_above = _pause_above(a)
        return cls(
            name=name,
            function=function_name,
            brokers=brokers,
            topics=tuple(a.topics),
            group=a.consumer_group,
            commit_interval_s=a.commit_interval_s,
            commit_batch_size=a.commit_batch_size,
            retry=RetryPolicy(
                max_retries=a.max_retries,
                backoff_s=a.retry_backoff_s,
                backoff_max_s=a.retry_backoff_max_s,
                on_failure=a.on_failure,
                kind="kafka",
            ),
            dead_letter_topic=dead_letter,
            output_topic=a.output_topic,
            rebalance_wait_s=a.max_wait_handler_during_rebalance_s,
            pause_above=pause_above,
            resume_below=pause_above // 2,
            inline_fast_handler=a.inline_fast_handler,
            client=a.client,
            rdkafka=_rdkafka_settings(a, brokers, client_id),
            consumer=consumer,
            producer=producer,
            sasl=a.sasl,
            tls=a.tls,
        )

    def dead_letter_topic_for(self, topic: str) -> str:
        return self.dead_letter_topic or f"{topic}.dlq"

    @property
    def on_failure(self) -> str:
        return self.retry.on_failure

    def backoff_s(self, attempt: int) -> float:
        """Delay before retry number ``attempt`` (1-based), as the retry policy waits."""
        return self.retry.delay_s(attempt)

    def describe_brokers(self) -> str:
        return ",".join(self.brokers)

    def client_kwargs(self, role: str) -> dict[str, Any]:
        """kafka-python arguments for ``role`` ('consumer' or 'producer'), with TLS resolved.

        Builds the SSL context (it may read certificate files), so call it at start, not in a
        constructor.
        """
        kwargs = dict(self.consumer if role == "consumer" else self.producer)
        if self.tls.enable:
            kwargs["ssl_context"] = build_ssl_context(self.tls)
        return kwargs


def resolve_brokers(
    spec: KafkaTriggerSpec, env: Mapping[str, str] | None = None
) -> tuple[str, ...]:
    """The trigger's brokers, else TICKRUN_KAFKA_BROKERS from ``env``; neither is an error."""
    if spec.attributes.brokers:
        return tuple(spec.attributes.brokers)
    try:
        brokers = KAFKA_BROKERS.get(env)
    except SpecError as exc:
        raise TriggerConfigError(exc.message) from exc
    if not brokers:
        name = spec.name or "kafka"
        raise TriggerConfigError(
            f"kafka trigger {name!r} names no brokers (attributes.brokers) and "
            f"{KAFKA_BROKERS.name} is not set: name them in the trigger, or set "
            f"{KAFKA_BROKERS.name}=host:port[,host:port]"
        )
    return brokers


def _pause_above(a: KafkaAttributes) -> int:
    return max(a.max_poll_records * PAUSE_FACTOR, 1000)


def _rdkafka_settings(
    a: KafkaAttributes, brokers: tuple[str, ...], client_id: str
) -> dict[str, Any]:
    """The same attributes as librdkafka settings (the confluent-kafka client), one dict for
    what consumer and producer share: ``rdkafka_settings`` adds each role's own."""
    out: dict[str, Any] = {
        "bootstrap.servers": ",".join(brokers),
        "client.id": client_id,
        "security.protocol": _security_protocol(a.sasl, a.tls).lower(),
        "reconnect.backoff.max.ms": 5_000,
        # Group and fetch settings, read by the consumer only (kept apart below).
        "group.id": a.consumer_group,
        "auto.offset.reset": a.initial_offset,
        # tickrun commits itself, only offsets whose handler finished (at-least-once).
        "enable.auto.commit": False,
        "enable.auto.offset.store": False,
        "allow.auto.create.topics": False,
        "session.timeout.ms": int(a.session_timeout_s * 1000),
        "heartbeat.interval.ms": int(a.heartbeat_interval_s * 1000),
        "max.poll.interval.ms": max(int(a.rebalance_timeout_s * 1000), 1000),
        "fetch.min.bytes": a.fetch_min_bytes,
        "fetch.max.bytes": a.fetch_max_bytes,
        # librdkafka refuses a response above this; it must exceed fetch.max.bytes.
        "receive.message.max.bytes": max(a.fetch_max_bytes + 1_048_576, 100_000_000),
        "fetch.wait.max.ms": int(a.max_wait_time_s * 1000),
        # librdkafka prefetches up to 100,000 records a partition (then looks again a second
        # later); a pause (flow control, .confluent) drops what was prefetched. Prefetch about
        # what the trigger keeps per partition, and look again soon.
        "queued.min.messages": _pause_above(a),
        "fetch.queue.backoff.ms": 10,
    }
    if a.sasl.enable:
        out["sasl.mechanism"] = a.sasl.mechanism
        out["sasl.username"] = a.sasl.user
        out["sasl.password"] = a.sasl.password
    if a.tls.enable:
        tls = a.tls
        if tls.ca_cert:
            out["ssl.ca.pem" if _is_pem(tls.ca_cert) else "ssl.ca.location"] = tls.ca_cert
        if tls.insecure_skip_verify:
            out["enable.ssl.certificate.verification"] = False
            out["ssl.endpoint.identification.algorithm"] = "none"
        if tls.access_certificate:
            if not tls.access_key:
                raise TriggerConfigError("tls.accessCertificate needs tls.accessKey")
            pem = _is_pem(tls.access_certificate)
            out["ssl.certificate.pem" if pem else "ssl.certificate.location"] = (
                tls.access_certificate
            )
            key_pem = _is_pem(tls.access_key)
            out["ssl.key.pem" if key_pem else "ssl.key.location"] = tls.access_key
    return out


# librdkafka settings only a consumer takes (a producer warns about them).
_CONSUMER_ONLY = frozenset(
    {
        "group.id",
        "auto.offset.reset",
        "enable.auto.commit",
        "enable.auto.offset.store",
        "allow.auto.create.topics",
        "session.timeout.ms",
        "heartbeat.interval.ms",
        "max.poll.interval.ms",
        "fetch.min.bytes",
        "fetch.max.bytes",
        "fetch.wait.max.ms",
        "queued.min.messages",
        "fetch.queue.backoff.ms",
    }
)


def rdkafka_settings(config: KafkaConfig, role: str) -> dict[str, Any]:
    """librdkafka settings for ``role`` ('consumer' or 'producer')."""
    if role == "consumer":
        return dict(config.rdkafka)
    out = {k: v for k, v in config.rdkafka.items() if k not in _CONSUMER_ONLY}
    out.pop("receive.message.max.bytes", None)
    # The kafka-python producer's settings (config.producer) in librdkafka's names.
    out.update({"acks": "all", "linger.ms": 5, "message.send.max.retries": 5})
    return out


def _security_protocol(sasl: SaslSpec, tls: TlsSpec) -> str:
    if sasl.enable:
        return "SASL_SSL" if tls.enable else "SASL_PLAINTEXT"
    return "SSL" if tls.enable else "PLAINTEXT"


def _is_pem(value: str) -> bool:
    return value.lstrip().startswith("-----BEGIN")


def build_ssl_context(tls: TlsSpec) -> ssl.SSLContext:
    """An SSL context from the spec's ``tls``: each certificate is PEM text or a file path."""
    try:
        ctx = ssl.create_default_context()
        if tls.ca_cert:
            if _is_pem(tls.ca_cert):
                ctx.load_verify_locations(cadata=tls.ca_cert)
            else:
                ctx.load_verify_locations(cafile=tls.ca_cert)
        if tls.insecure_skip_verify:
            ctx.check_hostname = False
            ctx.verify_mode = ssl.CERT_NONE
        if tls.access_certificate:
            if not tls.access_key:
                raise TriggerConfigError("tls.accessCertificate needs tls.accessKey")
            _load_client_cert(ctx, tls.access_certificate, tls.access_key)
    except (OSError, ssl.SSLError) as exc:
        raise TriggerConfigError(f"kafka tls settings are unusable: {exc}") from exc
    return ctx


def _load_client_cert(ctx: ssl.SSLContext, cert: str, key: str) -> None:
    # ssl only loads client certificates from files; PEM text goes through private temp files
    # that are deleted right after loading.
    paths: list[str] = []
    try:
        resolved = []
        for value in (cert, key):
            if _is_pem(value):
                fd, path = tempfile.mkstemp(prefix="tickrun-tls-", suffix=".pem")
                paths.append(path)
                with os.fdopen(fd, "w", encoding="utf-8") as fh:
                    fh.write(value)
                resolved.append(path)
            else:
                resolved.append(value)
        ctx.load_cert_chain(certfile=resolved[0], keyfile=resolved[1])
    finally:
        for path in paths:
            os.unlink(path)
