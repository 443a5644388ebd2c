"""A real CNCF distribution registry (``registry serve``) on loopback, for tests.

The binary is built from the Go module proxy by ``deploy/peers/ensure.sh registry``; this module
only runs it: filesystem storage in a temp dir, htpasswd auth (bcrypt, one random user), plain
HTTP on a free 127.0.0.1 port, and an access log the tests count requests in::

    server = RegistryServer().start()
    server.host, server.username, server.password
    server.manifest_digest("tickrun/scorer", "0123abcd")   # None when the tag is not there
    server.requests("PUT", "/manifests/")                 # how many manifest pushes it served
    server.stop()
"""

from __future__ import annotations

import atexit
import base64
import logging
import os
import re
import secrets
import subprocess
import tempfile
import time
import urllib.error
import urllib.request
from pathlib import Path

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

logger = logging.getLogger(__name__)

# Loopback requests must not go through an http_proxy from the environment.
_NO_PROXY = urllib.request.build_opener(urllib.request.ProxyHandler({}))
MANIFEST_TYPES = ", ".join(
    (
        "application/vnd.oci.image.manifest.v1+json",
        "application/vnd.oci.image.index.v1+json",
        "application/vnd.docker.distribution.manifest.v2+json",
        "application/vnd.docker.distribution.manifest.list.v2+json",
    )
)
# The access log is Apache combined format: `... "PUT /v2/x/manifests/t HTTP/1.1" 201 ...`.
_REQUEST = re.compile(r'"([A-Z]+) (/v2/[^ "]*) HTTP/[0-9.]+" (\d{3})')


def registry_binary() -> Path:
    """The binary ensure.sh built (or $TICKRUN_REGISTRY_BIN)."""
    override = os.environ.get("TICKRUN_REGISTRY_BIN")
    if override:
        return Path(override)
    version = versions().get("REGISTRY_VERSION")
    if not version:
        raise PeerUnavailable("REGISTRY_VERSION is missing from deploy/peers/versions.env")
    return peers_cache() / f"registry-{version}" / "bin" / "registry"


def htpasswd_line(user: str, password: str) -> str:
    """One htpasswd entry; the registry accepts bcrypt only."""
    try:
        import bcrypt
    except ImportError as exc:
        raise PeerUnavailable(
            "the python package bcrypt is missing (it writes the registry's htpasswd): "
            "pip install -e '.[dev]'"
        ) from exc
    hashed = bcrypt.hashpw(password.encode(), bcrypt.gensalt(rounds=5)).decode()
    return f"{user}:{hashed}\n"


