"""``kind: kafka-cluster`` in ``function.yaml``: Nuclio's attribute names plus tickrun's commit
and failure policy.

Only pydantic here (no kafka-python): every spec parse imports this module.
"""

from __future__ import annotations

from typing import Any, Literal

from pydantic import Field, field_validator, model_validator

from tickrun.functions.spec.durations import DurationS
from tickrun.functions.spec.triggers import SpecModel, TriggerSpecBase


class SaslSpec(SpecModel):
    enable: bool = False
    user: str | None = None
    password: str | None = Field(default=None, repr=False)
    mechanism: Literal["PLAIN", "SCRAM-SHA-256", "SCRAM-SHA-512"] = "PLAIN"
    handshake: bool = True

    @model_validator(mode="after")
    def _needs_credentials(self) -> SaslSpec:
        if self.enable and not (self.user and self.password):
            raise ValueError("sasl.enable needs both 'user' and 'password'")
        return self


class TlsSpec(SpecModel):
    enable: bool = False
    insecure_skip_verify: bool = Field(default=False, alias="insecureSkipVerify")
    ca_cert: str | None = Field(default=None, alias="caCert", description="PEM text or a file path")
    access_certificate: str | None = Field(default=None, alias="accessCertificate")
    access_key: str | None = Field(default=None, alias="accessKey", repr=False)


class KafkaAttributes(SpecModel):
    """``kind: kafka-cluster`` attributes: Nuclio's names, plus tickrun's commit/failure policy."""

    # Nuclio requires it; here it may be left out for the cluster's default
    # (TICKRUN_KAFKA_BROKERS): the controller fills it in at deploy, a replica run without one
    # reads the variable itself (config.py).
    brokers: list[str] = Field(default_factory=list)
    topics: list[str] = Field(min_length=1)
    consumer_group: str = Field(alias="consumerGroup", min_length=1)
    initial_offset: Literal["earliest", "latest"] = Field(default="earliest", alias="initialOffset")
    session_timeout_s: DurationS = Field(default=10.0, alias="sessionTimeout", gt=0)
    heartbeat_interval_s: DurationS = Field(default=3.0, alias="heartbeatInterval", gt=0)
    rebalance_timeout_s: DurationS = Field(default=60.0, alias="rebalanceTimeout", gt=0)
    max_wait_handler_during_rebalance_s: DurationS = Field(
        default=5.0, alias="maxWaitHandlerDuringRebalance", ge=0
    )
    sasl: SaslSpec = Field(default_factory=SaslSpec)
    tls: TlsSpec = Field(default_factory=TlsSpec)
    fetch_min_bytes: int = Field(default=1, alias="fetchMin", ge=1)
    fetch_max_bytes: int = Field(default=52_428_800, alias="fetchMax", ge=1)
    # Sarama's (and so Nuclio's) name. kafka-python's 500 ms default makes a busy consumer wait
    # on half-empty fetches: 10x fewer events/s on a single-broker topic (see bench/kafka).
    max_wait_time_s: DurationS = Field(default=0.05, alias="maxWaitTime", ge=0)
    max_poll_records: int = Field(default=500, alias="maxPollRecords", ge=1)
    # tickrun: at-least-once commit batching and the failure policy Nuclio lacks.
    commit_interval_s: DurationS = Field(default=1.0, alias="commitInterval", gt=0)
    commit_batch_size: int = Field(default=1000, alias="commitBatchSize", ge=1)
    max_retries: int = Field(default=3, alias="maxRetries", ge=0)
    retry_backoff_s: DurationS = Field(default=0.2, alias="retryBackoff", ge=0)
    retry_backoff_max_s: DurationS = Field(default=10.0, alias="retryBackoffMax", ge=0)
    dead_letter_topic: str | None = Field(
        default=None,
        alias="deadLetterTopic",
        description="where failed events go; default '<source topic>.dlq'",
    )
    on_failure: Literal["dead-letter", "skip", "block"] = Field(
        default="dead-letter", alias="onFailure"
    )
    output_topic: str | None = Field(default=None, alias="outputTopic")
    # tickrun: with numWorkers > 1, run a sync handler measured to be fast (< 50 us an event)
    # on the consumer thread while the pool is idle (see triggers/kafka/inline.py); an event
    # that runs long there is taken over (it holds one slot, polling moves to a new thread).
    # false: every event goes through the pool.
    inline_fast_handler: bool = Field(default=True, alias="inlineFastHandler")
    # tickrun: the Kafka client library under the same contract (groups, at-least-once
    # commits, dead letters, flow control). confluent-kafka (librdkafka) fetches and decodes
    # in C threads: more events/s per core (bench/kafka); it needs the confluent-kafka package
    # in the function's image (the ``kafka`` extra has it), checked when the trigger starts.
    client: Literal["kafka-python", "confluent-kafka"] = "kafka-python"

    @field_validator("brokers", mode="before")
    @classmethod
    def _split_brokers(cls, value: Any) -> Any:
        if isinstance(value, str):
            return [b.strip() for b in value.split(",") if b.strip()]
        return value

    @field_validator("brokers")
    @classmethod
    def _brokers_valid(cls, value: list[str]) -> list[str]:
        for broker in value:
            host, sep, port = broker.rpartition(":")
            if not sep or not host or not port.isdigit():
                raise ValueError(f"broker {broker!r} is not host:port")
        return value

    @field_validator("topics")
    @classmethod
    def _topics_named(cls, value: list[str]) -> list[str]:
        for topic in value:
            if not topic or len(topic) > 249 or not all(c.isalnum() or c in "._-" for c in topic):
                raise ValueError(f"topic {topic!r} is not a valid Kafka topic name")
        return value

    @model_validator(mode="after")
    def _timeouts_consistent(self) -> KafkaAttributes:
        if self.heartbeat_interval_s >= self.session_timeout_s:
            raise ValueError("heartbeatInterval must be shorter than sessionTimeout")
        if self.retry_backoff_max_s < self.retry_backoff_s:
            raise ValueError("retryBackoffMax must be at least retryBackoff")
        if self.dead_letter_topic is not None and self.dead_letter_topic in self.topics:
            raise ValueError("deadLetterTopic must not be one of the consumed topics")
        return self

    def dead_letter_topic_for(self, topic: str) -> str:
        return self.dead_letter_topic or f"{topic}.dlq"


class KafkaTriggerSpec(TriggerSpecBase):
    kind: Literal["kafka-cluster"]
    attributes: KafkaAttributes
