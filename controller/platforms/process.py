"""The process platform: each replica is a local ``python -m tickrun serve`` process group.

Replicas run in their own session so they outlive a controller crash; the controller finds them
again by pid plus the kernel's start time for that pid (a recycled pid never matches).
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import signal
import subprocess
import time
from collections import deque
from collections.abc import Sequence
from pathlib import Path

from tickrun.functions.errors import PlatformError

from .base import (
    AdoptResult,
    Launched,
    LaunchSpec,
    Liveness,
    Platform,
    ReplicaRef,
    serve_command,
)

# Secrets and per-worker settings of the controller that must never reach user code.
_SCRUB = ("TICKRUN_TOKEN", "TICKRUN_WORKER_CONFIG", "TICKRUN_DB_URL")
REPLICA_ENV = "TICKRUN_REPLICA_ID"
MAX_LOG_BYTES = 16 * 1024 * 1024
CONTROLLER_ENV = "TICKRUN_CONTROLLER_ID"


def proc_start_time(pid: int) -> int | None:
    """The pid's start time (clock ticks since boot), or None if no such live process."""
    try:
        raw = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return None
    fields = raw[raw.rfind(")") + 2 :].split()
    if fields[0] in ("Z", "X"):  # zombie / dead: gone for our purposes
        return None
    return int(fields[19])


def _environ(pid: int) -> dict[str, str]:
    try:
        raw = Path(f"/proc/{pid}/environ").read_bytes()
    except OSError:
        return {}
    out = {}
    for item in raw.split(b"\0"):
        k, sep, v = item.partition(b"=")
        if sep and k in (REPLICA_ENV.encode(), CONTROLLER_ENV.encode()):
            out[k.decode()] = v.decode(errors="replace")
    return out


