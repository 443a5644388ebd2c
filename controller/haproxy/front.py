"""HAProxy as the controller's public front: a child process the controller starts, restarts
when it dies, and stops (soft: requests under way finish) on shutdown; its stderr goes to the
controller's log. The controller binds the public socket itself and hands it down (``fd@``), so
the address stays bound while HAProxy restarts (connections wait in the backlog) and port 0
works as without HAProxy.
"""

from __future__ import annotations

import asyncio
import contextlib
import ctypes
import logging
import os
import re
import shutil
import signal
import socket
import tempfile
import time
from pathlib import Path

from tickrun.functions import settings as registry
from tickrun.functions.errors import SpecError, TickrunError
from tickrun.functions.httpserver import warn_once

from ..endpoints import EndpointTable
from ..settings import Settings
from .config import LOG_TAG, ProxyConfig, render
from .routes import Routes
from .runtime import RuntimeApi, RuntimeApiError

logger = logging.getLogger(__name__)

# HAProxy's log line of a request that ended abnormally (config.LOG_FORMAT).
_FRONT_LOG = re.compile(rf"{LOG_TAG} status=(-?\d+) term=(\S+) client=(\S+)")
READY_TIMEOUT_S = 10.0
MAX_SOCKET_PATH = 100  # AF_UNIX paths stop at 107 bytes
RESTART_BACKOFF_S = (0.1, 0.5, 1.0, 2.0, 5.0)
STABLE_AFTER_S = 30.0
PR_SET_PDEATHSIG = 1


def haproxy_binary(settings: Settings) -> str | None:
    """The HAProxy to run in front, or None for the Python data path."""
    if settings.proxy == "python":
        return None
    exe = shutil.which("haproxy") or next(
        (p for p in ("/usr/sbin/haproxy", "/usr/local/sbin/haproxy") if os.access(p, os.X_OK)),
        None,
    )
    if exe is None and settings.proxy == "haproxy":
        raise SpecError(
            f"{registry.PROXY.name}=haproxy, but no haproxy binary was found "
            "(apt-get install haproxy, or set it to 'python' or 'auto')"
        )
    return exe


def listen(host: str, port: int) -> socket.socket:
    """The public listening socket (HAProxy inherits it)."""
    family, kind, proto, _, addr = socket.getaddrinfo(
        host or None, port, type=socket.SOCK_STREAM, flags=socket.AI_PASSIVE
    )[0]
    sock = socket.socket(family, kind, proto)
    try:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        sock.bind(addr)
        sock.listen(1024)
    except OSError:
        sock.close()
        raise
    return sock


def _die_with_parent() -> None:
    # A controller killed with SIGKILL must not leave HAProxy holding its public port.
    with contextlib.suppress(OSError, AttributeError):
        ctypes.CDLL(None, use_errno=True).prctl(PR_SET_PDEATHSIG, signal.SIGTERM)


def _write_private(path: Path, text: str) -> None:
    tmp = path.with_suffix(path.suffix + ".tmp")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "w", encoding="utf-8") as f:
        f.write(text)
    tmp.replace(path)


def _log_front_line(line: str) -> bool:
    """One abnormal request HAProxy answered or closed itself, logged as the Python edge logs
    it; False for HAProxy's other messages."""
    front = _FRONT_LOG.match(line)
    if front is None:
        return False
    status, term, client = int(front[1]), front[2], front[3]
    if status == 400 and term.startswith("PR"):
        # A request its parser refused: the Python edge's line, under the same budget.
        warn_once("malformed request", status=400, reason="refused by HAProxy", remote=client)
    elif status >= 500:
        # No replica answered, or one broke off or timed out: the operator's to see (the
        # termination state says which side and when).
        warn_once("request failed at the front", status=status, term=term)
    else:
        # Head or keep-alive deadlines, client aborts: routine.
        logger.debug("haproxy closed a request", extra={"status": status, "term": term})
    return True


