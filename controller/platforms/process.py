"""The process platform: each replica is a local processor process group, sandboxed.

Replicas run in their own session so they outlive a controller crash; the controller finds them
again by pid plus the kernel's start time for that pid (a recycled pid never matches). The
tracked pid is bubblewrap's (``sandbox.py``), which carries the replica's environment; the
replica's output goes through a pipe to a log writer that rotates its file while it runs
(``logwriter.py``).
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import os
import signal
import subprocess
import sys
import time
from collections import deque
from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

from tickrun.functions.errors import PlatformError
from tickrun.functions.processor.exitcodes import STATUS_PREFIX, ExitStatus
from tickrun.functions.replica import replica_command
from tickrun.functions.settings import (
    ARTIFACT_PATH,
    BUILD_DIR,
    CONTROLLER_ID,
    DATA_DIR,
    FUNCTION,
    GATEWAY_URL,
    REPLICA_ID,
)

from ..builder.hashing import private
from .base import (
    AdoptResult,
    Launched,
    LaunchSpec,
    Liveness,
    Platform,
    ReplicaRef,
)
from .sandbox import Isolation, bwrap_command, give_to, probe, replica_env, sandbox_child

if TYPE_CHECKING:
    from ..settings import Settings

logger = logging.getLogger(__name__)

REPLICA_ENV = REPLICA_ID.name
MAX_LOG_BYTES = 16 * 1024 * 1024
CONTROLLER_ENV = CONTROLLER_ID.name
LOG_WRITER = str(Path(__file__).with_name("logwriter.py"))


def status_path(log_path: str) -> str:
    """Where the log writer keeps a replica's exit status (beside its log, outside its sandbox)."""
    return str(Path(log_path).with_suffix(".status"))


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


def _pgid(pid: int) -> int | None:
    try:
        raw = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return None
    return int(raw[raw.rfind(")") + 2 :].split()[2])


