"""The process platform with real replicas: logs rotated while a replica runs, a drained stop,
and a bwrap killed on its own leaves nothing behind."""

from __future__ import annotations

import asyncio
import json
import os
import signal
import sys
import time
import urllib.request
from pathlib import Path
from typing import Any

from tests.support.processes import free_port
from tickrun.controller.platforms.base import LaunchSpec, ReplicaRef
from tickrun.controller.platforms.process import ProcessPlatform
from tickrun.controller.settings import Settings
from tickrun.functions.processes import pid_alive

CHATTY = """
def handler(context, event):
    print("x" * 10_000, flush=True)
    context.logger.info("chatty request")
    return "ok"
"""
CAP = 64 * 1024


def _function(root: Path) -> Path:
    code = root / "state" / "code" / "chatty" / "h1"
    code.mkdir(parents=True)
    (code / "main.py").write_text(CHATTY)
    spec = {"metadata": {"name": "chatty"}, "spec": {"handler": "main:handler"}}
    (code / "function.yaml").write_text(json.dumps(spec))
    return code


def _size(path: Path) -> int:
    # A rotation renames the file and opens a new one: a reader may land in between.
    for _ in range(50):
        try:
            return path.stat().st_size
        except FileNotFoundError:
            time.sleep(0.01)
    raise AssertionError(f"{path} is gone")


def _wait_ready(port: int, timeout_s: float = 60.0) -> None:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        try:
            with urllib.request.urlopen(f"http://127.0.0.1:{port}/healthz", timeout=2):
                return
        except OSError:
            time.sleep(0.1)
    raise AssertionError("the replica did not become ready")


def _chatty(tmp_path: Path, replica_id: str, **settings: Any) -> tuple[Settings, LaunchSpec]:
    """Settings for a controller in ``tmp_path`` and the launch of one ``chatty`` replica."""
    conf = Settings(state_dir=tmp_path / "state", cache_dir=tmp_path / "cache", **settings)
    launch = LaunchSpec(
        function="chatty",
        replica_id=replica_id,
        revision="rev",
        port=free_port(),
        workers=1,
        env={},
        artifact={
            "python": sys.executable,
            "build_dir": None,
            "code_dir": str(_function(tmp_path)),
        },
        log_path=str(conf.logs_dir / "chatty" / f"{replica_id}.log"),
    )
    return conf, launch


def test_a_chatty_replicas_log_is_rotated_while_it_runs(tmp_path: Path) -> None:
    settings, launch = _chatty(tmp_path, "r1", replica_log_max_bytes=CAP)
    platform = ProcessPlatform("ctl-test", settings=settings)
    log, port = Path(launch.log_path), launch.port
    code = Path(launch.artifact["code_dir"])
    launched = asyncio.run(platform.start(launch))
    ref = ReplicaRef("r1", "chatty", launched.pid, launched.pid_start, None, str(log))
    try:
        _wait_ready(port)
        sizes = []
        for _ in range(40):  # ~400 KB of output: six times the cap
            with urllib.request.urlopen(f"http://127.0.0.1:{port}/", timeout=10) as resp:
                assert resp.read() == b"ok"
            sizes.append(_size(log))
        time.sleep(0.3)
        assert max(sizes) <= CAP  # capped while running, not at the next start
        rotated = log.with_suffix(".log.1")
        assert rotated.exists() and rotated.stat().st_size <= CAP
        assert oct(log.stat().st_mode & 0o777) == "0o600"
        assert oct((code / "main.py").stat().st_mode & 0o777) == "0o600"  # was written 0644
        assert asyncio.run(platform.inspect([ref]))["r1"].running
    finally:
        asyncio.run(platform.stop(ref, 10.0))
    assert not pid_alive(launched.pid or 0)
    # SIGTERM reached the processor inside the sandbox, which drained and said so.
    time.sleep(0.3)
    assert "processor stopped" in log.read_text()


def test_a_killed_bwrap_leaves_no_replica_behind(tmp_path: Path) -> None:
    settings, launch = _chatty(tmp_path, "r2")
    platform = ProcessPlatform("ctl-test", settings=settings)
    port = launch.port
    launched = asyncio.run(platform.start(launch))
    assert launched.pid is not None
    ref = ReplicaRef("r2", "chatty", launched.pid, launched.pid_start, None, launch.log_path)
    _wait_ready(port)
    os.kill(launched.pid, signal.SIGKILL)  # the tracked pid only: the sandbox lives on
    asyncio.run(platform.stop(ref, 1.0))  # what the reconciler does before a restart
    deadline = time.monotonic() + 10
    while time.monotonic() < deadline:
        try:
            urllib.request.urlopen(f"http://127.0.0.1:{port}/healthz", timeout=1)
        except OSError:
            break
        time.sleep(0.1)
    else:
        raise AssertionError("the sandboxed replica kept serving after its bwrap was killed")


def test_rotation_goes_on_for_a_replica_adopted_by_a_new_controller(tmp_path: Path) -> None:
    settings, launch = _chatty(tmp_path, "r3", replica_log_max_bytes=CAP)
    log, port = Path(launch.log_path), launch.port
    launched = asyncio.run(ProcessPlatform("ctl-a", settings=settings).start(launch))
    ref = ReplicaRef("r3", "chatty", launched.pid, launched.pid_start, None, str(log))
    # A restarted controller: a new platform object that never started this replica.
    platform = ProcessPlatform("ctl-a", settings=settings)
    try:
        _wait_ready(port)
        assert asyncio.run(platform.adopt([ref], "ctl-a")).alive == {"r3"}
        for _ in range(20):
            with urllib.request.urlopen(f"http://127.0.0.1:{port}/", timeout=10) as resp:
                assert resp.read() == b"ok"
            assert _size(log) <= CAP
        assert log.with_suffix(".log.1").exists()
    finally:
        asyncio.run(platform.stop(ref, 10.0))
    assert not pid_alive(launched.pid or 0)
