"""Which offsets may be committed: per partition, the end of the completed prefix.

Offsets are added in the order they are fetched and completed in any order (a handler result
may still be in flight to the output topic); the committable position of a partition is one
past the highest offset whose own handling and every earlier one's has finished. Gaps in the
offset sequence (compaction, transaction markers) are fine because only fetched offsets count.

Shared between the event loop (adds, completions) and the consumer thread (commits), so every
method takes the one lock; each is O(1) amortised.
"""

from __future__ import annotations

import threading
from collections import deque
from collections.abc import Hashable, Iterable


class _Partition:
    __slots__ = ("committed", "done", "pending", "position")

    def __init__(self) -> None:
        self.pending: deque[int] = deque()  # fetched, in offset order, not yet past the prefix
        self.done: set[int] = set()  # completed offsets still behind an unfinished one
        self.position: int | None = None  # next offset to commit (completed prefix end + 1)
        self.committed: int | None = None  # last position committed to Kafka


class OffsetBook:
    """Completed-prefix tracking for every partition this consumer owns."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._parts: dict[Hashable, _Partition] = {}
        self._uncommitted = 0  # completions since the last commit, for size-based batching
        self._in_commit = 0  # of those, the ones the commit in progress covers

    def add(self, tp: Hashable, offsets: Iterable[int]) -> None:
        with self._lock:
            part = self._parts.get(tp)
            if part is None:
                part = self._parts[tp] = _Partition()
            part.pending.extend(offsets)

    def complete(self, tp: Hashable, offset: int) -> None:
        self.complete_many(tp, (offset,))

    def complete_many(self, tp: Hashable, offsets: Iterable[int]) -> int:
        """:meth:`complete` for several offsets of one partition, under one lock; returns
        how many fetched offsets of ``tp`` are still outstanding."""
        with self._lock:
            part = self._parts.get(tp)
            if part is None:
                return 0
            pending, done = part.pending, part.done
            if not done and type(offsets) is list and offsets and len(offsets) <= len(pending):
                # In order from the front (how a partition's batches complete): the whole
                # prefix at once, checked at both ends (both are in fetch order).
                n = len(offsets)
                if pending[0] == offsets[0] and pending[n - 1] == offsets[-1]:
                    popleft = pending.popleft
                    for _ in range(n):
                        popleft()
                    self._uncommitted += n
                    part.position = offsets[-1] + 1
                    return len(pending)
            last = None
            for offset in offsets:
                self._uncommitted += 1
                if pending and pending[0] == offset:
                    pending.popleft()
                    last = offset
                    while pending and pending[0] in done:
                        last = pending.popleft()
                        done.discard(last)
                else:
                    done.add(offset)
            if last is not None:
                part.position = last + 1
            return len(pending) - len(done)

    def outstanding(self, tp: Hashable) -> int:
        """Fetched offsets of ``tp`` not yet completed (what the trigger still has to do)."""
        with self._lock:
            part = self._parts.get(tp)
            return 0 if part is None else len(part.pending) - len(part.done)

    def outstanding_total(self) -> int:
        """Fetched offsets not yet completed, over every partition."""
        with self._lock:
            return sum(len(p.pending) - len(p.done) for p in self._parts.values())

    @property
    def uncommitted(self) -> int:
        return self._uncommitted

    def to_commit(self, tps: Iterable[Hashable] | None = None) -> dict[Hashable, int]:
        """Positions that moved since their last commit (all partitions, or just ``tps``)."""
        with self._lock:
            keys = self._parts.keys() if tps is None else [t for t in tps if t in self._parts]
            out: dict[Hashable, int] = {}
            for tp in keys:
                part = self._parts[tp]
                if part.position is not None and part.position != part.committed:
                    out[tp] = part.position
            self._in_commit = self._uncommitted
            return out

    def committed(self, positions: dict[Hashable, int]) -> None:
        with self._lock:
            for tp, position in positions.items():
                part = self._parts.get(tp)
                if part is not None:
                    part.committed = position
            # Completions that came in while the commit was on the wire still count.
            self._uncommitted = max(self._uncommitted - self._in_commit, 0)
            self._in_commit = 0

    def position(self, tp: Hashable) -> int | None:
        with self._lock:
            part = self._parts.get(tp)
            return None if part is None else part.position

    def restart_point(self, tp: Hashable) -> int | None:
        """The first offset of ``tp`` not yet completed (where a new owner must resume), or
        None when nothing was fetched."""
        with self._lock:
            part = self._parts.get(tp)
            if part is None:
                return None
            return part.pending[0] if part.pending else part.position

    def drop(self, tps: Iterable[Hashable]) -> None:
        """Forget partitions (revoked): later completions for them are ignored."""
        with self._lock:
            for tp in tps:
                self._parts.pop(tp, None)

    def partitions(self) -> list[Hashable]:
        with self._lock:
            return list(self._parts)