class HaproxyFront:
    """Constructor does no I/O; :meth:`start` runs HAProxy on the public socket."""

    def __init__(
        self,
        exe: str,
        settings: Settings,
        endpoints: EndpointTable,
        token: str,
        max_connections: int,
        front_secret: str,
    ) -> None:
        self.exe = exe
        self.settings = settings
        self.endpoints = endpoints
        self.token = token
        self.max_connections = max_connections
        self.front_secret = front_secret
        self.dir = settings.state_dir / "haproxy"
        self._sock_dir: Path | None = None  # a short private dir when the state dir is deep
        self.api: RuntimeApi | None = None
        self.routes: Routes | None = None
        self._config: Path | None = None
        self._functions_map = self.dir / "functions.map"
        self._proc: asyncio.subprocess.Process | None = None
        self._public_fd = -1
        self._stopping = False
        self._tasks: list[asyncio.Task[None]] = []
        self._stderr: asyncio.Task[None] | None = None
        self.restarts = 0

    @property
    def pid(self) -> int | None:
        return self._proc.pid if self._proc is not None else None

    async def start(self, public: socket.socket, internal_port: int) -> None:
        self.dir.mkdir(mode=0o700, parents=True, exist_ok=True)
        os.chmod(self.dir, 0o700)
        sock_path = self.dir / "admin.sock"
        if len(str(sock_path)) > MAX_SOCKET_PATH:
            self._sock_dir = Path(tempfile.mkdtemp(prefix="tickrun-haproxy-"))
            sock_path = self._sock_dir / "admin.sock"
        functions_map = self.dir / "functions.map"
        cfg = ProxyConfig(
            public_fd=public.fileno(),
            internal_port=internal_port,
            stats_socket=str(sock_path),
            functions_map=str(functions_map),
            token=None if self.settings.public_gateway else self.token,
            max_connections=self.max_connections,
            header_timeout_s=self.settings.header_timeout_s,
            keepalive_timeout_s=self.settings.keepalive_timeout_s,
            body_timeout_s=self.settings.body_timeout_s,
            stop_timeout_s=self.settings.stop_timeout_s,
            front_secret=self.front_secret,
        )
        self._public_fd = public.fileno()
        self._config = self.dir / "haproxy.cfg"
        _write_private(self._config, render(cfg))
        self.api = RuntimeApi(str(sock_path))
        self.routes = Routes(self.api, str(functions_map), cfg.slots)
        await self._spawn()
        self.endpoints.mirror = self.routes
        # What was published before HAProxy ran (adopted replicas) is told now.
        for name in self.endpoints.names():
            entry = self.endpoints.get(name)
            if entry is not None:
                self.routes.published(name, {e.replica_id: e.url for e in entry.endpoints})
        self._tasks = [
            asyncio.create_task(self.routes.run(), name="haproxy-routes"),
            asyncio.create_task(self._watch(), name="haproxy-watch"),
        ]
        logger.info(
            "HAProxy serves the public address",
            extra={"pid": self.pid, "internal_port": internal_port, "config": str(self._config)},
        )

    async def _spawn(self) -> None:
        assert self.api is not None
        assert self.routes is not None
        assert self._config is not None
        # HAProxy loads the map at start; the routes fill it through the runtime API.
        _write_private(self._functions_map, "")
        self.routes.reset()
        self._proc = await asyncio.create_subprocess_exec(
            self.exe,
            "-db",
            "-f",
            str(self._config),
            stdin=asyncio.subprocess.DEVNULL,
            stdout=asyncio.subprocess.DEVNULL,
            stderr=asyncio.subprocess.PIPE,
            pass_fds=(self._public_fd,),
            start_new_session=True,  # the controller's signals are the controller's
            preexec_fn=_die_with_parent,
        )
        self._stderr = asyncio.create_task(self._log_stderr(self._proc), name="haproxy-stderr")
        deadline = time.monotonic() + READY_TIMEOUT_S
        while True:
            if self._proc.returncode is not None:
                raise TickrunError(
                    f"HAProxy exited at start (code {self._proc.returncode}); "
                    "see the controller log"
                )
            try:
                await self.api.run("show info")
                return
            except RuntimeApiError:
                if time.monotonic() > deadline:
                    raise TickrunError("HAProxy did not start in time") from None
                await asyncio.sleep(0.05)

    async def _log_stderr(self, proc: asyncio.subprocess.Process) -> None:
        assert proc.stderr is not None
        async for raw in proc.stderr:
            line = raw.decode("utf-8", "replace").rstrip()[:500]
            if not line or "stopped (cumulated conns" in line:
                continue  # one per backend at every stop
            if _log_front_line(line):
                continue
            # Server state changes arrive as [WARNING]: routine here (drains, new servers).
            level = logging.ERROR if "[ALERT]" in line else logging.INFO
            logger.log(level, "haproxy: %s", line)

    async def _watch(self) -> None:
        failures = 0
        while not self._stopping:
            assert self._proc is not None
            started = time.monotonic()
            code = await self._proc.wait()
            if self._stopping:
                return
            if time.monotonic() - started > STABLE_AFTER_S:
                failures = 0
            delay = RESTART_BACKOFF_S[min(failures, len(RESTART_BACKOFF_S) - 1)]
            failures += 1
            logger.error(
                "HAProxy exited; restarting it",
                extra={"returncode": code, "restart_in_s": delay},
            )
            await asyncio.sleep(delay)
            try:
                await self._spawn()
            except TickrunError as exc:
                logger.error("HAProxy restart failed", extra={"error": exc.message})
                continue
            self.restarts += 1
            logger.info("HAProxy restarted", extra={"pid": self.pid, "restarts": self.restarts})

    async def stop(self) -> None:
        """Soft stop: HAProxy stops accepting and lets requests under way finish (bounded by
        its hard-stop-after)."""
        self._stopping = True
        self.endpoints.mirror = None
        for task in self._tasks:
            task.cancel()
        for task in self._tasks:
            with contextlib.suppress(asyncio.CancelledError):
                await task
        proc = self._proc
        if proc is not None and proc.returncode is None:
            with contextlib.suppress(ProcessLookupError):
                proc.send_signal(signal.SIGUSR1)
            try:
                await asyncio.wait_for(proc.wait(), self.settings.stop_timeout_s + 2.0)
            except TimeoutError:
                with contextlib.suppress(ProcessLookupError):
                    proc.kill()
                await proc.wait()
        if self._stderr is not None:
            with contextlib.suppress(asyncio.CancelledError):
                await asyncio.wait_for(self._stderr, 1.0)
        if self._sock_dir is not None:
            shutil.rmtree(self._sock_dir, ignore_errors=True)