def _kill_leftovers(ref: ReplicaRef) -> None:
    """SIGKILL what is left of a replica whose tracked process is gone: processes of its old
    process group that carry its replica id (the id check makes a recycled number harmless)."""
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        pid = int(entry.name)
        if _pgid(pid) == ref.pid and _environ(pid).get(REPLICA_ENV) == ref.id:
            with contextlib.suppress(ProcessLookupError, PermissionError):
                os.kill(pid, signal.SIGKILL)


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

    def __init__(self, controller_id: str = "", *, settings: Settings | None = None) -> None:
        self.controller_id = controller_id
        self.settings = settings
        self._children: dict[str, subprocess.Popen[bytes]] = {}
        self._writers: dict[str, subprocess.Popen[bytes]] = {}  # log writers, by replica
        self._isolation: Isolation | None = None

    def isolation(self) -> dict[str, Any]:
        return self.sandbox().describe()

    def sandbox(self) -> Isolation:
        """Probed once; the controller's start-up calls this, so the warning comes at start."""
        if self._isolation is None:
            self._isolation = probe()
            if self._isolation.mechanism == "none":
                logger.warning(
                    "process-platform replicas are NOT isolated from the controller "
                    "(they run as its user and can read its state dir): %s; install the "
                    "bubblewrap package",
                    self._isolation.reason,
                )
            elif self._isolation.reason:
                logger.warning("process-platform isolation is partial: %s", self._isolation.reason)
        return self._isolation

    async def start(self, launch: LaunchSpec) -> Launched:
        # A fork+exec of bwrap and of the log writer: milliseconds, fine on the loop.
        return self._spawn(launch)

    def _runtime_env(self, launch: LaunchSpec) -> dict[str, str]:
        art = launch.artifact
        runtime = {
            "PYTHONUNBUFFERED": "1",
            "PYTHONDONTWRITEBYTECODE": "1",  # the code folder is read-only in the sandbox
            "PORT": str(launch.port),
            REPLICA_ENV: launch.replica_id,
            CONTROLLER_ENV: self.controller_id,
            FUNCTION.name: launch.function,
        }
        url = self._controller_url()
        if url:
            runtime[GATEWAY_URL.name] = url  # context.platform.call_function goes here
        if art.get("build_dir"):
            venv = str(Path(art["python"]).parent.parent)
            runtime["VIRTUAL_ENV"] = venv
            path = launch.env.get("PATH") or os.environ.get("PATH") or "/usr/bin:/bin"
            runtime["PATH"] = f"{venv}/bin:{path}"
            runtime[BUILD_DIR.name] = art["build_dir"]
        store = local_artifact_store()
        if store is not None and ARTIFACT_PATH.name not in launch.env:
            # The replica's own default would be under its private HOME.
            runtime.setdefault(ARTIFACT_PATH.name, store)
        return replica_env(os.environ, launch.env, runtime)

    def _controller_url(self) -> str | None:
        if self.settings is None:
            return None
        if self.settings.port:
            # Known before the controller listens (its url file may be a previous run's).
            host = self.settings.host
            host = "127.0.0.1" if host in ("0.0.0.0", "::", "") else host
            host = f"[{host}]" if ":" in host else host
            return f"http://{host}:{self.settings.port}"
        try:
            url = json.loads(self.settings.url_file.read_text())["url"]
        except (OSError, ValueError, KeyError, TypeError):
            return None
        return url if isinstance(url, str) else None

    def _command(self, launch: LaunchSpec) -> list[str]:
        art = launch.artifact
        code_dir = art["code_dir"]
        cmd = replica_command(code_dir, launch.port, launch.workers, python=art["python"])
        private(Path(code_dir))  # code stored by an older version may still be 0644
        iso = self.sandbox()
        if iso.mechanism != "bubblewrap":
            return cmd
        if iso.uid is not None and iso.gid is not None:
            give_to(iso.uid, iso.gid, Path(code_dir))
        hidden: list[str] = []
        readable: list[str] = []
        if self.settings is not None:
            hidden = [str(self.settings.state_dir), str(self.settings.cache_dir)]
        store = local_artifact_store()
        if store is not None:
            readable.append(store)  # models and datasets a function loads (read-only)
        data = DATA_DIR.get()
        if data is not None and data.is_dir():
            readable.append(os.path.abspath(data))  # the market data's folder, when overridden
        env_root = str(Path(art["python"]).parent.parent) if art.get("build_dir") else None
        return bwrap_command(
            iso,
            cmd,
            code_dir=code_dir,
            env_root=env_root,
            hidden=hidden,
            readable=readable,
            mounts=launch.mounts,
        )

    def _spawn(self, launch: LaunchSpec) -> Launched:
        code_dir = launch.artifact["code_dir"]
        env = self._runtime_env(launch)
        cmd = self._command(launch)
        cap = self.settings.replica_log_max_bytes if self.settings else MAX_LOG_BYTES
        read_end: int | None = None
        out: int = subprocess.DEVNULL
        if launch.log_path:
            log_path = Path(launch.log_path)
            log_path.parent.mkdir(mode=0o700, parents=True, exist_ok=True)
            # One old generation is kept; a crash-looping replica cannot fill the disk.
            with contextlib.suppress(OSError):
                if log_path.stat().st_size > cap:
                    log_path.replace(log_path.with_suffix(".log.1"))
            header = (
                f"--- replica {launch.replica_id} starting on port {launch.port} at "
                f"{time.strftime('%Y-%m-%dT%H:%M:%SZ', time.gmtime())} ---\n"
            )
            fd = os.open(log_path, os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o600)
            os.fchmod(fd, 0o600)  # also a log left by an older version
            with os.fdopen(fd, "ab") as log:
                log.write(header.encode())
            # A restart reuses the replica's log: its last exit status is not this start's.
            with contextlib.suppress(FileNotFoundError):
                os.unlink(status_path(launch.log_path))
            read_end, out = os.pipe()
        try:
            # The writer first: if it cannot start, no replica is left writing into nothing.
            if read_end is not None and launch.log_path:
                writer = self._start_log_writer(read_end, launch.log_path, cap)
                self._writers[launch.replica_id] = writer
            try:
                proc = subprocess.Popen(
                    cmd,
                    cwd=code_dir,
                    env=env,
                    stdin=subprocess.DEVNULL,
                    stdout=out,
                    stderr=subprocess.STDOUT,
                    start_new_session=True,
                )
            except OSError as exc:
                raise PlatformError(
                    f"cannot start a replica of {launch.function}: {exc.strerror}"
                ) from exc
        finally:  # the writer ends at EOF: once the replica's copies of the pipe close
            for end in (read_end, out):
                if end is not None and end >= 0:
                    os.close(end)
        self._children[launch.replica_id] = proc
        return Launched(pid=proc.pid, pid_start=proc_start_time(proc.pid), log_path=launch.log_path)

    @staticmethod
    def _start_log_writer(read_end: int, log_path: str, cap: int) -> subprocess.Popen[bytes]:
        # Its own session: it outlives a controller crash, as the replica does, and ends when
        # the replica's last process closes the pipe.
        try:
            return subprocess.Popen(
                [
                    sys.executable,
                    "-I",
                    "-S",
                    LOG_WRITER,
                    log_path,
                    str(cap),
                    status_path(log_path),
                    STATUS_PREFIX,
                ],
                stdin=read_end,
                stdout=subprocess.DEVNULL,
                stderr=subprocess.DEVNULL,
                env={"PATH": "/usr/bin:/bin"},
                cwd="/",
                start_new_session=True,
            )
        except OSError as exc:
            raise PlatformError(f"cannot start the replica's log writer: {exc.strerror}") from exc

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
        self._writers.pop(ref.id, None)
        if ref.pid is None or not self._liveness_raw(ref, child):
            if child is not None:
                child.poll()
            if ref.pid is not None:
                # A bwrap killed on its own leaves its sandbox running (and its port bound).
                await asyncio.to_thread(_kill_leftovers, ref)
            return
        pid = ref.pid
        # In a sandbox, the replica's own process drains on SIGTERM; bwrap would not wait.
        inner = sandbox_child(pid)
        if inner is not None:
            with contextlib.suppress(ProcessLookupError, PermissionError):
                os.kill(inner, signal.SIGTERM)
        else:
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
            group = _pgid(pid)
            rid = env[REPLICA_ENV]
            recorded = known.get(rid)
            if recorded is not None and recorded.pid == group and rid in result.alive:
                continue  # a recorded replica's process (its supervisor, workers, sandbox)
            if group == pid:
                self._signal_group(pid, signal.SIGKILL)
            elif group is not None and proc_start_time(group) is not None:
                continue  # a member of a live group: its leader is judged on its own
            else:
                # Inside a sandbox whose bwrap is gone: not a group leader, still an orphan.
                with contextlib.suppress(ProcessLookupError, PermissionError):
                    os.kill(pid, signal.SIGKILL)
            result.removed_orphans.append(f"{rid} (pid {pid})")
        return result

    async def logs(self, ref: ReplicaRef, tail: int) -> list[str]:
        if not ref.log_path:
            return []
        return await asyncio.to_thread(_tail, ref.log_path, tail)

    async def exit_status(self, ref: ReplicaRef) -> ExitStatus | None:
        if not ref.log_path:
            return None
        writer = self._writers.pop(ref.id, None)
        # The writer may still be draining the pipe's last bytes when the exit is seen; it
        # ends at the pipe's end, moments after the replica (not our child if adopted).
        for _ in range(40):
            if writer is None or writer.poll() is not None:
                break
            await asyncio.sleep(0.025)
        raw = await asyncio.to_thread(_read_status, ref.log_path)
        return ExitStatus.parse(raw) if raw else None


def local_artifact_store() -> str | None:
    """The controller host's local artifact folder (``$TICKRUN_ARTIFACT_PATH``, default
    ``$TICKRUN_HOME/artifacts``) when it exists; an ``s3://`` store needs nothing bound."""
    try:
        from tickrun.functions.runs.settings import TrackingSettings
    except ImportError:  # tracking not installed
        return None
    try:
        path = TrackingSettings.from_env().artifact_path
    except ValueError:  # a malformed tracking setting: the controller's own runs report it
        return None
    if "://" in path and not path.startswith("file://"):
        return None
    path = os.path.abspath(path.removeprefix("file://"))
    return path if os.path.isdir(path) else None


def _read_status(log_path: str) -> bytes:
    try:
        with open(status_path(log_path), "rb") as f:
            return f.read(8192)
    except OSError:
        return b""


def _tail(path: str, lines: int) -> list[str]:
    try:
        with open(path, encoding="utf-8", errors="replace") as f:
            return [line.rstrip("\n") for line in deque(f, maxlen=lines)]
    except OSError:
        return []
