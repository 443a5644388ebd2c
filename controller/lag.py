"""Consumer-group lag of every deployed Kafka-triggered function, read in a thread.

The reconciler tells the monitor which functions exist (:meth:`LagMonitor.watch`, every pass,
whatever their replica count: a function at zero is watched so that lag can wake it); the
monitor's thread reads, every ``TICKRUN_LAG_INTERVAL_S``, each Kafka trigger's committed offsets
(``KafkaAdminClient.list_group_offsets``) and its topics' end offsets (``list_partition_offsets``)
and keeps one :class:`LagReading` per function; the reconciler hands it to the autoscaler.

A partition the group never committed counts from where a new consumer would start
(``initialOffset``: the log start for ``earliest``, nothing for ``latest``). Brokers that cannot
be reached make the reading unknown (``lag`` None, a warning once until they answer again): the
autoscaler never scales on a guess. kafka-python loads only when a function has a Kafka trigger.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from typing import Any

from tickrun.functions.spec import FunctionSpec
from tickrun.triggers.kafka.config import KafkaConfig
from tickrun.triggers.kafka.spec import KafkaTriggerSpec

logger = logging.getLogger(__name__)

# A reading must not stall the loop for long when brokers are down.
_REQUEST_TIMEOUT_MS = 3_000
_MAX_BACKOFF_S = 10.0
# Client settings that make sense for an admin client (the rest are consumer/producer ones).
_ADMIN_KEYS = (
    "bootstrap_servers",
    "client_id",
    "security_protocol",
    "sasl_mechanism",
    "sasl_plain_username",
    "sasl_plain_password",
    "ssl_context",
)


@dataclass(frozen=True)
class LagReading:
    """Records behind, summed over a function's Kafka triggers (None: unknown), and the most
    partitions one of its consumer groups can spread over (None: unknown); ``at`` is
    monotonic."""

    lag: int | None
    partitions: int | None
    at: float


@dataclass(frozen=True)
class _Source:
    """One Kafka trigger of one function: what is read, and how to reach it."""

    function: str
    trigger: str
    config: KafkaConfig
    earliest: bool


class LagMonitor:
    """Constructor does no I/O; :meth:`start` starts the thread, :meth:`stop` ends it."""

    def __init__(
        self, interval_s: float = 1.0, clock: Callable[[], float] = time.monotonic
    ) -> None:
        self.interval_s = interval_s
        self._clock = clock
        self._lock = threading.Lock()
        self._sources: dict[str, list[_Source]] = {}
        self._specs: dict[str, FunctionSpec] = {}
        self._readings: dict[str, LagReading] = {}
        # Touched by the monitor thread only.
        self._admins: dict[tuple[str, str], Any] = {}
        # Unreachable sources are retried with backoff (kafka-python logs every failed dial).
        self._failing: dict[tuple[str, str], tuple[int, float]] = {}
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    # --- the reconciler's side ------------------------------------------------------------------

    def watch(self, functions: Iterable[tuple[str, FunctionSpec]]) -> None:
        """The functions that exist now (name, spec); the others stop being read."""
        sources: dict[str, list[_Source]] = {}
        specs: dict[str, FunctionSpec] = {}
        for name, spec in functions:
            if self._specs.get(name) is spec:  # the same model: nothing to re-derive
                specs[name] = spec
                sources[name] = self._sources.get(name, [])
                continue
            found = sources_of(name, spec)
            specs[name] = spec
            sources[name] = found
        with self._lock:
            self._specs = specs
            self._sources = {n: s for n, s in sources.items() if s}
            for gone in set(self._readings) - set(self._sources):
                del self._readings[gone]

    def reading(self, name: str) -> LagReading | None:
        with self._lock:
            return self._readings.get(name)

    def start(self) -> None:
        if self._thread is not None:
            return
        self._stop.clear()
        self._thread = threading.Thread(target=self._run, name="lag-monitor", daemon=True)
        self._thread.start()

    def stop(self) -> None:
        """Ends the thread (after its current reading) and closes its clients."""
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout=2 * _REQUEST_TIMEOUT_MS / 1000 + 5)
            self._thread = None

    # --- the thread -----------------------------------------------------------------------------

    def _run(self) -> None:
        try:
            while not self._stop.is_set():
                started = self._clock()
                try:
                    self.sample_once()
                except Exception:  # the thread must outlive any one bad reading
                    logger.exception("lag reading failed")
                self._stop.wait(max(0.0, self.interval_s - (self._clock() - started)))
        finally:
            self._close_admins(set())

    def sample_once(self) -> None:
        """Read every watched function's lag once (on the calling thread)."""
        with self._lock:
            sources = {name: list(s) for name, s in self._sources.items()}
        for name, srcs in sources.items():
            lag: int | None = 0
            partitions: int | None = 0
            for src in srcs:
                got = self._read(src)
                if got is None:
                    lag = partitions = None
                    break
                lag = (lag or 0) + got[0]
                partitions = max(partitions or 0, got[1])
            reading = LagReading(lag, partitions or None, self._clock())
            with self._lock:
                if name in self._sources:
                    self._readings[name] = reading
        self._close_admins({(s.function, s.trigger) for srcs in sources.values() for s in srcs})

    def _read(self, src: _Source) -> tuple[int, int] | None:
        """(lag, most partitions of one topic), or None when the brokers cannot tell."""
        key = (src.function, src.trigger)
        failures, retry_at = self._failing.get(key, (0, 0.0))
        if self._clock() < retry_at:
            return None
        try:
            result = _group_lag(self._admin(src), src)
        except Exception as exc:  # kafka-python raises many kinds (KafkaError, OSError, …)
            admin = self._admins.pop(key, None)
            if admin is not None:
                close_admin(admin)
            backoff_s = min(_MAX_BACKOFF_S, self.interval_s * 2**failures)
            self._failing[key] = (failures + 1, self._clock() + backoff_s)
            if not failures:
                logger.warning(
                    "cannot read Kafka consumer lag; not scaling on it until the brokers answer",
                    extra={
                        "function": src.function,
                        "trigger": src.trigger,
                        "brokers": src.config.describe_brokers(),
                        "error": f"{type(exc).__name__}: {exc}"[:300],
                    },
                )
            return None
        if self._failing.pop(key, None) is not None:
            logger.info(
                "Kafka consumer lag readable again",
                extra={"function": src.function, "trigger": src.trigger},
            )
        return result

    def _admin(self, src: _Source) -> Any:
        key = (src.function, src.trigger)
        admin = self._admins.get(key)
        if admin is None:
            admin = open_admin(src, "lag", reconnect_backoff_max_ms=2_000)
            self._admins[key] = admin
        return admin

    def _close_admins(self, keep: set[tuple[str, str]]) -> None:
        for key in set(self._admins) - keep:
            close_admin(self._admins.pop(key))
        for key in set(self._failing) - keep:
            del self._failing[key]


