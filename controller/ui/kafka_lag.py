"""Per-partition consumer lag of a function's Kafka triggers, for the UI (read on request).

The controller's :class:`~tickrun.controller.lag.LagMonitor` keeps one sum per function for the
autoscaler; a person looking at a function wants each partition: its end offset, the group's
committed offset, the difference. Read with a short-lived admin client (3 s timeouts), in a
thread; a broker that cannot be reached gives ``error`` for that trigger, never a 500.
"""

from __future__ import annotations

import logging
from dataclasses import asdict
from typing import Any

from tickrun.functions.spec import FunctionSpec

from ..lag import close_admin, open_admin, read_partitions, sources_of

logger = logging.getLogger(__name__)


def partition_lag(name: str, spec: FunctionSpec) -> list[dict[str, Any]]:
    """One entry per Kafka trigger: ``{trigger, group, topics, lag, partitions: [...]}``."""
    out: list[dict[str, Any]] = []
    for src in sources_of(name, spec):
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
    admin = open_admin(src, "ui", reconnect_backoff_max_ms=1_000)
    try:
        return [asdict(p) for p in read_partitions(admin, src)]
    finally:
        close_admin(admin)


__all__ = ["partition_lag"]
