"""A replica's log writer: copies the replica's stdout/stderr (a pipe on stdin) into a log file
that is rotated whenever it passes its cap, while the replica runs.

It runs beside the replica, in the replica's process group and outside its sandbox (so the
replica never needs write access to the logs folder), and ends when the replica's last process
closes the pipe. It outlives a controller restart as the replica does. Run as a script with
``python -I -S``: nothing but the standard library, so it starts in milliseconds.

Usage: ``python -I -S logwriter.py PATH MAX_BYTES [STATUS_PATH PREFIX]``; one old generation is
kept (PATH.1), so the logs of one replica never take more than twice MAX_BYTES. With STATUS_PATH,
the last line that starts with PREFIX (the processor's exit status, see
``tickrun.functions.processor.exitcodes``) is also kept, without the prefix, in STATUS_PATH: the
controller reads the replica's reason there, whatever the log holds and however it rotated.
"""

from __future__ import annotations

import os
import signal
import sys

CHUNK = 64 * 1024


def _open(path: str) -> int:
    return os.open(path, os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o600)


class StatusCapture:
    """Keeps the last whole line that starts with ``prefix``. A chunk is searched for the
    prefix at C speed; lines are split only when it is there, so plain output costs nothing."""

    def __init__(self, path: str, prefix: bytes, limit: int = 4096) -> None:
        self.path = path
        self.prefix = prefix
        self.limit = limit
        self._tail = b""  # the unfinished last line
        self._overlong = False  # the unfinished line passed the limit: not a status line

    def feed(self, data: bytes) -> None:
        buf = self._tail + data
        cut = buf.rfind(b"\n")
        if cut < 0:
            rest = buf
        else:
            whole, rest = buf[:cut], buf[cut + 1 :]
            if self.prefix in whole:
                lines = whole.split(b"\n")[1 if self._overlong else 0 :]
                self._keep(lines)
            self._overlong = False
        if len(rest) > self.limit:
            rest, self._overlong = b"", True
        self._tail = rest

    def close(self) -> None:
        if not self._overlong:
            self._keep([self._tail])  # a last line without its newline

    def _keep(self, lines: list[bytes]) -> None:
        found = [ln for ln in lines if ln.startswith(self.prefix) and len(ln) <= self.limit]
        if not found:
            return
        tmp = self.path + ".tmp"
        # A status that cannot be written is lost; the log writer must go on (a writer that
        # died would take the replica down with a broken pipe).
        try:
            fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
            try:
                os.write(fd, found[-1][len(self.prefix) :] + b"\n")
            finally:
                os.close(fd)
            os.replace(tmp, self.path)
        except OSError:
            pass


def run(path: str, max_bytes: int, source: int = 0, status: StatusCapture | None = None) -> None:
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
        if status is not None:
            status.feed(data)
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
    if status is not None:
        status.close()


if __name__ == "__main__":
    capture = None
    if len(sys.argv) > 4:
        capture = StatusCapture(sys.argv[3], sys.argv[4].encode())
    run(sys.argv[1], int(sys.argv[2]), status=capture)
