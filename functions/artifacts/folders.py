"""Open descriptors of a local store's folders, checked once, for writes relative to them.

Writing ``root/project/uid/iteration/name`` by path makes the kernel walk the path, and
checking that it stays inside the root (symlinks resolved) costs a ``stat`` per segment: about
a tenth of a 1 MB ``log_artifact``. A folder is instead created, checked and opened once; the
files are created and renamed relative to its descriptor (``dir_fd``), so they land in the
very folder that was checked even if a path segment is swapped for a symlink afterwards.
"""

from __future__ import annotations

import os
import threading
import weakref
from collections import OrderedDict
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from ..errors import ArtifactError

MAX_OPEN = 16  # a run writes into one folder per iteration; a sweep's process, a few at a time
_OPEN_DIR = os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC | os.O_NOFOLLOW


class _Folder:
    __slots__ = ("evicted", "fd", "path", "users")

    def __init__(self, fd: int, path: str) -> None:
        self.fd = fd
        self.path = path
        self.users = 0  # blocks writing through it now: closed after them when evicted
        self.evicted = False


def _close_all(folders: OrderedDict[str, _Folder]) -> None:
    for f in folders.values():
        os.close(f.fd)
    folders.clear()


class Folders:
    """At most :data:`MAX_OPEN` open folders of one store root, least recently used closed."""

    def __init__(self, root: Path) -> None:
        self._root = root
        self._lock = threading.Lock()
        self._open: OrderedDict[str, _Folder] = OrderedDict()
        weakref.finalize(self, _close_all, self._open)

    @contextmanager
    def open(self, folder: str) -> Iterator[tuple[int, str]]:
        """(descriptor, path) of ``folder`` (a sanitised key prefix; "" for the root), created
        if missing; the descriptor stays open while the block runs."""
        entry = self._acquire(folder)
        try:
            yield entry.fd, entry.path
        finally:
            with self._lock:
                entry.users -= 1
                if entry.evicted and entry.users == 0:
                    os.close(entry.fd)

    def _acquire(self, folder: str) -> _Folder:
        with self._lock:
            entry = self._open.get(folder)
            # A folder deleted meanwhile (its link count drops to 0) is created again.
            if entry is not None and os.fstat(entry.fd).st_nlink > 0:
                self._open.move_to_end(folder)
                entry.users += 1
                return entry
        fresh = self._checked(folder)
        with self._lock:
            old = self._open.pop(folder, None)
            if old is not None:
                self._drop(old)
            self._open[folder] = fresh
            fresh.users += 1
            while len(self._open) > MAX_OPEN:
                _, lru = self._open.popitem(last=False)
                self._drop(lru)
            return fresh

    @staticmethod
    def _drop(entry: _Folder) -> None:
        entry.evicted = True
        if entry.users == 0:
            os.close(entry.fd)

    def _checked(self, folder: str) -> _Folder:
        path = self._root.joinpath(*folder.split("/")) if folder else self._root
        try:
            # The same rule as the store's paths: inside the root once symlinks are resolved;
            # checked before creating anything, and again once it exists.
            self._inside(folder, path)
            path.mkdir(parents=True, exist_ok=True)
            resolved = self._inside(folder, path)
            fd = os.open(resolved, _OPEN_DIR)
        except OSError as exc:
            raise ArtifactError(f"cannot write into artifact folder {folder!r}: {exc}") from exc
        st, seen = os.fstat(fd), os.stat(resolved)
        if (st.st_dev, st.st_ino) != (seen.st_dev, seen.st_ino):  # swapped while opening
            os.close(fd)
            raise ArtifactError(f"artifact folder {folder!r} changed while it was opened")
        return _Folder(fd, str(resolved))

    def _inside(self, folder: str, path: Path) -> Path:
        resolved = path.resolve()
        if not resolved.is_relative_to(self._root):
            raise ArtifactError(f"artifact folder {folder!r} resolves outside the store root")
        return resolved
