"""Parsed hub files kept per process, valid while the files' stat is unchanged.

Every ``import_function("hub://…")`` builds a fresh :class:`~.resolver.Hub`, and a hub folder's
index is generated from its item specs: without a cache each call parsed every ``item.yaml``
and hashed every file of the catalogue (50 to 350 ms). The index and the parsed specs are kept
here, keyed by path, together with a *signature*: the (inode, size, mtime_ns, ctime_ns) of every
file they were made from, plus the layout of the folder (which ``*/*/item.yaml`` exist). An
unchanged hub then costs a ``stat`` per file; a changed, added or removed item is seen by the
next call.

``ctime`` is in the signature because a copy that keeps the old mtime (``cp -p``, ``rsync -a``,
``touch -d``) cannot keep the old ctime. A file whose ctime is within :data:`RACY_NS` of the
moment it was read is not cached ("racy", as git calls it): file times come from a coarse clock,
so a second write in the same tick, with the same size, could otherwise go unseen.
"""

from __future__ import annotations

import os
import threading
import time
from collections.abc import Callable, Iterable
from pathlib import Path
from typing import Any

# Files changed this recently are read again on the next call instead of cached (the kernel
# stamps file times from a clock that ticks every few ms; a second of margin is plenty).
RACY_NS = 1_000_000_000

Stat = tuple[int, int, int, int]
Signature = tuple[tuple[str, Stat | None], ...]


def stat_of(path: str | Path) -> Stat | None:
    """(inode, size, mtime_ns, ctime_ns) of ``path`` (links followed), or None if absent."""
    try:
        st = os.stat(path)
    except (FileNotFoundError, NotADirectoryError):
        return None
    return (st.st_ino, st.st_size, st.st_mtime_ns, st.st_ctime_ns)


def signature(root: str | Path, files: Iterable[str]) -> Signature:
    """The stat of each of ``files`` (paths relative to ``root``), in the order given."""
    base = os.fspath(root)  # plain string joins: pathlib's cost more than the stat
    return tuple((name, stat_of(os.path.join(base, name))) for name in files)


def racy(sig: Signature, since_ns: int) -> bool:
    """True if a file of ``sig`` changed less than :data:`RACY_NS` before ``since_ns``."""
    return any(st is not None and st[3] >= since_ns - RACY_NS for _, st in sig)


class StatCache:
    """``key → (signature, value)``; :meth:`get` rebuilds the value when the signature moved."""

    def __init__(self, max_entries: int = 256) -> None:
        self._lock = threading.Lock()
        self._entries: dict[str, tuple[Signature, Any]] = {}
        self._max = max_entries

    def get(
        self,
        key: str,
        current: Callable[[Any], Signature | None],
        build: Callable[[], tuple[Signature, Any]],
    ) -> Any:
        """The cached value of ``key`` if ``current(value)`` (its files' signature now) equals
        the one it was built with; else ``build()`` → (signature taken *before* reading the
        files, or after with :func:`racy` checked, value), cached unless racy."""
        with self._lock:
            hit = self._entries.get(key)
        if hit is not None:
            sig, value = hit
            if current(value) == sig:
                return value
        started = time.time_ns()
        sig, value = build()
        with self._lock:
            if racy(sig, started):
                self._entries.pop(key, None)
            else:
                if len(self._entries) >= self._max and key not in self._entries:
                    self._entries.pop(next(iter(self._entries)))  # the oldest entry
                self._entries[key] = (sig, value)
        return value

    def clear(self) -> None:
        with self._lock:
            self._entries.clear()
