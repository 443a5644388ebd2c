"""Per-partition consumer lag of a function's Kafka triggers, for the UI (read on request).

The controller's :class:`~tickrun.controller.lag.LagMonitor` keeps one sum per function for the
autoscaler; a person looking at a function wants each partition: its end offset, the group's
committed offset, the difference. Read with a short-lived admin client (3 s timeouts), in a
thread; a broker that cannot be reached gives ``error`` for that trigger, never a 500.
"""

from __future__ import annotations

import logging
from typing import Any

from tickrun.functions.spec import FunctionSpec

from ..lag import _ADMIN_KEYS, _REQUEST_TIMEOUT_MS, _close, _committed, _sources_of

logger = logging.getLogger(__name__)


def partition_lag(name: str, spec: FunctionSpec) -> list[dict[str, Any]]:
    """One entry per Kafka trigger: ``{trigger, group, topics, lag, partitions: [...]}``."""
    out: list[dict[str, Any]] = []
    for src in _sources_of(name, spec):
        entry: dict[str, Any] = {
            "trigger": src.trigger,
            "group": src.config.group,
            "topics": list(src.config.topics),
        }
        try:
            parts = _read(src)
        except Exception as exc:  # unreachable brokers, a missing topic: shown, not raised
            logger.info(
                "Kafka lag unavailable",
                extra={"function": name, "trigger": src.trigger, "reason": type(exc).__name__},
            )
            entry.update(
                lag=None, partitions=[], error=f"cannot read offsets ({type(exc).__name__})"
            )
        else:
            entry.update(lag=sum(p["lag"] for p in parts), partitions=parts)
        out.append(entry)
    return out


def _read(src: Any) -> list[dict[str, Any]]:
    from kafka import KafkaAdminClient
    from kafka.admin import OffsetSpec
    from kafka.structs import TopicPartition

    kwargs = src.config.client_kwargs("consumer")
    options = {k: kwargs[k] for k in _ADMIN_KEYS if k in kwargs}
    options["client_id"] = f"{options.get('client_id', 'tickrun')}-ui"
    admin = KafkaAdminClient(
        **options,
        request_timeout_ms=_REQUEST_TIMEOUT_MS,
        bootstrap_timeout_ms=_REQUEST_TIMEOUT_MS,
        reconnect_backoff_max_ms=1_000,
    )
    try:
        tps: list[Any] = []
        for topic in admin.describe_topics(list(src.config.topics)):
            tname = topic.get("name", topic.get("topic"))
            if topic.get("error_code"):
                raise LookupError(f"topic {tname!r}: error code {topic.get('error_code')}")
            for p in topic.get("partitions") or []:
                tps.append(TopicPartition(tname, p.get("partition_index", p.get("partition"))))
        if not tps:
            return []
        group = src.config.group
        if hasattr(admin, "list_group_offsets"):
            offsets = admin.list_group_offsets({group: tps}).get(group, {})
        else:
            offsets = admin.list_consumer_group_offsets(group, partitions=tps)
        ends = admin.list_partition_offsets({tp: OffsetSpec.LATEST for tp in tps})
        uncommitted = [tp for tp in tps if _committed(offsets, tp) is None]
        starts = {}
        if src.earliest and uncommitted:
            starts = admin.list_partition_offsets({tp: OffsetSpec.EARLIEST for tp in uncommitted})
        rows = []
        for tp in sorted(tps, key=lambda t: (t.topic, t.partition)):
            end = int(ends[tp].offset)
            committed = _committed(offsets, tp)
            at = (
                committed
                if committed is not None
                else (int(starts[tp].offset) if tp in starts else end)
            )
            rows.append(
                {
                    "topic": tp.topic,
                    "partition": tp.partition,
                    "end": end,
                    "committed": committed,
                    "lag": max(0, end - at),
                }
            )
        return rows
    finally:
        _close(admin)


__all__ = ["partition_lag"]
