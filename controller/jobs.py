"""Tracked jobs (``tickrun run … --runner subprocess|container``) away from the calling process.

The launcher of the ``subprocess`` and ``container`` job runners (entry points
``tickrun.job_runners``): it takes a :class:`~tickrun.functions.runs.plugins.JobRequest`, the
same data from the CLI and from the hub, and runs it through the local runner in another process
(:func:`tickrun.functions.runs.job.main`, given the request as JSON): a fresh Python interpreter
(``subprocess``) or ``python`` inside an OCI image built by the controller's
:class:`~tickrun.controller.builder.Builder` (``container``). The run's uid is the request's; the
tracking settings go by environment; the job's output is inherited (streamed); the launcher waits
and returns the job's status.

Where the run is recorded inside a container:

- ``TICKRUN_CONTROLLER_URL`` set: the controller's REST run DB (host networking reaches loopback;
  the token goes by name, ``-e TICKRUN_TOKEN``, so it is never on a command line);
- otherwise the embedded default: the SQLite file's folder and a local artifact folder are
  bind-mounted at the same absolute paths, so the host reads the run exactly as it would a local
  one. Other ``TICKRUN_DB_URL`` values and ``s3://`` artifact paths are passed as they are.

Ctrl-C / SIGTERM of the parent sends SIGINT to the job (the runner marks the run aborted), kills
it after a grace period, and marks the run aborted itself if the job could not.
"""

from __future__ import annotations

import contextlib
import logging
import os
import re
import signal
import subprocess
import sys
import time
from pathlib import Path
from types import FrameType
from typing import TYPE_CHECKING, Any

from tickrun.functions.errors import BadRequestError, NotFoundError, PlatformError, TickrunError
from tickrun.functions.launch import parent_env, python_command
from tickrun.functions.runs.db import RunDB, open_db
from tickrun.functions.runs.job import main as job_main
from tickrun.functions.runs.plugins import JobRequest
from tickrun.functions.runs.records import RunBatch, RunState
from tickrun.functions.runs.settings import TrackingSettings
from tickrun.functions.settings import (
    ARTIFACT_PATH,
    CONTROLLER_URL,
    DB_URL,
    FLUSH_INTERVAL_S,
    HOME,
    S3_ACCESS_KEY,
    S3_CA_BUNDLE,
    S3_ENDPOINT,
    S3_REGION,
    S3_SECRET_KEY,
    S3_SECURE,
    STALE_AFTER_S,
    STATE_DIR,
    TOKEN,
)

if TYPE_CHECKING:
    from .settings import Settings

logger = logging.getLogger(__name__)

RUNNERS = ("subprocess", "container")
APP_FUNCTION = "/opt/tickrun/function"
GRACE_S = 10.0
# Passed into a container by name only (values never appear on a command line or in logs).
PASS_BY_NAME = (
    TOKEN.name,
    S3_ENDPOINT.name,
    S3_ACCESS_KEY.name,
    S3_SECRET_KEY.name,
    S3_SECURE.name,
    S3_REGION.name,
    S3_CA_BUNDLE.name,
    "AWS_ACCESS_KEY_ID",
    "AWS_SECRET_ACCESS_KEY",
)


def _job_command(request: JobRequest, python: str) -> list[str]:
    """The job process: the local runner on ``request``. SIGINT and SIGTERM both interrupt it (the
    runner then marks the run aborted); on Linux it gets SIGTERM when its parent dies (kill -9 of
    the CLI): no orphaned jobs."""
    return python_command(
        job_main,
        request.model_dump_json(),
        python=python,
        on_parent_death=signal.SIGTERM,
        interrupt=True,
    )


def _say(msg: str) -> None:
    print(f"tickrun: {msg}", file=sys.stderr, flush=True)


def is_local_path(value: str) -> bool:
    return "://" not in value


