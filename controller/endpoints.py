"""Routing: the ready endpoints of each function, and the one pick/hold/retry loop over them.

The reconciler publishes a function's ready replicas here after every pass; both gateways
(``/fn/<name>/`` in ``gateway.py``, the function port in ``portgateway.py``) only read, through
:meth:`EndpointTable.route`. What the table cannot know itself (is a function worth holding a
request for, bring a replica back, re-probe one that refused a connection) it asks of a
:class:`ReplicaSource` (the reconciler), which it reaches through that narrow protocol, never by
import.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass, field
from typing import Protocol, TypeVar

T = TypeVar("T")


@dataclass
class Endpoint:
    replica_id: str
    url: str
    in_flight: int = 0  # counted by the gateway while it uses the endpoint


@dataclass
class FunctionEndpoints:
    endpoints: list[Endpoint] = field(default_factory=list)
    cursor: int = 0
    served: int = 0  # requests/connections routed, for the autoscaler's idle detection

    def pick(self, exclude: set[str]) -> Endpoint | None:
        """The ready replica with the fewest in flight; ties go round-robin from a cursor."""
        candidates = [e for e in self.endpoints if e.replica_id not in exclude]
        if not candidates:
            return None
        self.served += 1
        self.cursor = (self.cursor + 1) % len(candidates)
        rotated = candidates[self.cursor :] + candidates[: self.cursor]
        return min(rotated, key=lambda e: e.in_flight)


class ReplicaSource(Protocol):
    """What routing needs from whoever runs replicas (the reconciler)."""

    def should_hold(self, name: str) -> bool:
        """Worth holding a request: the function is scaled to zero or a replica is starting."""

    def want_replica(self, name: str) -> None:
        """A request is held for ``name``: bring a replica (back) now."""

    def recheck(self, name: str, replica_id: str) -> None:
        """``replica_id`` refused a connection: probe it again before routing there."""


class Mirror(Protocol):
    """Another data path routing by this table (HAProxy, ``controller/haproxy/``): told what
    is published, and asked for the load it carries and whether it still uses a replica."""

    def published(self, name: str, ready: Mapping[str, str]) -> None: ...

    def dropped(self, name: str) -> None: ...

    def load(self, name: str) -> tuple[int, int]: ...

    def busy(self, name: str, replica_ids: set[str]) -> bool: ...


@dataclass(frozen=True)
class Miss:
    """No replica took the request: none was ready (``tried == 0``, after holding when that
    was worth it), or the ``tried`` ones all refused the connection."""

    tried: int


class EndpointTable:
    """Constructor does no I/O. ``source`` None: nothing is ever held (a table on its own)."""

    def __init__(self, source: ReplicaSource | None = None) -> None:
        self.source = source
        self._functions: dict[str, FunctionEndpoints] = {}
        # Replaced on every publish that has endpoints: holders wait on the one they saw.
        self._published = asyncio.Event()
        self.mirror: Mirror | None = None

    # --- the reconciler's side ------------------------------------------------------------------

    def publish(self, name: str, ready: Mapping[str, str]) -> None:
        """``ready`` (replica id → URL) is what ``name`` routes to now. Endpoints that stay keep
        their in-flight counts, so balancing is not reset by a reconcile pass."""
        entry = self._functions.setdefault(name, FunctionEndpoints())
        keep = [e for e in entry.endpoints if ready.get(e.replica_id) == e.url]
        have = {e.replica_id for e in keep}
        keep += [Endpoint(rid, url) for rid, url in ready.items() if rid not in have]
        entry.endpoints = keep
        if self.mirror is not None:
            self.mirror.published(name, ready)
        if keep:
            event, self._published = self._published, asyncio.Event()
            event.set()

    def drop(self, name: str) -> None:
        """No more routing to ``name`` (deleted)."""
        self._functions.pop(name, None)
        if self.mirror is not None:
            self.mirror.dropped(name)

    def names(self) -> list[str]:
        return list(self._functions)

    def load(self, name: str) -> tuple[int, int]:
        """(requests in flight now, requests routed so far) for the autoscaler."""
        entry = self._functions.get(name)
        in_flight, served = (0, 0) if self.mirror is None else self.mirror.load(name)
        if entry is None:
            return in_flight, served
        return in_flight + sum(e.in_flight for e in entry.endpoints), served + entry.served

    def busy(self, name: str, replica_ids: set[str]) -> bool:
        """Another data path still sends requests to one of ``replica_ids`` (draining)."""
        return self.mirror is not None and self.mirror.busy(name, replica_ids)

    # --- the gateways' side ---------------------------------------------------------------------

    def get(self, name: str) -> FunctionEndpoints | None:
        return self._functions.get(name)

    def pick(self, name: str, exclude: set[str]) -> Endpoint | None:
        entry = self._functions.get(name)
        return entry.pick(exclude) if entry is not None else None

    def mark_unready(self, name: str, replica_id: str) -> None:
        """A gateway could not connect: stop routing there until the next probe says ready."""
        entry = self._functions.get(name)
        if entry is not None:
            entry.endpoints = [e for e in entry.endpoints if e.replica_id != replica_id]
            if self.mirror is not None:
                self.mirror.published(name, {e.replica_id: e.url for e in entry.endpoints})
        if self.source is not None:
            self.source.recheck(name, replica_id)

    def should_hold(self, name: str) -> bool:
        return self.source is not None and self.source.should_hold(name)

    async def wait_ready(self, name: str, timeout_s: float) -> bool:
        """Hold a request while ``name`` comes back from zero (or its replicas start)."""
        if self.source is not None:
            self.source.want_replica(name)
        loop = asyncio.get_running_loop()
        deadline = loop.time() + timeout_s
        while True:
            entry = self._functions.get(name)
            if entry is not None and entry.endpoints:
                return True
            remaining = deadline - loop.time()
            if remaining <= 0:
                return False
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._published.wait(), remaining)

    async def route(
        self,
        name: str,
        attempt: Callable[[Endpoint], Awaitable[T | None]],
        *,
        hold_timeout_s: float,
        replayable: bool = True,
    ) -> T | Miss:
        """Pick a replica of ``name`` and ``attempt`` the request there; ``attempt`` returns
        None when the replica refused the connection (nothing was sent), and then the next one
        is tried, unless the request cannot be sent twice (``replayable`` False: a streamed
        body). With no replica ready the request is held once, up to ``hold_timeout_s``, when
        the function is coming up (scale from zero, replicas starting)."""
        tried: set[str] = set()
        held = False
        while True:
            endpoint = self.pick(name, tried)
            if endpoint is None and not tried and not held and self.should_hold(name):
                held = True  # scaled to zero or starting: wait for a replica instead of a 503
                await self.wait_ready(name, hold_timeout_s)
                continue
            if endpoint is None:
                return Miss(len(tried))
            tried.add(endpoint.replica_id)
            result = await attempt(endpoint)
            if result is not None:
                return result
            self.mark_unready(name, endpoint.replica_id)
            if not replayable:
                return Miss(len(tried))
