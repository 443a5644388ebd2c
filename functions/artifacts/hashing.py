"""The sha256 of a stored copy, computed off the caller's path on one hashing thread, or by
whoever waits for it.

A local store copies a big file with the kernel (no pass through Python) and hands the open
descriptor of the copy it wrote to this module, which hashes what is in that file: the digest
is the stored bytes' hash even if the source, or the store path, changes right after the copy
(the descriptor pins the inode). ``hashlib`` releases the GIL on big buffers and ``preadv``
releases it while reading, so the hash runs on a second core while the caller goes on.

One hashing thread per process: hashing is CPU-bound, and a second thread would compete with
the job for the same cores while the job runs. But a thread that *waits* for a digest (a
record's ``sha256`` read, ``commit()``, the run's end) has nothing else to do: it takes a hash
the thread has not started yet and computes it itself (:meth:`Digest.result`); ``commit()``
settles the newest first, so it works from the back of the queue while the thread works from
the front, and a burst of big artifacts is hashed on both cores. At most :data:`MAX_PENDING`
hashes wait at a time (each holds a descriptor); past that the caller hashes its own copy
before returning, so a job logging faster than the thread hashes shares the work instead of
queueing without bound.
"""

from __future__ import annotations

import hashlib
import os
import threading
from collections import deque

from ..errors import ArtifactError

MAX_PENDING = 16
READ_BYTES = 4 * 1024 * 1024

_QUEUED, _RUNNING = 0, 1  # a digest's state; claimed (running or done) once not queued


class ArtifactHashError(ArtifactError):
    """The sha256 of a stored copy could not be computed (I/O error, or the copy changed)."""


_buffers = threading.local()


def _buffer(size: int) -> memoryview:
    """A read buffer of ``size`` bytes (at most :data:`READ_BYTES`) kept per thread: a fresh
    zeroed 1 MB bytearray per hash cost ~0.04 ms of its ~0.9 (5 rounds of 50, medians)."""
    want = max(1, min(size, READ_BYTES))
    buf: bytearray | None = getattr(_buffers, "buf", None)
    if buf is None or len(buf) < want:
        buf = _buffers.buf = bytearray(want)
    return memoryview(buf)[:want]


def digest_fd(fd: int, size: int) -> str:
    """sha256 of the first bytes of ``fd`` read from offset 0; exactly ``size`` are expected.

    Read in big pieces (up to :data:`READ_BYTES`): each piece is one ``preadv`` and one
    ``update``, and between the two this thread needs the GIL back from the job's thread;
    256 KiB pieces made the hash of 1 MB 0.9 ms instead of 0.7 with the job logging on."""
    h = hashlib.sha256()
    view = _buffer(size)
    off = 0
    while n := os.preadv(fd, [view], off):
        h.update(view[:n])
        off += n
    if off != size:
        raise ArtifactHashError(f"the stored copy holds {off} bytes, {size} were written")
    return h.hexdigest()


class Digest:
    """The sha256 of one stored copy, being computed: :meth:`done`, :meth:`result`.

    Whoever claims it first computes it: the hashing thread, or a caller of :meth:`result`
    (which then does not wait for the thread to reach it)."""

    __slots__ = ("_error", "_fd", "_finished", "_size", "_state", "_value")

    def __init__(self, fd: int, size: int) -> None:
        self._fd = fd
        self._size = size
        self._state = _QUEUED  # changed under _HASHER's lock
        self._value = ""
        self._error: BaseException | None = None
        self._finished = threading.Event()

    def done(self) -> bool:
        return self._finished.is_set()

    def result(self, timeout: float | None = None) -> str:
        """The hex digest; computed here if the hashing thread has not started it. Raises
        :class:`ArtifactHashError` (or what else the hash raised), TimeoutError."""
        if _HASHER.claim(self):
            self._run()
        elif not self._finished.wait(timeout):
            raise TimeoutError(f"the sha256 of a stored copy took over {timeout} s")
        if self._error is not None:
            raise self._error
        return self._value

    def _run(self) -> None:
        # Called once, by the claimer: closes the descriptor whatever happens.
        try:
            self._value = digest_fd(self._fd, self._size)
        except OSError as exc:
            self._error = ArtifactHashError(f"cannot read the stored copy: {exc.strerror}")
            self._error.__cause__ = exc
        except BaseException as exc:  # reported to whoever reads the result
            self._error = exc
        finally:
            os.close(self._fd)
            self._finished.set()


class _Hasher:
    """The queue of digests not started yet, and the thread that works through it."""

    def __init__(self) -> None:
        self._reset()

    def _reset(self) -> None:
        # Also in a forked child (a sweep's worker): it inherits the queue but not the
        # thread, and maybe a lock held by the parent's thread at the fork.
        self._lock = threading.Lock()
        self._wake = threading.Condition(self._lock)
        self._queue: deque[Digest] = deque()
        self._waiting = 0  # queued and not claimed: the bound of MAX_PENDING
        self._started = False

    def submit(self, fd: int, size: int) -> Digest:
        digest = Digest(fd, size)
        with self._lock:
            if not self._started:
                threading.Thread(target=self._loop, name="tickrun-hash", daemon=True).start()
                self._started = True
            queued = self._waiting < MAX_PENDING
            if queued:
                self._queue.append(digest)
                self._waiting += 1
                self._wake.notify()
            else:
                digest._state = _RUNNING
        if not queued:  # the thread is behind: this caller hashes its own copy
            digest._run()
        return digest

    def claim(self, digest: Digest) -> bool:
        """True if ``digest`` was not started and the caller must now compute it."""
        with self._lock:
            if digest._state != _QUEUED:
                return False
            digest._state = _RUNNING
            self._waiting = max(0, self._waiting - 1)  # 0 for a parent's digest in a child
            return True

    def _loop(self) -> None:
        while True:
            with self._lock:
                while not self._queue:
                    self._wake.wait()
                digest = self._queue.popleft()
                if digest._state != _QUEUED:
                    continue  # a waiter took it
                digest._state = _RUNNING
                self._waiting -= 1
            digest._run()


_HASHER = _Hasher()
os.register_at_fork(after_in_child=_HASHER._reset)


def digest_later(fd: int, size: int) -> Digest:
    """The sha256 of the file open at ``fd`` (its first ``size`` bytes), computed on the
    hashing thread or by the first caller of :meth:`Digest.result`; ``fd`` is closed once
    it is. A failed hash raises :class:`ArtifactHashError` from ``result()``."""
    return _HASHER.submit(fd, size)