def tracking_env(settings: TrackingSettings, artifact_path: str) -> dict[str, str]:
    """The variables that make a child track into the same run DB and artifact store."""
    env = {
        HOME.name: str(settings.home.resolve()),
        ARTIFACT_PATH.name: artifact_path,
        FLUSH_INTERVAL_S.name: str(settings.flush_interval_s),
        STALE_AFTER_S.name: str(settings.stale_after_s),
    }
    if settings.controller_url:
        env[CONTROLLER_URL.name] = settings.controller_url
    else:
        env[DB_URL.name] = settings.db_url
    return env


def sqlite_path(db_url: str) -> Path | None:
    """The file of a ``sqlite:///…`` URL, None for other databases or in-memory SQLite."""
    m = re.match(r"^sqlite(\+\w+)?:///(.+)$", db_url)
    if m is None or m.group(2) in (":memory:", ""):
        return None
    return Path(m.group(2).split("?", 1)[0]).resolve()


def run_job(request: JobRequest) -> int:
    """Run ``request`` with its runner and wait; the job's exit status (0: the run completed)."""
    runner = request.runner
    if runner not in RUNNERS:
        raise BadRequestError(f"unknown job runner {runner!r}: use one of {', '.join(RUNNERS)}")
    if request.timeout_s is not None:
        raise BadRequestError(f"the {runner} runner has no timeout (the kubernetes runner does)")
    if request.requirements and runner != "container":
        raise BadRequestError(
            f"the {runner} runner builds no image for requirements: install them here"
        )
    settings = TrackingSettings.from_env()
    art = request.artifact_path or settings.artifact_path
    if is_local_path(art):
        art = str(Path(art).expanduser().resolve())
    request = request.model_copy(update={"artifact_path": art})
    env = tracking_env(settings, art)
    db = open_db(settings)
    if runner == "subprocess":
        job: _Job = _ProcessJob(request, env)
    else:
        job = _ContainerJob(request, env, settings, art)
    return _supervise(job, db, request.uid, runner)


# -- supervision -------------------------------------------------------------------------------


class _Job:
    """One job process (the interpreter, or the engine's foreground ``run`` client)."""

    proc: subprocess.Popen[bytes] | None = None

    def start(self) -> None:
        raise NotImplementedError

    def interrupt(self) -> None:
        """Ask the job to stop (SIGINT: the runner marks the run aborted)."""
        raise NotImplementedError

    def kill(self) -> None:
        raise NotImplementedError

    def _popen(self, cmd: list[str], env: dict[str, str], cwd: str | None = None) -> None:
        try:
            # Own session: a terminal's Ctrl-C reaches the parent only, which forwards it once.
            self.proc = subprocess.Popen(
                cmd, env=env, cwd=cwd, stdin=subprocess.DEVNULL, start_new_session=True
            )
        except OSError as exc:
            raise PlatformError(f"cannot start the job: {cmd[0]}: {exc.strerror}") from exc


def _supervise(job: _Job, db: RunDB, uid: str, runner: str) -> int:
    stop: list[int] = []

    def on_signal(signum: int, _frame: FrameType | None) -> None:
        if not stop:
            _say(f"{signal.Signals(signum).name}: stopping run {uid}")
            with contextlib.suppress(TickrunError, OSError):
                job.interrupt()
        stop.append(signum)

    job.start()
    assert job.proc is not None
    _say(f"run {uid} started ({runner}, pid {job.proc.pid})")
    previous: dict[int, Any] = {}
    for sig in (signal.SIGINT, signal.SIGTERM):
        with contextlib.suppress(ValueError):  # not the main thread: no forwarding
            previous[sig] = signal.signal(sig, on_signal)
    try:
        code = _wait(job, stop)
    finally:
        for signum, handler in previous.items():
            signal.signal(signum, handler)
    state = _settle(db, uid, runner, code, interrupted=bool(stop))
    if stop:
        return 128 + stop[0]
    if state is None:
        return code or 1
    return 0 if state == RunState.COMPLETED else 1


def _wait(job: _Job, stop: list[int]) -> int:
    assert job.proc is not None
    deadline: float | None = None
    while True:
        try:
            return job.proc.wait(timeout=0.2)
        except subprocess.TimeoutExpired:
            pass
        if stop and deadline is None:
            deadline = time.monotonic() + GRACE_S
        if deadline is not None and (time.monotonic() > deadline or len(stop) > 1):
            _say("the job did not stop in time; killing it")
            job.kill()
            deadline = time.monotonic() + GRACE_S  # kill() again if even that hangs


