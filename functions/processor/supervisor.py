"""The processor's parent process: N worker processes on one port, restarted when they die.

Workers bind the port with SO_REUSEPORT, so the kernel spreads connections over them and a
CPU-bound handler uses every core. The supervisor itself never touches a request: it keeps the
port reserved, restarts workers with backoff, and on SIGTERM lets every worker drain.
"""

from __future__ import annotations

import json
import logging
import os
import shutil
import signal
import socket
import subprocess
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from .. import settings
from ..errors import TickrunError
from ..launch import parent_env, python_command
from ..spec import FunctionSpec
from .exitcodes import ExitCode, ExitStatus, Reason
from .stats import STATS_DIR_ENV
from .worker import CONFIG_ENV, FAILED_SUFFIX, READY_DIR_ENV, WorkerConfig
from .worker import main as worker_main

logger = logging.getLogger(__name__)

RESTART_BACKOFF_S = (0.25, 0.5, 1.0, 2.0, 5.0, 10.0)
STABLE_AFTER_S = 30.0


def reserve_port(host: str, port: int) -> socket.socket:
    """Bind (not listen) a SO_REUSEPORT socket so the port stays ours while workers come and go."""
    sock = socket.socket(socket.AF_INET6 if ":" in host else socket.AF_INET, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEPORT, 1)
    try:
        sock.bind((host, port))
    except OSError as exc:
        sock.close()
        raise TickrunError(f"cannot bind {host}:{port}: {exc.strerror}") from exc
    return sock


@dataclass
class _Slot:
    index: int
    proc: subprocess.Popen[bytes] | None = None
    started_at: float = 0.0
    failures: int = 0
    restart_at: float = 0.0
    restarts: int = 0
    pids: list[int] = field(default_factory=list)


