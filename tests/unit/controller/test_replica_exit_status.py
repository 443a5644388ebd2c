"""Why a replica stopped, as a structured reason: the processor's exit code and its status line,
kept by the process platform's log writer (never read back out of the log messages)."""

from __future__ import annotations

import asyncio
import json
import subprocess
import sys
import time
from pathlib import Path

from tests.support.processes import free_port
from tickrun.controller.platforms.base import LaunchSpec, Liveness, ReplicaRef
from tickrun.controller.platforms.logwriter import StatusCapture
from tickrun.controller.platforms.process import LOG_WRITER, ProcessPlatform, status_path
from tickrun.controller.settings import Settings
from tickrun.functions.errors import (
    HandlerLoadError,
    InitContextError,
    TickrunError,
    TriggerConfigError,
)
from tickrun.functions.processor.exitcodes import (
    STATUS_PREFIX,
    ExitCode,
    ExitStatus,
    Reason,
)

PREFIX = STATUS_PREFIX.encode()


def _status(code: int = 78, reason: str = "handler-load-error", detail: str = "d") -> bytes:
    return PREFIX + json.dumps({"code": code, "reason": reason, "detail": detail}).encode()


# --- the status line ------------------------------------------------------------------------


def test_exit_status_round_trips_and_rejects_what_is_not_one() -> None:
    status = ExitStatus.of(HandlerLoadError("syntax error in main.py, line 3:\n invalid"))
    assert status.code == ExitCode.CONFIG and status.reason is Reason.HANDLER_LOAD
    assert status.detail == "syntax error in main.py, line 3: invalid"  # one line
    line = status.line()
    assert line.startswith(STATUS_PREFIX) and line.endswith("\n") and line.count("\n") == 1
    assert ExitStatus.parse(line) == status
    assert ExitStatus.parse("not json") is None
    assert ExitStatus.parse(_status(reason="made-up")) is None  # only the known reasons
    assert ExitStatus.parse(_status(detail="x" * 1000)) is None  # bounded
    assert ExitStatus.parse(PREFIX + b'{"code": 78, "reason": "spec-error", "x": 1}') is None
    lines = ["log", _status(1, "start-error").decode(), "log", line.rstrip("\n"), "log"]
    assert ExitStatus.last_in(lines) == status


def test_reasons_follow_the_error_tree() -> None:
    assert Reason.of(InitContextError("boom")) is Reason.INIT_CONTEXT  # before its parent
    assert Reason.of(HandlerLoadError("x")) is Reason.HANDLER_LOAD
    assert Reason.of(TriggerConfigError("x")) is Reason.TRIGGER
    assert Reason.of(TickrunError("x")) is Reason.START


def test_exit_codes_by_name() -> None:
    assert (int(ExitCode.CONFIG), int(ExitCode.RESTART)) == (78, 75)  # a contract: no drift
    assert ExitCode.describe(78) == "config"
    assert ExitCode.describe(0) == "ok"
    assert ExitCode.describe(-9) == "signal 9"
    assert ExitCode.describe(137) == "signal 9"  # a container's or bwrap's report of a kill
    assert ExitCode.describe(3) == "exit 3"
    assert ExitCode.describe(None) == "unknown"


# --- the log writer keeps it ----------------------------------------------------------------


def test_capture_keeps_the_last_status_line_across_chunk_boundaries(tmp_path: Path) -> None:
    out = tmp_path / "r.status"
    capture = StatusCapture(str(out), PREFIX, limit=256)
    stream = b"plain\n" + _status(1, "start-error") + b"\nmore\n" + _status() + b"\ntail\n"
    for i in range(0, len(stream), 7):  # the prefix and the record split over chunks
        capture.feed(stream[i : i + 7])
    capture.close()
    assert ExitStatus.parse(out.read_bytes()) == ExitStatus(
        code=78, reason=Reason.HANDLER_LOAD, detail="d"
    )


def test_capture_ignores_overlong_and_mid_line_prefixes(tmp_path: Path) -> None:
    out = tmp_path / "r.status"
    capture = StatusCapture(str(out), PREFIX, limit=128)
    capture.feed(_status(detail="y" * 200) + b"\n")  # over the limit in one chunk
    capture.feed(_status()[:20])
    capture.feed(b"z" * 200)  # a line that grows past the limit over chunks
    capture.feed(b"\nsaid " + _status() + b"\n")  # not at a line's start
    capture.close()
    assert not out.exists()
    capture.feed(_status(75, "start-error"))  # the last line, without its newline
    capture.close()
    status = ExitStatus.parse(out.read_bytes())
    assert status is not None and status.code == 75


