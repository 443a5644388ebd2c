"""Building blocks for unit tests of the Kafka trigger and the dispatcher (no broker)."""

from __future__ import annotations

import asyncio
import inspect
from concurrent.futures import Executor
from typing import Any, NamedTuple

from tickrun.functions.handler import LoadedHandler
from tickrun.functions.processor.dispatcher import TriggerDispatcher
from tickrun.functions.spec import parse_spec
from tickrun.triggers.kafka import KafkaTrigger


class Record(NamedTuple):
    """The fields of kafka-python's ConsumerRecord the trigger reads."""

    topic: str
    partition: int
    offset: int
    timestamp: int
    key: bytes | None
    value: bytes | None
    headers: list[tuple[str, bytes | None]]


def unstarted_trigger(workers: int, **attrs: Any) -> KafkaTrigger:
    """A Kafka trigger named ``ticks`` on topic ``t``, bound to the running loop, not started
    (tests set its dispatcher and consumer thread); ``attrs`` override the attributes."""
    base: dict[str, Any] = {
        "brokers": "127.0.0.1:9",
        "topics": ["t"],
        "consumerGroup": "g",
        "retryBackoff": "10ms",
        "retryBackoffMax": "40ms",
        **attrs,
    }
    trigger_spec = {"kind": "kafka-cluster", "maxWorkers": workers, "attributes": base}
    fn = parse_spec({"metadata": {"name": "f"}, "spec": {"triggers": {"ticks": trigger_spec}}})
    trigger = KafkaTrigger(fn.spec.triggers["ticks"], fn)  # type: ignore[arg-type]
    trigger.event_loop = asyncio.get_running_loop()
    return trigger


def real_dispatcher(
    fn: Any,
    executor: Executor,
    *,
    timeout_s: float | None = None,
    availability_timeout_s: float = 1.0,
    trigger_name: str = "t",
    slots: int = 1,
) -> TriggerDispatcher:
    """The processor's dispatcher for ``fn(context, event)`` (sync or async), one slot unless
    told."""
    return TriggerDispatcher(
        handler=LoadedHandler(
            fn=fn,
            is_async=inspect.iscoroutinefunction(fn),
            init_context=None,
            module_name="m",
            entrypoint="h",
        ),
        context=object(),
        function_name="f",
        trigger_name=trigger_name,
        trigger_kind="kafka-cluster",
        slots=slots,
        availability_timeout_s=availability_timeout_s,
        event_timeout_s=timeout_s,
        executor=executor,
    )
