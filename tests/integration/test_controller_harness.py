"""A real controller process for integration tests (no tests here: shared fixtures/helpers).

``ControllerProc`` runs ``python -m tickrun controller start --port 0`` with a temp state dir and
a known token; ``functions`` writes Nuclio-style function folders.
"""

from __future__ import annotations

import contextlib
import json
import os
import select
import signal
import subprocess
import sys
import textwrap
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from tickrun.controller.client import ControllerClient
from tickrun.functions.processes import pid_alive

TOKEN = "test-token-" + "x" * 20

HANDLER = textwrap.dedent("""
    import os
    {imports}
    VERSION = "{version}"
    DEPS = {deps}


    def init_context(context):
        path = os.path.join(os.environ["TICKRUN_BUILD_DIR"], "marker.txt")
        with open(path) as f:
            context.user_data.marker = f.read().strip()


    def handler(context, event):
        return {{
            "version": VERSION,
            "marker": context.user_data.marker,
            "flavour": os.environ.get("FLAVOUR"),
            "pid": os.getpid(),
            "replica": os.environ.get("TICKRUN_REPLICA_ID"),
            "request_id": {{k.lower(): v for k, v in event.headers.items()}}.get("x-request-id"),
            "path": event.path,
            "deps": {{name: getattr(mod, "__version__", "?") for name, mod in DEPS.items()}},
        }}
""")


def write_function(
    root: Path,
    name: str,
    *,
    version: str = "1",
    replicas: int = 1,
    extra_spec: dict[str, Any] | None = None,
    requirements: dict[str, str] | None = None,
) -> Path:
    """A Nuclio-style function folder: function.yaml with build.commands, env and a handler."""
    folder = root / name
    folder.mkdir(parents=True, exist_ok=True)
    spec: dict[str, Any] = {
        "apiVersion": "nuclio.io/v1",
        "kind": "NuclioFunction",
        "metadata": {"name": name},
        "spec": {
            "handler": "app:handler",
            "runtime": "python:3.11",
            "replicas": replicas,
            "env": [{"name": "FLAVOUR", "value": "vanilla"}],
            "build": {"commands": ["echo built-by-commands > marker.txt"]},
            **(extra_spec or {}),
        },
    }
    reqs = requirements or {}  # module name → requirement
    if reqs:
        spec["spec"]["requirements"] = list(reqs.values())
    imports = "".join(f"import {mod}\n" for mod in reqs)
    deps = "{" + ", ".join(f"{mod!r}: {mod}" for mod in reqs) + "}"
    (folder / "function.yaml").write_text(json.dumps(spec))
    (folder / "app.py").write_text(HANDLER.format(version=version, imports=imports, deps=deps))
    return folder


def spec_of(folder: Path) -> dict[str, Any]:
    data: dict[str, Any] = json.loads((folder / "function.yaml").read_text())
    return data


class ControllerProc:
    def __init__(self, state_dir: Path, env: dict[str, str]) -> None:
        self.state_dir = state_dir
        self.env = dict(env)
        self.env["TICKRUN_TOKEN"] = TOKEN
        self.env.pop("TICKRUN_CONTROLLER_URL", None)
        self.proc: subprocess.Popen[bytes] | None = None
        self.preexec_fn: Callable[[], None] | None = None  # e.g. a lower fd limit
        self.url = ""
        self.log_path = state_dir.parent / f"{state_dir.name}-controller.log"

    def start(self, timeout_s: float = 60.0) -> ControllerProc:
        self.state_dir.mkdir(parents=True, exist_ok=True)
        log = self.log_path.open("ab")
        self.proc = subprocess.Popen(
            [
                sys.executable,
                "-m",
                "tickrun",
                "controller",
                "start",
                "--port",
                "0",
                "--state-dir",
                str(self.state_dir),
            ],
            stdout=subprocess.PIPE,
            stderr=log,
            env=self.env,
            preexec_fn=self.preexec_fn,
        )
        assert self.proc.stdout is not None
        deadline = time.monotonic() + timeout_s
        buf = b""
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise AssertionError(
                    f"controller exited {self.proc.returncode}; log: "
                    f"{self.log_path.read_text()[-3000:]}"
                )
            ready, _, _ = select.select([self.proc.stdout], [], [], 0.2)
            if ready:
                buf += os.read(self.proc.stdout.fileno(), 4096)
                for line in buf.splitlines():
                    if line.startswith(b"{") and b'"ready"' in line:
                        self.url = json.loads(line)["url"]
                        return self
        raise AssertionError("controller did not become ready")

    @property
    def client(self) -> ControllerClient:
        return ControllerClient(self.url, TOKEN, timeout_s=120)

    def kill9(self) -> None:
        assert self.proc is not None
        self.proc.send_signal(signal.SIGKILL)
        self.proc.wait(timeout=10)

    def stop(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(timeout=30)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()


def cleanup(ctl: ControllerProc) -> None:
    """Delete every function (stops replicas) and stop the controller."""
    try:
        if ctl.proc is not None and ctl.proc.poll() is None:
            for fn in ctl.client.list_functions():
                ctl.client.delete_function(fn["name"])
    finally:
        ctl.stop()


@contextlib.contextmanager
def tracking_controller(tmp_path: Path) -> Iterator[ControllerProc]:
    """A controller whose runs track in its own database (nothing inherited from the caller's
    TICKRUN_* run DB, controller or artifact settings), stopped with everything it ran."""
    env = dict(os.environ)
    for var in ("TICKRUN_DB_URL", "TICKRUN_CONTROLLER_URL", "TICKRUN_ARTIFACT_PATH"):
        env.pop(var, None)
    env["TICKRUN_HOME"] = str(tmp_path / "home")
    env["TICKRUN_FLUSH_INTERVAL_S"] = "0.1"
    proc = ControllerProc(tmp_path / "state", env).start()
    try:
        yield proc
    finally:
        cleanup(proc)


def wait_for(predicate: Callable[[], Any], timeout_s: float = 60.0, what: str = "condition") -> Any:
    deadline = time.monotonic() + timeout_s
    last: Any = None
    while time.monotonic() < deadline:
        last = predicate()
        if last:
            return last
        time.sleep(0.1)
    raise AssertionError(f"timed out waiting for {what} (last: {last!r})")


def replica_pids_of(controller_id_env: str, value: str) -> list[int]:
    """Live processes whose environment has ``controller_id_env=value``."""
    out = []
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            environ = (entry / "environ").read_bytes()
        except OSError:
            continue
        wanted = f"{controller_id_env}={value}".encode()
        if wanted in environ.split(b"\0") and pid_alive(int(entry.name)):
            out.append(int(entry.name))
    return out


@pytest.fixture
def controller(tmp_path: Path) -> Iterator[ControllerProc]:
    ctl = ControllerProc(tmp_path / "state", dict(os.environ)).start()
    try:
        yield ctl
    finally:
        cleanup(ctl)