def test_log_writer_script_writes_log_and_status(tmp_path: Path) -> None:
    log, status = tmp_path / "r.log", tmp_path / "r.status"
    data = b"".join(b'{"level": "info", "message": "%d"}\n' % i for i in range(2000))
    data += _status(detail="handler module 'main' imports 'nope'") + b"\n"
    cmd = [sys.executable, "-I", "-S", LOG_WRITER, str(log), str(1 << 20)]
    subprocess.run([*cmd, str(status), STATUS_PREFIX], input=data, check=True, timeout=30)
    assert log.read_bytes() == data  # the log is untouched
    parsed = ExitStatus.parse(status.read_bytes())
    assert parsed is not None and parsed.detail == "handler module 'main' imports 'nope'"
    assert status.stat().st_mode & 0o777 == 0o600


# --- the platform reports it ----------------------------------------------------------------


def test_why_stopped_keeps_a_status_only_when_it_agrees(tmp_path: Path) -> None:
    platform = ProcessPlatform("ctl-test")
    log = tmp_path / "r.log"
    Path(status_path(str(log))).write_bytes(_status(78) + b"\n")
    ref = ReplicaRef("r", "f", None, None, None, str(log))

    def why(live: Liveness) -> tuple[int | None, ExitStatus | None]:
        return asyncio.run(platform.why_stopped(ref, live))

    code, status = why(Liveness(False, 78, "exited with code 78"))
    assert code == 78 and status is not None and status.reason is Reason.HANDLER_LOAD
    code, status = why(Liveness(False, -9, "killed by signal 9"))
    assert code == -9 and status is None  # a line printed before a kill is not the reason
    code, status = why(Liveness(False, None, "exit code unknown"))  # adopted
    assert code == 78 and status is not None
    gone = ReplicaRef("r", "f", None, None, None, str(tmp_path / "other.log"))
    assert asyncio.run(platform.why_stopped(gone, Liveness(False, 1))) == (1, None)


BROKEN = """
print('tickrun-status: {"code": 78, "reason": "spec-error", "detail": "a handler lies"}')
import nope_not_installed
"""


def _launch(tmp_path: Path, replica: str) -> tuple[ProcessPlatform, LaunchSpec]:
    settings = Settings(state_dir=tmp_path / "state", cache_dir=tmp_path / "cache")
    code = tmp_path / "state" / "code" / "broken" / "h1"
    code.mkdir(parents=True, exist_ok=True)
    (code / "main.py").write_text(BROKEN)
    spec = {"metadata": {"name": "broken"}, "spec": {"handler": "main:handler"}}
    (code / "function.yaml").write_text(json.dumps(spec))
    launch = LaunchSpec(
        function="broken",
        replica_id=replica,
        revision="rev",
        port=free_port(),
        workers=2,
        env={},
        artifact={"python": sys.executable, "build_dir": None, "code_dir": str(code)},
        log_path=str(settings.logs_dir / "broken" / f"{replica}.log"),
    )
    return ProcessPlatform("ctl-test", settings=settings), launch


def _stopped(platform: ProcessPlatform, ref: ReplicaRef) -> Liveness:
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        live = asyncio.run(platform.inspect([ref]))[ref.id]
        if not live.running:
            return live
        time.sleep(0.1)
    raise AssertionError("the replica did not stop")


def test_a_replica_that_cannot_start_reports_why(tmp_path: Path) -> None:
    platform, launch = _launch(tmp_path, "r1")
    launched = asyncio.run(platform.start(launch))
    ref = ReplicaRef("r1", "broken", launched.pid, launched.pid_start, None, launch.log_path)
    live = _stopped(platform, ref)
    code, status = asyncio.run(platform.why_stopped(ref, live))
    assert code == ExitCode.CONFIG
    assert status is not None and status.reason is Reason.HANDLER_LOAD  # the handler's is not
    assert "nope_not_installed" in status.detail and "Traceback" not in status.detail
    # A new controller (the replica is not its child) learns the code from the status too.
    adopted = ProcessPlatform("ctl-test", settings=platform.settings)
    live = asyncio.run(adopted.inspect([ref]))["r1"]
    assert live.exit_code is None
    assert asyncio.run(adopted.why_stopped(ref, live))[0] == ExitCode.CONFIG


def test_a_restart_does_not_report_the_previous_runs_status(tmp_path: Path) -> None:
    platform, launch = _launch(tmp_path, "r2")
    Path(status_path(str(launch.log_path))).parent.mkdir(parents=True)
    Path(status_path(str(launch.log_path))).write_bytes(_status(1, "start-error") + b"\n")
    launched = asyncio.run(platform.start(launch))
    assert not Path(status_path(str(launch.log_path))).exists()
    ref = ReplicaRef("r2", "broken", launched.pid, launched.pid_start, None, launch.log_path)
    _stopped(platform, ref)
    status = asyncio.run(platform.exit_status(ref))
    assert status is not None and status.reason is Reason.HANDLER_LOAD
