"""`make demo`'s controller part fails with a message, never hangs and never leaves processes."""

from __future__ import annotations

import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import pytest

from tickrun.controller import demo
from tickrun.controller.client import Invocation
from tickrun.functions.errors import PlatformError

pytestmark = pytest.mark.timeout(60)


def _gone(pid: int) -> bool:
    try:
        with open(f"/proc/{pid}/stat") as f:
            return f.read().rsplit(")", 1)[1].split()[0] == "Z"
    except FileNotFoundError:
        return True


def _sleeper(pid_file: Path | None = None) -> list[str]:
    write = f"open({str(pid_file)!r}, 'w').write(str(os.getpid())); " if pid_file else ""
    return [sys.executable, "-c", f"import os, time; {write}time.sleep(60)"]


def test_a_controller_that_never_gets_ready_is_stopped(tmp_path: Path) -> None:
    pid_file = tmp_path / "pid"
    t0 = time.monotonic()
    with pytest.raises(PlatformError, match="did not start within 1 s"):
        demo._start_controller(tmp_path / "state", "t", timeout_s=1.0, command=_sleeper(pid_file))
    assert time.monotonic() - t0 < 10
    assert _gone(int(pid_file.read_text()))


def test_a_controller_that_exits_at_once_is_reported(tmp_path: Path) -> None:
    with pytest.raises(PlatformError, match=r"exited \(code 3\) before it was ready"):
        demo._start_controller(
            tmp_path / "state", "t", command=[sys.executable, "-c", "raise SystemExit(3)"]
        )


def _fake_controller(monkeypatch: pytest.MonkeyPatch, url: str) -> list[subprocess.Popen[bytes]]:
    procs: list[subprocess.Popen[bytes]] = []

    def start(state: Path, token: str, **_: Any) -> tuple[subprocess.Popen[bytes], str]:
        proc = subprocess.Popen(_sleeper(), stdout=subprocess.PIPE)
        procs.append(proc)
        return proc, url

    monkeypatch.setattr(demo, "_start_controller", start)
    return procs


def test_an_unreachable_controller_is_still_stopped(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    procs = _fake_controller(monkeypatch, "http://127.0.0.1:1")  # nothing listens there
    assert demo.main(("hello",)) == 1
    [proc] = procs
    assert proc.poll() is not None  # terminated, although list_functions() failed
    err = capsys.readouterr().err
    assert "tickrun demo: error: cannot reach the controller" in err


class StuckScaleClient:
    """A controller whose hello never gets its second replica."""

    def __init__(self, url: str, token: str | None, *, timeout_s: float = 60.0) -> None:
        self.deleted: list[str] = []

    def deploy(self, spec: dict[str, Any], code_dir: Path | None, **_: Any) -> dict[str, Any]:
        return {"function": {"version": 1}}

    def wait_ready(self, name: str, **_: Any) -> dict[str, Any]:
        return self.get_function(name)

    def get_function(self, name: str) -> dict[str, Any]:
        return {
            "name": name,
            "url": f"/fn/{name}/",
            "port": None,
            "state": "ready",
            "platform": "process",
            "replicas": {"ready": 1, "desired": 2},
        }

    def invoke(self, name: str, **_: Any) -> Invocation:
        return Invocation(200, {}, b"{}")

    def export(self, name: str) -> dict[str, Any]:
        return {"metadata": {"name": name}, "spec": {}}

    def list_functions(self) -> list[dict[str, Any]]:
        return [self.get_function("hello")]

    def delete_function(self, name: str) -> None:
        self.deleted.append(name)


def test_the_scale_wait_is_bounded(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    procs = _fake_controller(monkeypatch, "http://127.0.0.1:1")
    monkeypatch.setattr(demo, "ControllerClient", StuckScaleClient)
    monkeypatch.setattr(demo, "SCALE_TIMEOUT_S", 0.5, raising=False)
    t0 = time.monotonic()
    assert demo.main(("hello",)) == 1
    assert time.monotonic() - t0 < 20
    assert procs[0].poll() is not None
    assert "did not scale to 2 ready replicas within 0 s" in capsys.readouterr().err
