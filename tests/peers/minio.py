"""A real MinIO server (single drive, loopback) for tests.

The binary is built from source via ``deploy/peers/ensure.sh minio``; this module only runs it::

    server = MinioServer().start()
    client = server.client()          # minio.Minio with the server's random root credentials
    ...
    server.stop()
"""

from __future__ import annotations

import atexit
import logging
import os
import secrets
import subprocess
import tempfile
import time
import urllib.error
import urllib.request
from pathlib import Path
from typing import TYPE_CHECKING

from ._util import (
    ENSURE_SH,
    PeerProcess,
    PeerUnavailable,
    free_port,
    peers_cache,
    spawn,
    tail,
    versions,
)

if TYPE_CHECKING:
    from minio import Minio

logger = logging.getLogger(__name__)


# Loopback probes must not go through an http_proxy from the environment.
_NO_PROXY = urllib.request.build_opener(urllib.request.ProxyHandler({}))


def minio_binary() -> Path:
    """The binary ensure.sh built (or $TICKRUN_MINIO_BIN)."""
    override = os.environ.get("TICKRUN_MINIO_BIN")
    return Path(override) if override else peers_cache() / "bin" / "minio"


class MinioServer(PeerProcess):
    """One MinIO server on loopback with random root credentials and a temp data dir.

    The constructor does no I/O; ``start()`` returns once ``/minio/health/live`` (and
    ``/minio/health/ready``) answer 200.
    """

    peer_name = "minio"
    stop_grace_s = 10.0

    def __init__(self, *, binary: Path | None = None, startup_timeout: float = 60.0) -> None:
        self.binary = binary
        self.startup_timeout = startup_timeout
        # Random per server so a test can never pass by accident with well-known defaults.
        self.access_key = "tickrun-" + secrets.token_hex(6)
        self.secret_key = secrets.token_urlsafe(30)
        self.port: int | None = None
        self.console_port: int | None = None
        self.workdir: Path | None = None
        self.log_path: Path | None = None
        self.startup_seconds: float | None = None
        self._proc: subprocess.Popen[bytes] | None = None

    @property
    def endpoint(self) -> str:
        """host:port, the form minio.Minio and boto's endpoint (with a scheme) expect."""
        if self.port is None or self._proc is None:
            raise RuntimeError("MinioServer is not started")
        return f"127.0.0.1:{self.port}"

    @property
    def url(self) -> str:
        return f"http://{self.endpoint}"

    def client(self, *, access_key: str | None = None, secret_key: str | None = None) -> Minio:
        """A client for this server; pass other keys to get a client the server must refuse."""
        from minio import Minio

        return Minio(
            self.endpoint,
            access_key=self.access_key if access_key is None else access_key,
            secret_key=self.secret_key if secret_key is None else secret_key,
            secure=False,
        )

    def _describe(self) -> str:
        return f"minio up at {self.endpoint} (log: {self.log_path})"

    # -- internals ---------------------------------------------------------------------------

    def _check_installation(self) -> Path:
        binary = self.binary or minio_binary()
        if not (binary.is_file() and os.access(binary, os.X_OK)):
            raise PeerUnavailable(
                f"MinIO binary not found at {binary}. Run `{ENSURE_SH} minio` first."
            )
        if self.binary is None and "TICKRUN_MINIO_BIN" not in os.environ:
            stamp = binary.with_name("minio.version")
            want = versions()["MINIO_VERSION"]
            have = stamp.read_text(encoding="utf-8").split()[0] if stamp.is_file() else "(unknown)"
            if have != want:
                raise PeerUnavailable(
                    f"MinIO at {binary} is {have}, pinned is {want}. Run `{ENSURE_SH} minio`."
                )
        return binary

    def _start_once(self, binary: Path) -> None:
        self.workdir = Path(tempfile.mkdtemp(prefix="tickrun-minio-"))
        self.port, self.console_port = free_port(), free_port()
        while self.console_port == self.port:
            self.console_port = free_port()
        self.log_path = self.workdir / "minio.log"
        env = {
            **os.environ,
            "MINIO_ROOT_USER": self.access_key,
            "MINIO_ROOT_PASSWORD": self.secret_key,
            # No web console, no phoning home for updates: neither is reachable nor wanted.
            "MINIO_BROWSER": "off",
            "MINIO_UPDATE": "off",
        }
        argv = [
            str(binary),
            "server",
            "--address",
            self.endpoint_for(self.port),
            "--console-address",
            self.endpoint_for(self.console_port),
            # Otherwise MinIO creates ~/.minio/certs in the real home directory.
            "--certs-dir",
            str(self.workdir / "certs"),
            str(self.workdir / "data"),
        ]
        with self.log_path.open("ab") as log:
            self._proc = spawn(argv, log=log, env=env)
        atexit.register(self.stop)
        self._wait_ready()

    @staticmethod
    def endpoint_for(port: int) -> str:
        return f"127.0.0.1:{port}"

    def _wait_ready(self) -> None:
        assert self._proc is not None and self.log_path is not None
        deadline = time.monotonic() + self.startup_timeout
        last_error = "no answer yet"
        # live = process serves HTTP; ready = object layer initialised, so the first bucket
        # call cannot get "Server not initialized" (503).
        for probe in ("live", "ready"):
            while True:
                if self._proc.poll() is not None:
                    raise PeerUnavailable(
                        f"minio exited with {self._proc.returncode} during startup; "
                        f"log tail ({self.log_path}):\n{tail(self.log_path)}"
                    )
                try:
                    with _NO_PROXY.open(f"{self.url}/minio/health/{probe}", timeout=2) as resp:
                        if resp.status == 200:
                            break
                        last_error = f"HTTP {resp.status}"
                except (urllib.error.URLError, OSError) as exc:
                    last_error = repr(exc)
                if time.monotonic() > deadline:
                    raise PeerUnavailable(
                        f"minio at {self.endpoint} not {probe} after {self.startup_timeout:.0f}s "
                        f"({last_error}); log tail ({self.log_path}):\n{tail(self.log_path)}"
                    )
                time.sleep(0.1)
