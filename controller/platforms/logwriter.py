"""A replica's log writer: copies the replica's stdout/stderr (a pipe on stdin) into a log file
that is rotated whenever it passes its cap, while the replica runs.

It runs beside the replica, in the replica's process group and outside its sandbox (so the
replica never needs write access to the logs folder), and ends when the replica's last process
closes the pipe. It outlives a controller restart as the replica does. Run as a script with
``python -I -S``: nothing but the standard library, so it starts in milliseconds.

Usage: ``python -I -S logwriter.py PATH MAX_BYTES``; one old generation is kept (PATH.1), so
the logs of one replica never take more than twice MAX_BYTES.
"""

from __future__ import annotations

import os
import signal
import sys

CHUNK = 64 * 1024


def _open(path: str) -> int:
    return os.open(path, os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o600)


def run(path: str, max_bytes: int, source: int = 0) -> None:
    # The replica's stop signal is for the replica: this writer drains the pipe to its end.
    signal.signal(signal.SIGTERM, signal.SIG_IGN)
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    fd = _open(path)
    size = os.fstat(fd).st_size
    while True:
        try:
            data = os.read(source, CHUNK)
        except InterruptedError:  # pragma: no cover - PEP 475 retries; kept for old kernels
            continue
        if not data:
            break
        if size and size + len(data) > max_bytes:
            os.close(fd)
            os.replace(path, path + ".1")
            fd = _open(path)
            size = 0
        # A single chunk larger than the cap is cut to its tail, so the file stays capped.
        if len(data) > max_bytes:
            data = data[-max_bytes:]
        os.write(fd, data)
        size += len(data)
    os.close(fd)


if __name__ == "__main__":
    run(sys.argv[1], int(sys.argv[2]))