def _settle(db: RunDB, uid: str, runner: str, code: int, *, interrupted: bool) -> RunState | None:
    """The run's final state; a run the job left unfinished is marked aborted here."""
    try:
        run = db.get_run(uid)
    except NotFoundError:
        _say(f"the job exited ({code}) before run {uid} was recorded")
        return None
    if run.state.terminal:
        return run.state
    why = "interrupted" if interrupted else f"the {runner} job exited ({code}) mid-run"
    db.apply(RunBatch(runs=[RunDB.aborted(run, why)]))
    logger.warning("run marked aborted", extra={"uid": uid, "reason": why})
    _say(f"run {uid} aborted: {why}")
    return RunState.ABORTED


# -- process -----------------------------------------------------------------------------------


class _ProcessJob(_Job):
    def __init__(self, request: JobRequest, tracking: dict[str, str]) -> None:
        self.cmd = _job_command(request, sys.executable)
        self.env = {
            **os.environ,
            **tracking,
            "PYTHONUNBUFFERED": "1",
            **parent_env(),
        }

    def start(self) -> None:
        self._popen(self.cmd, self.env)

    def _signal(self, sig: int) -> None:
        if self.proc is not None and self.proc.poll() is None:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(self.proc.pid, sig)

    def interrupt(self) -> None:
        self._signal(signal.SIGINT)

    def kill(self) -> None:
        self._signal(signal.SIGKILL)


# -- container ---------------------------------------------------------------------------------


def container_name(uid: str) -> str:
    return f"tickrun-job-{uid[:16]}"


class _ContainerJob(_Job):
    def __init__(
        self,
        request: JobRequest,
        tracking: dict[str, str],
        settings: TrackingSettings,
        artifact_path: str,
    ) -> None:
        from .builder.engine import Engine
        from .settings import Settings

        uid = request.uid
        self.file, handler = job_file(request.target, "container")
        self.extra_requirements = tuple(request.requirements)
        self.handler = handler
        self.controller = Settings.from_env()
        engine = self.controller.engine()
        if engine is None:
            raise PlatformError("no container engine found: install podman (or docker)")
        self.engine = Engine(engine)
        if not self.engine.can_run:
            raise PlatformError(f"{engine} cannot run containers; install podman")
        self.uid = uid
        self.name = container_name(uid)
        mounts: set[Path] = set()
        db_file = None if settings.controller_url else sqlite_path(settings.db_url)
        if db_file is not None:
            db_file.parent.mkdir(parents=True, exist_ok=True)
            mounts.add(db_file.parent)
        if is_local_path(artifact_path):
            Path(artifact_path).mkdir(parents=True, exist_ok=True)
            mounts.add(Path(artifact_path))
        local_inputs: dict[str, str] = {}
        for key, value in request.inputs.items():
            p = Path(value).expanduser()
            if is_local_path(value) and p.exists():
                local_inputs[key] = str(p.resolve())
                mounts.add(p.resolve())
            else:
                local_inputs[key] = value
        self.mounts = _outermost(mounts)
        self.tracking = tracking
        # The code is in the image; local inputs are mounted at their own paths.
        self.request = request.model_copy(
            update={"target": f"{APP_FUNCTION}/{self.file.name}:{handler}", "inputs": local_inputs}
        )
        self.image = ""

    def build(self) -> str:
        artifact = build_job_image(
            self.file, self.controller, "container", ("SQLAlchemy",), self.extra_requirements
        )
        return str(artifact["image"])

    def start(self) -> None:
        self.image = self.build()
        env = {**self.engine.env(), **{k: v for k, v in os.environ.items() if k in PASS_BY_NAME}}
        cmd = [
            self.engine.binary(),
            "run",
            "--rm",
            "--init",
            "--network",
            "host",
            "--name",
            self.name,
            "--label",
            f"tickrun.run={self.uid}",
            # Not the host's name: the host's stale-run check must not test the
            # container's pids against its own.
            "--hostname",
            self.name,
            "--stop-signal",
            "SIGINT",
            # A job writes results into the invoking user's own store through the mounts below,
            # so it runs as that user, not as the image's unprivileged replica user.
            "--user",
            f"{os.getuid()}:{os.getgid()}",
            "-e",
            "PYTHONUNBUFFERED=1",
        ]
        for key, value in self.tracking.items():
            cmd += ["-e", f"{key}={value}"]
        for key in PASS_BY_NAME:
            if key in env:
                cmd += ["-e", key]
        for mount in self.mounts:
            cmd += ["-v", f"{mount}:{mount}"]
        cmd += [self.image, *_job_command(self.request, "python")]
        with contextlib.suppress(PlatformError):
            self.engine.run("rm", "-f", self.name, check=False)
        self._popen(cmd, env)

    def interrupt(self) -> None:
        self.engine.run("kill", "--signal", "INT", self.name, check=False, timeout_s=30)

    def kill(self) -> None:
        with contextlib.suppress(PlatformError):
            self.engine.run("kill", "--signal", "KILL", self.name, check=False, timeout_s=30)
            self.engine.run("rm", "-f", self.name, check=False, timeout_s=60)
        if self.proc is not None and self.proc.poll() is None:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(self.proc.pid, signal.SIGKILL)


