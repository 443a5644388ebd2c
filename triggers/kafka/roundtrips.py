"""Fewer round trips from the polling thread to kafka-python 3's network thread per ``poll()``.

kafka-python 3 runs its I/O on a thread of its own, and ``poll()`` hands it work and waits for
the answer: ``ensure_coordinator_ready`` on every poll (even with the coordinator known and
connected, when its coroutine returns at once), and ``send_fetches`` whenever the buffered
records ran out. Each round trip passes the GIL to that thread and back; in a replica whose
handler threads hold the GIL meanwhile, each pass can wait for the interpreter's switch
interval. py-spy on a ``numWorkers: 4`` replica mid-stream: the consumer thread spent a third
of its time in those two round trips.

- The coordinator check answers on the polling thread when the coordinator is known and its
  connection is up (the coroutine would return True without doing anything); otherwise the
  network thread does it, as before.
- When the poll already has records to return, its fetch requests go to the network thread
  without waiting for them to be sent (the wait only matters to a poll that has nothing and
  waits for a fetch to complete, which keeps the original call).

Reads the client's private state: :func:`install` does nothing when the attributes are absent
(another kafka-python version), so an upgrade can only bring the round trips back.
"""

from __future__ import annotations

import logging
from typing import Any

logger = logging.getLogger(__name__)


def install(consumer: Any) -> bool:
    """Install both shortcuts on ``consumer`` (a ``KafkaConsumer``); False if not possible."""
    coordinator: Any = getattr(consumer, "_coordinator", None)
    fetcher: Any = getattr(consumer, "_fetcher", None)
    client: Any = getattr(coordinator, "_client", None)
    net: Any = getattr(consumer, "_net", None)
    needed: tuple[Any, ...] = (
        getattr(coordinator, "ensure_coordinator_ready", None),
        getattr(client, "connected", None),
        getattr(fetcher, "fetched_records", None),
        getattr(fetcher, "send_fetches", None),
        getattr(fetcher, "_send_fetches_async", None),
        getattr(net, "call_soon_threadsafe", None),
    )
    pending = getattr(fetcher, "_nodes_with_pending_fetch_requests", None)
    brokers = getattr(
        getattr(getattr(fetcher, "_manager", None), "cluster", None), "_brokers", None
    )
    if (
        not all(callable(f) for f in needed)
        or not hasattr(coordinator, "coordinator_id")
        or not isinstance(pending, set)
        or not isinstance(brokers, dict)
    ):
        logger.debug("kafka-python internals differ: no round-trip shortcuts")
        return False
    ensure_ready, connected, fetched_records, send_fetches, send_async, call_soon = needed

    def ensure_coordinator_ready(timeout_ms: Any = None) -> Any:
        node = coordinator.coordinator_id
        if node is not None and connected(node):
            return True  # what the coroutine answers, without the hop
        return ensure_ready(timeout_ms=timeout_ms)

    had_records = False

    def fetched(*args: Any, **kwargs: Any) -> Any:
        nonlocal had_records
        out = fetched_records(*args, **kwargs)
        had_records = bool(out[0])
        return out

    def send() -> Any:
        # Every broker has a fetch in flight: the network thread would create no request
        # (one fetch per broker at a time), so there is nothing to hand it. One C call on
        # sets the network thread changes: no torn read under the GIL.
        if brokers and pending.issuperset(brokers):
            return []
        if had_records:
            # The poll returns these records anyway: the requests need not have gone yet.
            call_soon(send_async)
            return []
        return send_fetches()

    coordinator.ensure_coordinator_ready = ensure_coordinator_ready
    fetcher.fetched_records = fetched
    fetcher.send_fetches = send
    return True
