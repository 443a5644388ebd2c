"""Trigger specs: one model per kind, chosen by ``kind`` (a discriminated union).

Field names on the YAML side are Nuclio's (``maxWorkers``, ``attributes.consumerGroup``, …);
on the Python side they are snake_case with units in the name. Each kind's ``attributes`` parse
into a typed model of its own, so a misspelt attribute is an error, not a silently ignored key.
"""

from __future__ import annotations

from typing import Annotated, Any, Literal

from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator

from .durations import DurationS


class SpecModel(BaseModel):
    """Base for every spec model: unknown keys are refused; YAML names are Nuclio's aliases."""

    model_config = ConfigDict(extra="forbid", populate_by_name=True, frozen=False)


class _TriggerBase(SpecModel):
    name: str = ""
    class_: str | None = Field(default=None, alias="class")
    description: str | None = None
    disabled: bool = False
    max_workers: int | None = Field(default=None, alias="maxWorkers", ge=1, le=10_000)
    num_workers: int | None = Field(default=None, alias="numWorkers", ge=1, le=10_000)
    worker_availability_timeout_ms: int = Field(
        default=10_000, alias="workerAvailabilityTimeoutMilliseconds", ge=0
    )
    worker_termination_timeout_s: DurationS | None = Field(
        default=None, alias="workerTerminationTimeout"
    )
    worker_allocator_name: str | None = Field(default=None, alias="workerAllocatorName")
    explicit_ack_mode: str | None = Field(default=None, alias="explicitAckMode")
    url: str | None = None
    annotations: dict[str, str] = Field(default_factory=dict)

    @property
    def workers(self) -> int:
        """Concurrent events per worker process (Nuclio's ``maxWorkers`` / ``numWorkers``)."""
        return self.max_workers or self.num_workers or 1


# --- http -----------------------------------------------------------------------------------


class CorsSpec(SpecModel):
    enabled: bool = True
    allow_origins: list[str] = Field(default_factory=lambda: ["*"], alias="allowOrigins")
    allow_methods: list[str] = Field(
        default_factory=lambda: ["HEAD", "GET", "POST", "PUT", "DELETE", "OPTIONS", "PATCH"],
        alias="allowMethods",
    )
    allow_headers: list[str] = Field(
        default_factory=lambda: ["Accept", "Content-Length", "Content-Type", "X-Request-Id"],
        alias="allowHeaders",
    )
    allow_credentials: bool = Field(default=False, alias="allowCredentials")
    preflight_max_age_s: int = Field(default=86_400, alias="preflightMaxAgeSeconds", ge=0)


class IngressSpec(SpecModel):
    host: str | None = None
    paths: list[str] = Field(default_factory=list)
    secret_name: str | None = Field(default=None, alias="secretName")
    path_type: str | None = Field(default=None, alias="pathType")


class HttpAttributes(SpecModel):
    port: int | None = Field(default=None, ge=0, le=65_535)
    max_request_body_size_bytes: int = Field(
        default=32 * 1024 * 1024, alias="maxRequestBodySize", ge=1
    )
    read_buffer_size_bytes: int | None = Field(default=None, alias="readBufferSize", ge=1)
    reduce_memory_usage: bool = Field(default=False, alias="reduceMemoryUsage")
    keep_alive_timeout_s: DurationS = Field(default=75.0, alias="keepAliveTimeout")
    # tickrun's own (Go http.Server's names): slow clients must not hold connections open.
    read_header_timeout_s: DurationS = Field(default=10.0, alias="readHeaderTimeout")
    read_timeout_s: DurationS = Field(default=30.0, alias="readTimeout")  # max gap in a body
    max_connections: int | None = Field(default=None, alias="maxConnections", ge=1)
    cors: CorsSpec | None = None
    service_type: str | None = Field(default=None, alias="serviceType")
    ingresses: dict[str, IngressSpec] = Field(default_factory=dict)


class HttpTriggerSpec(_TriggerBase):
    kind: Literal["http"]
    attributes: HttpAttributes = Field(default_factory=HttpAttributes)


# --- kafka ----------------------------------------------------------------------------------


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

    brokers: list[str]
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

    @field_validator("brokers", mode="before")
    @classmethod
    def _split_brokers(cls, value: Any) -> Any:
        if isinstance(value, str):
            return [b.strip() for b in value.split(",") if b.strip()]
        return value

    @field_validator("brokers")
    @classmethod
    def _brokers_present(cls, value: list[str]) -> list[str]:
        if not value:
            raise ValueError("at least one broker address (host:port) is required")
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


class KafkaTriggerSpec(_TriggerBase):
    kind: Literal["kafka-cluster"]
    attributes: KafkaAttributes


# --- cron -----------------------------------------------------------------------------------


class CronEventSpec(SpecModel):
    body: Any = None
    headers: dict[str, str] = Field(default_factory=dict)
    method: str = "POST"
    path: str = "/"


class CronAttributes(SpecModel):
    schedule: str | None = None
    interval_s: DurationS | None = Field(default=None, alias="interval", gt=0)
    event: CronEventSpec = Field(default_factory=CronEventSpec)
    concurrency_policy: Literal["Forbid", "Allow"] = Field(
        default="Forbid", alias="concurrencyPolicy"
    )
    timezone: str = "UTC"

    @model_validator(mode="after")
    def _one_of(self) -> CronAttributes:
        if (self.schedule is None) == (self.interval_s is None):
            raise ValueError("set exactly one of 'schedule' (cron syntax) or 'interval'")
        if self.schedule is not None:
            fields = self.schedule.split()
            if not (self.schedule.startswith("@") or len(fields) in (5, 6)):
                raise ValueError(
                    f"schedule {self.schedule!r} is not cron syntax "
                    "(5 or 6 fields, or @hourly/@daily/…)"
                )
        return self


class CronTriggerSpec(_TriggerBase):
    kind: Literal["cron"]
    attributes: CronAttributes


TriggerSpec = Annotated[
    HttpTriggerSpec | KafkaTriggerSpec | CronTriggerSpec, Field(discriminator="kind")
]
"""Any trigger kind; ``kind`` selects the model."""

TRIGGER_KINDS = ("http", "kafka-cluster", "cron")