class ProcessPlatform(Platform):
    name = "process"

    def __init__(self, controller_id: str = "") -> None:
        self.controller_id = controller_id
        self._children: dict[str, subprocess.Popen[bytes]] = {}

    async def start(self, launch: LaunchSpec) -> Launched:
        # Popen of a small command line is a fork+exec: microseconds, fine on the loop.
        return self._spawn(launch)

    def _spawn(self, launch: LaunchSpec) -> Launched:
        art = launch.artifact
        code_dir = art["code_dir"]
        env = {k: v for k, v in os.environ.items() if k not in _SCRUB}
        env.update(launch.env)
        env.update(
            {
                "PYTHONUNBUFFERED": "1",
                "PORT": str(launch.port),
                REPLICA_ENV: launch.replica_id,
                CONTROLLER_ENV: self.controller_id,
                "TICKRUN_FUNCTION": launch.function,
            }
        )
        if art.get("build_dir"):
            venv = str(Path(art["python"]).parent.parent)
            env["VIRTUAL_ENV"] = venv
            env["PATH"] = f"{venv}/bin:{env.get('PATH', '/usr/bin:/bin')}"
            env["TICKRUN_BUILD_DIR"] = art["build_dir"]
        cmd = serve_command(art["python"], code_dir, launch.port, launch.workers)
        log_path = Path(launch.log_path or os.devnull)
        if launch.log_path:
            log_path.parent.mkdir(parents=True, exist_ok=True)
            # One old generation is kept; a crash-looping replica cannot fill the disk.
            with contextlib.suppress(OSError):
                if log_path.stat().st_size > MAX_LOG_BYTES:
                    log_path.replace(log_path.with_suffix(".log.1"))
        with log_path.open("ab") as log:
            log.write(
                f"--- replica {launch.replica_id} starting on port {launch.port} at "
                f"{time.strftime('%Y-%m-%dT%H:%M:%SZ', time.gmtime())} ---\n".encode()
            )
            log.flush()
            try:
                proc = subprocess.Popen(
                    cmd,
                    cwd=code_dir,
                    env=env,
                    stdin=subprocess.DEVNULL,
                    stdout=log,
                    stderr=subprocess.STDOUT,
                    start_new_session=True,
                )
            except OSError as exc:
                raise PlatformError(
                    f"cannot start a replica of {launch.function}: {exc.strerror}"
                ) from exc
        self._children[launch.replica_id] = proc
        return Launched(pid=proc.pid, pid_start=proc_start_time(proc.pid), log_path=launch.log_path)

    def _liveness(self, ref: ReplicaRef) -> Liveness:
        child = self._children.get(ref.id)
        if child is not None and child.pid == ref.pid:
            code = child.poll()
            if code is None:
                return Liveness(True)
            return Liveness(
                False,
                code,
                f"exited with code {code}" if code >= 0 else f"killed by signal {-code}",
            )
        if ref.pid is None:
            return Liveness(False, None, "never started")
        start = proc_start_time(ref.pid)
        if start is not None and start == ref.pid_start:
            return Liveness(True)
        # Adopted (not our child): the exit code went to init.
        return Liveness(
            False, None, "exited (exit code unknown: started before a controller restart)"
        )

    async def inspect(self, refs: Sequence[ReplicaRef]) -> dict[str, Liveness]:
        return {ref.id: self._liveness(ref) for ref in refs}

    async def stop(self, ref: ReplicaRef, timeout_s: float) -> None:
        child = self._children.pop(ref.id, None)
        if ref.pid is None or not self._liveness_raw(ref, child):
            if child is not None:
                child.poll()
            return
        pid = ref.pid
        self._signal_group(pid, signal.SIGTERM)
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            if not self._liveness_raw(ref, child):
                break
            await asyncio.sleep(0.05)
        else:
            self._signal_group(pid, signal.SIGKILL)
        # Workers share the group; make sure none is left behind after the supervisor exits.
        self._signal_group(pid, signal.SIGKILL)
        for _ in range(100):
            if not self._liveness_raw(ref, child):
                break
            await asyncio.sleep(0.02)

    def _liveness_raw(self, ref: ReplicaRef, child: subprocess.Popen[bytes] | None) -> bool:
        if child is not None:
            return child.poll() is None
        return ref.pid is not None and proc_start_time(ref.pid) == ref.pid_start

    @staticmethod
    def _signal_group(pid: int, sig: signal.Signals) -> None:
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.killpg(pid, sig)

    async def adopt(self, refs: Sequence[ReplicaRef], controller_id: str) -> AdoptResult:
        return await asyncio.to_thread(self._adopt, refs, controller_id)

    def _adopt(self, refs: Sequence[ReplicaRef], controller_id: str) -> AdoptResult:
        result = AdoptResult()
        known: dict[str, ReplicaRef] = {r.id: r for r in refs}
        for ref in refs:
            if ref.pid is not None and proc_start_time(ref.pid) == ref.pid_start:
                result.alive.add(ref.id)
        # Replicas this controller started but did not get to record (killed in between), or
        # recorded under an older pid: stop them, or they would serve beside their replacement.
        for entry in Path("/proc").iterdir():
            if not entry.name.isdigit():
                continue
            pid = int(entry.name)
            env = _environ(pid)
            if env.get(CONTROLLER_ENV) != controller_id or REPLICA_ENV not in env:
                continue
            try:
                if os.getpgid(pid) != pid:
                    continue  # only the group leader (the replica's supervisor) matters
            except ProcessLookupError:
                continue
            rid = env[REPLICA_ENV]
            recorded = known.get(rid)
            if recorded is not None and recorded.pid == pid and rid in result.alive:
                continue
            self._signal_group(pid, signal.SIGKILL)
            result.removed_orphans.append(f"{rid} (pid {pid})")
        return result

    async def logs(self, ref: ReplicaRef, tail: int) -> list[str]:
        if not ref.log_path:
            return []
        return await asyncio.to_thread(_tail, ref.log_path, tail)


def _tail(path: str, lines: int) -> list[str]:
    try:
        with open(path, encoding="utf-8", errors="replace") as f:
            return [line.rstrip("\n") for line in deque(f, maxlen=lines)]
    except OSError:
        return []