def sources_of(name: str, spec: FunctionSpec) -> list[_Source]:
    """The function's Kafka triggers, as lag is read for them."""
    out = []
    for trigger in spec.spec.effective_triggers():
        if isinstance(trigger, KafkaTriggerSpec):
            config = KafkaConfig.from_spec(trigger, name)
            earliest = trigger.attributes.initial_offset == "earliest"
            out.append(_Source(name, config.name, config, earliest))
    return out


def open_admin(src: _Source, purpose: str, *, reconnect_backoff_max_ms: int) -> Any:
    """An admin client for ``src``'s brokers with the trigger's own security settings, its
    client id suffixed with ``purpose``; timeouts short enough not to stall a caller."""
    from kafka import KafkaAdminClient

    kwargs = src.config.client_kwargs("consumer")
    options = {k: kwargs[k] for k in _ADMIN_KEYS if k in kwargs}
    options["client_id"] = f"{options.get('client_id', 'tickrun')}-{purpose}"
    return KafkaAdminClient(
        **options,
        request_timeout_ms=_REQUEST_TIMEOUT_MS,
        bootstrap_timeout_ms=_REQUEST_TIMEOUT_MS,
        reconnect_backoff_max_ms=reconnect_backoff_max_ms,
    )


@dataclass(frozen=True, slots=True)
class PartitionLag:
    """One partition of a trigger's topics: its end offset, the group's committed offset (None:
    never committed) and the records between where the group is and the end."""

    topic: str
    partition: int
    end: int
    committed: int | None
    lag: int


def read_partitions(admin: Any, src: _Source) -> list[PartitionLag]:
    """Every partition of ``src``'s topics with its lag, in topic and partition order."""
    from kafka.admin import OffsetSpec
    from kafka.structs import TopicPartition

    group = src.config.group
    tps: list[Any] = []
    for topic in admin.describe_topics(list(src.config.topics)):
        # Metadata field names differ between kafka-python releases.
        name = topic.get("name", topic.get("topic"))
        if topic.get("error_code"):
            raise LookupError(f"topic {name!r}: error code {topic.get('error_code')}")
        parts = topic.get("partitions") or []
        tps += [TopicPartition(name, p.get("partition_index", p.get("partition"))) for p in parts]
    if not tps:
        return []
    # kafka-python 3 renamed list_consumer_group_offsets; both return {tp: OffsetAndMetadata}.
    if hasattr(admin, "list_group_offsets"):
        offsets = admin.list_group_offsets({group: tps}).get(group, {})
    else:
        offsets = admin.list_consumer_group_offsets(group, partitions=tps)
    ends = admin.list_partition_offsets({tp: OffsetSpec.LATEST for tp in tps})
    uncommitted = [tp for tp in tps if _committed(offsets, tp) is None]
    starts = {}
    if src.earliest and uncommitted:
        starts = admin.list_partition_offsets({tp: OffsetSpec.EARLIEST for tp in uncommitted})
    out = []
    for tp in sorted(tps, key=lambda t: (t.topic, t.partition)):
        end = int(ends[tp].offset)
        committed = _committed(offsets, tp)
        at = committed
        if at is None:
            at = int(starts[tp].offset) if tp in starts else end
        out.append(PartitionLag(tp.topic, tp.partition, end, committed, max(0, end - at)))
    return out


def _group_lag(admin: Any, src: _Source) -> tuple[int, int]:
    parts = read_partitions(admin, src)
    per_topic: dict[str, int] = {}
    for p in parts:
        per_topic[p.topic] = per_topic.get(p.topic, 0) + 1
    return sum(p.lag for p in parts), max(per_topic.values(), default=0)


def _committed(offsets: dict[Any, Any], tp: Any) -> int | None:
    meta = offsets.get(tp)
    offset = getattr(meta, "offset", -1) if meta is not None else -1
    return int(offset) if offset is not None and offset >= 0 else None


def close_admin(admin: Any) -> None:
    try:
        admin.close()
    except Exception:  # closing a client whose brokers vanished may raise; it is gone anyway
        logger.debug("closing a Kafka admin client failed", exc_info=True)
