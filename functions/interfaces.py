"""The seams between the processor and its triggers, in one small place.

A trigger turns native input (an HTTP request, a Kafka record, a clock tick) into a nuclio-sdk
``Event``, hands it to a :class:`Dispatcher`, and turns the :class:`~.results.Result` back into
native output. The processor owns the handler, the workers and the metrics; a trigger owns only
its source.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, ClassVar, Protocol, runtime_checkable

from .errors import HandlerFailure, TickrunError

if TYPE_CHECKING:
    import asyncio

    from aiohttp import web

    from .results import Result
    from .spec import FunctionSpec, TriggerSpec

__all__ = [
    "BatchOutcome",
    "Dispatcher",
    "HandlerFailure",
    "HttpHandler",
    "Trigger",
    "TriggerFactory",
    "TriggerHost",
]

HttpHandler = Callable[["web.BaseRequest"], Awaitable["web.StreamResponse"]]


@dataclass
class BatchOutcome:
    """``results`` for the first events of a batch; ``error`` for the event right after them."""

    results: list[Result]
    error: TickrunError | None = None


class Dispatcher(Protocol):
    """Runs the handler for one trigger, bounded by that trigger's ``maxWorkers``."""

    trigger_name: str
    trigger_kind: str

    async def dispatch(self, event: Any) -> Result:
        """Run the handler on ``event``.

        Raises :class:`~.errors.WorkerUnavailableError` (no slot within the availability
        timeout), :class:`~.errors.EventTimeoutError`, or :class:`HandlerFailure` (the handler
        raised); never anything else.
        """
        ...

    @property
    def in_flight(self) -> int: ...

    @property
    def batches(self) -> bool:
        """True when :meth:`dispatch_batch` is worth using."""
        ...

    @property
    def sync(self) -> bool:
        """True when the handler is a plain function (:meth:`run_here` may run it)."""
        ...

    async def dispatch_batch(
        self, events: Sequence[Any], should_stop: Callable[[], bool] | None = None
    ) -> BatchOutcome:
        """Run ordered events in one slot (one thread hop for sync handlers), stopping at the
        first failure."""
        ...

    def run_here(
        self, events: Sequence[Any], should_stop: Callable[[], bool] | None = None
    ) -> BatchOutcome | None:
        """:meth:`dispatch_batch` on the calling thread, for a trigger whose other paths are
        idle meanwhile (the caller's guarantee); None when :meth:`adopt_here` took it over."""
        ...

    def here_running_s(self) -> float:
        """How long the :meth:`run_here` event now running has run (0.0 when none is)."""
        ...

    def adopt_here(self) -> asyncio.Future[BatchOutcome] | None:
        """On the event loop: take over the batch :meth:`run_here` is running (its thread
        finishes it; the outcome comes from this future), or None if no event runs."""
        ...

    async def watch_here(self) -> None:
        """Until cancelled: replace the worker if a :meth:`run_here` event hangs."""
        ...


class TriggerHost(Protocol):
    """What the processor offers a trigger while it runs."""

    function: FunctionSpec
    worker_index: int
    worker_count: int

    def dispatcher(self, trigger: TriggerSpec) -> Dispatcher: ...

    def mount_http(self, handler: HttpHandler) -> None:
        """Serve every non-control path of the processor's HTTP port with ``handler``."""
        ...


@runtime_checkable
class Trigger(Protocol):
    """One event source. Constructors do no I/O; ``start`` connects, ``stop`` drains."""

    kind: ClassVar[str]
    name: str

    async def start(self, host: TriggerHost) -> None: ...

    async def stop(self, drain_timeout_s: float) -> None:
        """Stop taking events, let in-flight ones finish (commit what is done), then return."""
        ...

    def ready(self) -> bool:
        """False while the trigger cannot take events (e.g. Kafka brokers unreachable)."""
        ...


TriggerFactory = Callable[[Any, "FunctionSpec"], Trigger]
"""Builds a trigger from its spec (its kind's model) and the function's spec; a kind's
:class:`~.spec.triggers.TriggerKind` loads it."""