class Supervisor:
    """Constructor does no I/O; :meth:`run` blocks until SIGTERM/SIGINT or a fatal error."""

    def __init__(
        self,
        function_dir: str | Path,
        spec: FunctionSpec,
        *,
        host: str = "127.0.0.1",
        port: int = 8080,
        workers: int | None = None,
    ) -> None:
        self.function_dir = Path(function_dir).resolve()
        self.spec = spec
        self.host = host
        self.port = port
        self.workers = workers or spec.spec.workers
        self._slots = [_Slot(i) for i in range(self.workers)]
        self._stopping = False
        self._metrics_dir: str | None = None
        self._reservation: socket.socket | None = None
        self._restarts_counter: Any = None
        self._ready_dir: str | None = None
        self._announced = False
        self._failed: ExitStatus | None = None  # why the processor stops, for its status line

    @property
    def url(self) -> str:
        return f"http://{self.host}:{self.port}"

    def _spawn(self, slot: _Slot) -> None:
        config = WorkerConfig(
            function_dir=str(self.function_dir),
            spec=self.spec.model_dump(by_alias=True, mode="json", exclude_none=True),
            host=self.host,
            port=self.port,
            worker_index=slot.index,
            worker_count=self.workers,
        )
        env = dict(os.environ)
        env[CONFIG_ENV] = config.model_dump_json()
        env["PROMETHEUS_MULTIPROC_DIR"] = self._metrics_dir or ""
        env[READY_DIR_ENV] = self._ready_dir or ""
        env[STATS_DIR_ENV] = self._metrics_dir or ""
        env.setdefault(settings.LOG_FORMAT.name, "json")
        env["PYTHONUNBUFFERED"] = "1"
        env.update(parent_env())
        # SIGKILL, not a drain: a worker must not outlive its supervisor (kill -9 of a replica).
        slot.proc = subprocess.Popen(
            python_command(worker_main, on_parent_death=signal.SIGKILL),
            env=env,
            cwd=str(self.function_dir),
        )
        slot.started_at = time.monotonic()
        slot.pids.append(slot.proc.pid)

    def _on_exit(self, slot: _Slot, code: int) -> bool:
        """Handle a worker's exit; False when the whole processor must stop."""
        from prometheus_client import multiprocess

        assert slot.proc is not None
        pid = slot.proc.pid
        multiprocess.mark_process_dead(pid)  # type: ignore[no-untyped-call]
        uptime = time.monotonic() - slot.started_at
        slot.proc = None
        if self._stopping:
            return True
        if code == ExitCode.CONFIG:
            self._failed = self._worker_failure(pid)
            logger.error(
                "function cannot start; see the worker log above",
                extra={"function": self.spec.name, "worker": slot.index},
            )
            return False
        slot.failures = 0 if uptime > STABLE_AFTER_S else slot.failures + 1
        delay = RESTART_BACKOFF_S[min(slot.failures, len(RESTART_BACKOFF_S) - 1)]
        slot.restart_at = time.monotonic() + delay
        slot.restarts += 1
        logger.warning(
            "worker exited; restarting",
            extra={
                "function": self.spec.name,
                "worker": slot.index,
                "exit_code": code,
                "uptime_s": round(uptime, 2),
                "restart_in_s": delay,
                "restarts": slot.restarts,
            },
        )
        if self._restarts_counter is not None:
            self._restarts_counter.labels(self.spec.name).inc()
        return True

    def _worker_failure(self, pid: int) -> ExitStatus:
        """The reason a worker left before exiting with the config code (or a generic one)."""
        try:
            raw = Path(self._ready_dir or ".", f"{pid}{FAILED_SUFFIX}").read_text()
        except OSError:
            raw = ""
        fallback = ExitStatus(code=ExitCode.CONFIG, reason=Reason.START)
        return ExitStatus.parse(raw) or fallback

    def _wait_ready(self, timeout_s: float) -> bool:
        """True once every worker has bound the port (each touches a file named by its pid)."""
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline and not self._stopping:
            procs = [s.proc for s in self._slots]
            if any(p is None or p.poll() is not None for p in procs):
                return False
            if self._all_bound():
                return True
            time.sleep(0.02)
        return False

    def run(self) -> int:
        self._metrics_dir = tempfile.mkdtemp(prefix="tickrun-metrics-")
        self._ready_dir = tempfile.mkdtemp(prefix="tickrun-ready-")
        os.environ["PROMETHEUS_MULTIPROC_DIR"] = self._metrics_dir
        from .metrics import supervisor_restarts_counter

        self._restarts_counter = supervisor_restarts_counter()
        self._reservation = reserve_port(self.host, self.port)
        self.port = self._reservation.getsockname()[1]

        def _stop(signum: int, _frame: object) -> None:
            self._stopping = True

        signal.signal(signal.SIGTERM, _stop)
        signal.signal(signal.SIGINT, _stop)
        try:
            for slot in self._slots:
                self._spawn(slot)
            if self._wait_ready(self.spec.spec.readiness_timeout_s or 120):
                self._announce_ready()
            code = self._loop()
        finally:
            self._shutdown()
            if self._reservation is not None:
                self._reservation.close()
            shutil.rmtree(self._metrics_dir, ignore_errors=True)
            shutil.rmtree(self._ready_dir, ignore_errors=True)
        if self._failed is not None:
            # Last on stdout: the platform keeps this line as the replica's exit status.
            print(self._failed.line(), end="", flush=True)
        return code

    def _all_bound(self) -> bool:
        ready_dir = Path(self._ready_dir or ".")
        procs = [s.proc for s in self._slots]
        return all(p is not None and (ready_dir / str(p.pid)).exists() for p in procs)

    def _announce_ready(self) -> None:
        self._announced = True
        logger.info(
            "processor ready",
            extra={
                "function": self.spec.name,
                "url": self.url,
                "workers": self.workers,
                "pid": os.getpid(),
            },
        )
        print(json.dumps({"event": "ready", "url": self.url}), flush=True)

    def _loop(self) -> int:
        while not self._stopping:
            # A worker that died during start-up was restarted: announce once all are bound.
            if not self._announced and self._all_bound():
                self._announce_ready()
            now = time.monotonic()
            for slot in self._slots:
                if slot.proc is not None:
                    code = slot.proc.poll()
                    if code is not None and not self._on_exit(slot, code):
                        return ExitCode.CONFIG
                elif now >= slot.restart_at:
                    self._spawn(slot)
            time.sleep(0.05)
        return ExitCode.OK

    def _shutdown(self) -> None:
        self._stopping = True
        live = [s.proc for s in self._slots if s.proc is not None and s.proc.poll() is None]
        for proc in live:
            proc.send_signal(signal.SIGTERM)
        deadline = time.monotonic() + self.spec.spec.drain_timeout_s + 5
        for proc in live:
            try:
                proc.wait(timeout=max(0.1, deadline - time.monotonic()))
            except subprocess.TimeoutExpired:
                logger.warning("worker did not drain in time; killing", extra={"pid": proc.pid})
                proc.kill()
                proc.wait()
        logger.info("processor stopped", extra={"function": self.spec.name})