def job_file(target: str, runner: str) -> tuple[Path, str]:
    """The file and handler of a ``FILE.py:handler`` target, the only kind built into an image."""
    path, sep, handler = target.rpartition(":")
    if not sep or not path.endswith(".py") or target.startswith("hub://"):
        raise BadRequestError(
            f"--runner {runner} runs FILE.py:handler targets, not {target!r}; use "
            "--runner subprocess or --local for module:handler and hub:// targets"
        )
    file = Path(path).expanduser().resolve()
    if not file.is_file():
        raise BadRequestError(f"{path} is not a file")
    return file, handler


def build_job_image(
    file: Path,
    controller: Settings,
    platform: str,
    requirements: tuple[str, ...],
    extra: tuple[str, ...] = (),
) -> dict[str, Any]:
    """Build the image of the job in ``file``'s folder with the controller's builder: the
    folder's ``function.yaml`` requirements, the request's ``extra`` ones (a hub item's), and
    ``requirements`` (what the run tracker needs in there, pinned to this machine's versions);
    the build's artifact (``image``, maybe ``image_digest``)."""
    from tickrun.functions.source import resolve_function

    from .builder import Builder

    code_dir, spec = resolve_function(file)
    if controller.builds_dir.resolve().is_relative_to(code_dir):
        raise BadRequestError(
            f"the build folder {controller.builds_dir} is inside the job's folder "
            f"{code_dir}, which is copied into the image: set {STATE_DIR.name} elsewhere"
        )
    reqs = list(dict.fromkeys([*spec.spec.requirements, *extra]))
    for dist in requirements:
        if not any(r.lower().startswith(dist.lower()) for r in reqs):
            reqs.append(_pinned(dist))
    job_spec = spec.model_copy(
        update={
            "metadata": spec.metadata.model_copy(
                update={"name": f"job-{spec.name}"[:63].rstrip("-")}
            ),
            "spec": spec.spec.model_copy(update={"requirements": reqs}),
        }
    )
    result = Builder(controller).build(
        job_spec, code_dir, platform, lambda line: _say(f"build: {line}"), code_hash=""
    )
    return dict(result.artifact)


def _pinned(dist: str) -> str:
    from importlib.metadata import PackageNotFoundError, version

    try:
        return f"{dist}=={version(dist)}"
    except PackageNotFoundError:
        return dist


def _outermost(paths: set[Path]) -> list[Path]:
    """Mount points without those already inside another one."""
    out: list[Path] = []
    for p in sorted(paths, key=lambda q: len(q.parts)):
        if not any(p.is_relative_to(o) for o in out):
            out.append(p)
    return out


__all__ = [
    "APP_FUNCTION",
    "RUNNERS",
    "build_job_image",
    "container_name",
    "job_file",
    "run_job",
    "sqlite_path",
    "tracking_env",
]
