"""Shared plumbing for the real-peer helpers: pinned versions, cache paths, ports, processes."""

from __future__ import annotations

import atexit
import contextlib
import ctypes
import logging
import os
import shutil
import signal
import socket
import subprocess
import time
from collections.abc import Mapping, Sequence
from functools import cache
from pathlib import Path
from types import TracebackType
from typing import IO, Any, ClassVar, Self

logger = logging.getLogger(__name__)

REPO_ROOT = Path(__file__).resolve().parents[2]
VERSIONS_FILE = REPO_ROOT / "deploy" / "peers" / "versions.env"
ENSURE_SH = "deploy/peers/ensure.sh"


class PeerUnavailable(RuntimeError):
    """A peer cannot be provided; the message says what to run to fix it."""


@cache
def versions() -> dict[str, str]:
    """The pins from deploy/peers/versions.env, which ensure.sh also reads."""
    pins: dict[str, str] = {}
    for raw in VERSIONS_FILE.read_text(encoding="utf-8").splitlines():
        line = raw.strip()
        if not line or line.startswith("#") or "=" not in line:
            continue
        key, _, value = line.partition("=")
        pins[key.strip()] = value.strip()
    return pins


def peers_cache() -> Path:
    """Same root as ensure.sh: ${TICKRUN_CACHE:-$HOME/.cache/tickrun}/peers."""
    root = os.environ.get("TICKRUN_CACHE") or str(Path.home() / ".cache" / "tickrun")
    return Path(root) / "peers"


def free_port() -> int:
    # The port is released before the peer binds it, so another process could take it in
    # between; callers retry the start when the peer reports the address in use.
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def wait_for_port(port: int, timeout: float) -> bool:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        with contextlib.suppress(OSError), socket.create_connection(("127.0.0.1", port), 0.5):
            return True
        time.sleep(0.1)
    return False


def tail(path: Path, lines: int = 40) -> str:
    try:
        text = path.read_text(encoding="utf-8", errors="replace")
    except OSError:
        return f"(no log at {path})"
    return "\n".join(text.splitlines()[-lines:])


_PR_SET_PDEATHSIG = 1


def _die_with_parent() -> None:
    # A peer must not outlive a test run that was SIGKILLed (CI timeouts): an orphaned JVM or
    # MinIO would keep ports and temp dirs busy. Runs in the child between fork and exec.
    with contextlib.suppress(Exception):
        ctypes.CDLL("libc.so.6", use_errno=True).prctl(_PR_SET_PDEATHSIG, signal.SIGKILL)


def spawn(
    argv: Sequence[str],
    *,
    log: IO[bytes],
    env: Mapping[str, str] | None = None,
    cwd: Path | None = None,
) -> subprocess.Popen[bytes]:
    logger.debug("spawning %s", " ".join(argv))
    return subprocess.Popen(
        list(argv),
        stdin=subprocess.DEVNULL,
        stdout=log,
        stderr=subprocess.STDOUT,
        env=dict(env) if env is not None else None,
        cwd=cwd,
        # Own process group, so stop() signals the peer and anything it forked, and a Ctrl-C
        # aimed at pytest does not hit the peer before the fixture teardown does.
        start_new_session=True,
        preexec_fn=_die_with_parent,
    )


def terminate(proc: subprocess.Popen[bytes] | None, grace: float) -> None:
    """SIGTERM the peer's process group, SIGKILL it if it is still there after `grace` s."""
    if proc is None or proc.poll() is not None:
        return
    with contextlib.suppress(ProcessLookupError):
        os.killpg(proc.pid, signal.SIGTERM)
    try:
        proc.wait(timeout=grace)
    except subprocess.TimeoutExpired:
        logger.warning("pid %d ignored SIGTERM for %.0fs; killing it", proc.pid, grace)
        with contextlib.suppress(ProcessLookupError):
            os.killpg(proc.pid, signal.SIGKILL)
        proc.wait(timeout=10)


class PeerProcess:
    """The lifecycle every peer server shares: start (one retry when a freshly probed port was
    taken before the server bound it), stop (SIGTERM, SIGKILL after a grace, delete the data
    dir), and use as a context manager. Subclasses provide the installation check, one start
    attempt, and a line describing where they listen."""

    peer_name: ClassVar[str] = "peer"
    stop_grace_s: ClassVar[float] = 10.0

    _proc: subprocess.Popen[bytes] | None = None
    workdir: Path | None = None
    startup_seconds: float | None = None

    def _check_installation(self) -> Any:
        raise NotImplementedError

    def _start_once(self, installation: Any) -> None:
        raise NotImplementedError

    def _describe(self) -> str:
        raise NotImplementedError

    def start(self) -> Self:
        if self._proc is not None:
            raise RuntimeError(f"{type(self).__name__} already started")
        installation = self._check_installation()
        t0 = time.monotonic()
        for attempt in (1, 2):
            try:
                self._start_once(installation)
                break
            except PeerUnavailable as exc:
                port_clash = "address already in use" in str(exc).lower()
                self.stop()
                if attempt == 2 or not port_clash:
                    raise
                logger.warning("%s port clash, retrying with new ports", self.peer_name)
        self.startup_seconds = time.monotonic() - t0
        logger.info("%s in %.1fs", self._describe(), self.startup_seconds)
        return self

    def stop(self) -> None:
        atexit.unregister(self.stop)
        terminate(self._proc, grace=self.stop_grace_s)
        self._proc = None
        if self.workdir is not None:
            shutil.rmtree(self.workdir, ignore_errors=True)
            self.workdir = None

    def __enter__(self) -> Self:
        return self.start()

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.stop()
