"""Running real ``tickrun serve`` processes in tests, on free loopback ports."""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import threading
import time
import weakref
from collections.abc import Sequence
from pathlib import Path


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


# Replicas started and not yet terminated: a test that times out shows what they logged.
LIVE: weakref.WeakSet[ServedFunction] = weakref.WeakSet()


def live_logs(lines: int | None = None) -> str:
    """The last ``lines`` of stderr of every live replica, for a timeout's message."""
    if lines is None:
        lines = int(os.environ.get("TICKRUN_TEST_LOG_TAIL", "25"))
    parts = []
    for fn in list(LIVE):
        parts.append(f"--- {fn.path.name} (pid {fn.proc.pid if fn.proc else '-'}) stderr tail:")
        parts.extend(line.rstrip("\n") for line in fn.stderr[-lines:])
    return "\n".join(parts)


class ServedFunction:
    """``python -m tickrun serve …`` as a child process; stdout/stderr kept for assertions."""

    def __init__(self, path: str | Path, *args: str, env: dict[str, str] | None = None) -> None:
        self.path = Path(path)
        self.args: Sequence[str] = args
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.env = {**os.environ, **(env or {}), "TICKRUN_LOG_FORMAT": "json"}
        self.proc: subprocess.Popen[str] | None = None
        self.stdout: list[str] = []
        self.stderr: list[str] = []
        self._readers: list[threading.Thread] = []
        self._ready = threading.Event()

    def _pump(self, stream: object, sink: list[str], watch_ready: bool) -> None:
        for line in stream:  # type: ignore[attr-defined]
            sink.append(line)
            if watch_ready and '"event": "ready"' in line:
                self._ready.set()

    def start(self, timeout_s: float = 60.0, expect_ready: bool = True) -> ServedFunction:
        cmd = [
            sys.executable,
            "-m",
            "tickrun",
            "serve",
            str(self.path),
            "--port",
            str(self.port),
            *self.args,
        ]
        self.proc = subprocess.Popen(
            cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=self.env
        )
        LIVE.add(self)
        for stream, sink, watch in (
            (self.proc.stdout, self.stdout, True),
            (self.proc.stderr, self.stderr, False),
        ):
            t = threading.Thread(target=self._pump, args=(stream, sink, watch), daemon=True)
            t.start()
            self._readers.append(t)
        if expect_ready:
            deadline = time.monotonic() + timeout_s
            while not self._ready.wait(0.05):
                if self.proc.poll() is not None or time.monotonic() > deadline:
                    code = self.proc.poll()
                    if code is None:
                        self.proc.kill()  # never leave a half-started replica behind
                        self.proc.wait()
                    # Start-up errors come first; the tail shows where it got to.
                    log = self.stderr[:20] + ["...\n"] + self.stderr[-20:]
                    raise RuntimeError(
                        f"tickrun serve did not become ready (exit {code}):\n" + "".join(log)
                    )
        return self

    def terminate(self, timeout_s: float = 30.0) -> int:
        LIVE.discard(self)
        if self.proc is None:
            return 0
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
        try:
            code = self.proc.wait(timeout=timeout_s)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            code = self.proc.wait()
        for t in self._readers:
            t.join(timeout=5)
        return code

    def log_records(self) -> list[dict[str, object]]:
        out = []
        for line in self.stderr:
            try:
                out.append(json.loads(line))
            except ValueError:
                continue
        return out