class RegistryServer(PeerProcess):
    """One registry with a random user and password. The constructor does no I/O; ``start()``
    returns once ``/v2/`` answers (401 without credentials, 200 with them)."""

    peer_name = "registry"
    stop_grace_s = 10.0

    def __init__(self, *, binary: Path | None = None, startup_timeout: float = 30.0) -> None:
        self.binary = binary
        self.startup_timeout = startup_timeout
        self.username = "tickrun-" + secrets.token_hex(4)
        self.password = secrets.token_urlsafe(24)
        self.port: int | None = None
        self.workdir: Path | None = None
        self.log_path: Path | None = None
        self.startup_seconds: float | None = None
        self._proc: subprocess.Popen[bytes] | None = None

    @property
    def host(self) -> str:
        if self.port is None or self._proc is None:
            raise RuntimeError("RegistryServer is not started")
        return f"127.0.0.1:{self.port}"

    @property
    def url(self) -> str:
        return f"http://{self.host}"

    def auth_header(self, user: str | None = None, password: str | None = None) -> str:
        pair = f"{user or self.username}:{self.password if password is None else password}"
        return "Basic " + base64.b64encode(pair.encode()).decode()

    def get(
        self, path: str, *, auth: str | None = None, method: str = "GET"
    ) -> tuple[int, dict[str, str]]:
        """(status, headers) of a request to the registry; ``auth`` None: anonymous."""
        headers = {"Accept": MANIFEST_TYPES}
        if auth is not None:
            headers["Authorization"] = auth
        req = urllib.request.Request(self.url + path, method=method, headers=headers)
        try:
            with _NO_PROXY.open(req, timeout=10) as resp:
                return resp.status, dict(resp.headers.items())
        except urllib.error.HTTPError as exc:
            return exc.code, dict(exc.headers.items())

    def manifest_digest(self, repository: str, tag: str) -> str | None:
        status, headers = self.get(
            f"/v2/{repository}/manifests/{tag}", auth=self.auth_header(), method="HEAD"
        )
        if status == 404:
            return None
        assert status == 200, f"HEAD manifest {repository}:{tag}: HTTP {status}"
        return headers["Docker-Content-Digest"]

    def requests(self, method: str, path_part: str) -> int:
        """How many ``method`` requests whose path contains ``path_part`` the registry served
        (from its access log)."""
        assert self.log_path is not None
        text = self.log_path.read_text(encoding="utf-8", errors="replace")
        return sum(1 for m, p, _status in _REQUEST.findall(text) if m == method and path_part in p)

    def _describe(self) -> str:
        return f"registry up at {self.host} (log: {self.log_path})"

    # -- internals ---------------------------------------------------------------------------

    def _check_installation(self) -> Path:
        binary = self.binary or registry_binary()
        if not (binary.is_file() and os.access(binary, os.X_OK)):
            raise PeerUnavailable(
                f"registry binary not found at {binary}. Run `{ENSURE_SH} registry` first."
            )
        return binary

    def _start_once(self, binary: Path) -> None:
        self.workdir = Path(tempfile.mkdtemp(prefix="tickrun-registry-"))
        self.port = free_port()
        self.log_path = self.workdir / "registry.log"
        htpasswd = self.workdir / "htpasswd"
        htpasswd.write_text(htpasswd_line(self.username, self.password), encoding="utf-8")
        config = self.workdir / "config.yml"
        # JSON is YAML: no quoting surprises in paths.
        config.write_text(
            "{"
            '"version": "0.1",'
            '"log": {"level": "info", "formatter": "text", "accesslog": {"disabled": false}},'
            f'"storage": {{"filesystem": {{"rootdirectory": "{self.workdir / "data"}"}},'
            '"delete": {"enabled": true}},'
            f'"http": {{"addr": "127.0.0.1:{self.port}", "secret": "{secrets.token_hex(16)}"}},'
            f'"auth": {{"htpasswd": {{"realm": "tickrun-test", "path": "{htpasswd}"}}}}'
            "}\n",
            encoding="utf-8",
        )
        env = {k: v for k, v in os.environ.items() if not k.startswith("REGISTRY_")}
        with self.log_path.open("ab") as log:
            self._proc = spawn([str(binary), "serve", str(config)], log=log, env=env)
        atexit.register(self.stop)
        self._wait_ready()

    def _wait_ready(self) -> None:
        assert self._proc is not None and self.log_path is not None
        deadline = time.monotonic() + self.startup_timeout
        last = "no answer yet"
        while True:
            if self._proc.poll() is not None:
                log = tail(self.log_path)
                if "address already in use" in log:
                    raise PeerUnavailable(f"registry: address already in use\n{log}")
                raise PeerUnavailable(
                    f"registry exited with {self._proc.returncode} during startup; "
                    f"log tail ({self.log_path}):\n{log}"
                )
            try:
                status, _ = self.get("/v2/", auth=self.auth_header())
                if status == 200:
                    return
                last = f"HTTP {status}"
            except (urllib.error.URLError, OSError) as exc:
                last = repr(exc)
            if time.monotonic() > deadline:
                raise PeerUnavailable(
                    f"registry at {self.host} not ready after {self.startup_timeout:.0f}s "
                    f"({last}); log tail ({self.log_path}):\n{tail(self.log_path)}"
                )
            time.sleep(0.1)
