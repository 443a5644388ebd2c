"""Resolving requirements into a wheelhouse and a hash-pinned lock, on the host, cached.

``pip download --only-binary=:all:`` runs on the controller's host (containers here cannot reach
an index, and offline hash-pinned installs are what production wants). The result is cached by
the requirement list, so an unchanged function never touches the network again.
"""

from __future__ import annotations

import contextlib
import os
import re
import shutil
import signal
import subprocess
import sys
import tempfile
import threading
from collections.abc import Callable, Sequence
from contextvars import ContextVar
from dataclasses import dataclass
from pathlib import Path
from typing import ParamSpec, TypeVar

from tickrun.functions.errors import BuildError

from .hashing import sha256_bytes, sha256_file

LogFn = Callable[[str], None]
P = ParamSpec("P")
R = TypeVar("R")
# Build subprocesses running now, so a stopping controller can end them instead of waiting.
ACTIVE: set[subprocess.Popen[str]] = set()


def _kill(proc: subprocess.Popen[str]) -> None:
    # Each build subprocess leads its own process group: a build command's children (the
    # `sleep` of `sh -c`, pip's workers) hold the output pipe too and must end with it.
    if proc.poll() is not None:
        return
    try:
        os.killpg(proc.pid, signal.SIGKILL)
    except OSError:
        with contextlib.suppress(OSError):
            proc.kill()


def kill_active() -> None:
    for proc in list(ACTIVE):
        _kill(proc)


class BuildScope:
    """The subprocesses of one build, so that build alone can be stopped (a deleted function).

    :meth:`run` runs a blocking build step with this scope current; :meth:`cancel` (from any
    thread) kills the subprocess running now and refuses to start another one.
    """

    def __init__(self) -> None:
        self.cancelled = False
        self._procs: set[subprocess.Popen[str]] = set()
        self._lock = threading.Lock()

    def run(self, fn: Callable[P, R], /, *args: P.args, **kwargs: P.kwargs) -> R:
        token = _SCOPE.set(self)
        try:
            return fn(*args, **kwargs)
        finally:
            _SCOPE.reset(token)

    def cancel(self) -> None:
        with self._lock:
            self.cancelled = True
            procs = list(self._procs)
        for proc in procs:
            _kill(proc)


_SCOPE: ContextVar[BuildScope | None] = ContextVar("tickrun_build_scope", default=None)


_WHEEL = re.compile(r"^(?P<name>[^-]+)-(?P<version>[^-]+)(-\d[^-]*)?-[^-]+-[^-]+-[^-]+\.whl$")

# glibc of the base images tickrun targets (Debian bookworm: 2.36); newer wheels would not load.
IMAGE_GLIBC_MINOR = 36


@dataclass(frozen=True)
class Wheelhouse:
    """Wheels plus ``requirements.lock`` (name==version --hash=sha256:…) in one folder."""

    path: Path
    lock_hash: str

    @property
    def wheels(self) -> Path:
        return self.path / "wheels"

    @property
    def lock(self) -> Path:
        return self.path / "requirements.lock"


def _platform_args(target: str) -> list[str]:
    if target == "host":
        return []
    plats = ["manylinux2014_x86_64", "manylinux2010_x86_64", "manylinux1_x86_64"]
    plats += [f"manylinux_2_{m}_x86_64" for m in range(17, IMAGE_GLIBC_MINOR + 1)]
    args = ["--python-version", "3.11", "--implementation", "cp", "--abi", "cp311"]
    for p in plats:
        args += ["--platform", p]
    return args


def clean_pip_env() -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("PIP_")}
    env["PIP_CONFIG_FILE"] = os.devnull  # this host's pip config adds local indexes
    env["PIP_DISABLE_PIP_VERSION_CHECK"] = "1"
    return env


def _write_lock(wheels: Path, lock: Path) -> None:
    lines = []
    for whl in sorted(wheels.glob("*.whl")):
        m = _WHEEL.match(whl.name)
        if m is None:
            raise BuildError(f"unexpected file in wheelhouse: {whl.name}")
        name = m.group("name").replace("_", "-").lower()
        lines.append(f"{name}=={m.group('version')} --hash=sha256:{sha256_file(whl)}")
    lock.write_text("\n".join(lines) + ("\n" if lines else ""), encoding="utf-8")


def cached_wheelhouse(
    cache: Path, key: str, fill: Callable[[Path], None]
) -> tuple[Wheelhouse, bool]:
    """The wheelhouse ``cache/key`` and whether it was there already. When missing,
    ``fill(wheels_dir)`` puts its wheels in a temp folder that is then renamed into place, so a
    reader never sees half a wheelhouse; of two builds racing, the first rename wins and the
    other's work is dropped."""
    final = cache / key
    if not (final / "requirements.lock").is_file():
        cache.mkdir(parents=True, exist_ok=True)
        tmp = Path(tempfile.mkdtemp(prefix=f".{key}-", dir=cache))
        try:
            (tmp / "wheels").mkdir()
            fill(tmp / "wheels")
            _write_lock(tmp / "wheels", tmp / "requirements.lock")
            try:
                os.replace(tmp, final)
            except OSError:  # another build made the same wheelhouse first
                shutil.rmtree(tmp, ignore_errors=True)
        except BaseException:
            shutil.rmtree(tmp, ignore_errors=True)
            raise
        cached = False
    else:
        cached = True
    text = (final / "requirements.lock").read_bytes()
    return Wheelhouse(final, sha256_bytes(text)), cached


def resolve(
    requirements: Sequence[str], cache: Path, *, target: str, log: LogFn, timeout_s: float = 900
) -> Wheelhouse:
    """Wheelhouse for ``requirements`` built for ``target`` ("host" or "image"), cached."""
    key = sha256_bytes(target, *sorted(r.strip() for r in requirements))[:24]

    def download(wheels: Path) -> None:
        if not requirements:
            return
        log(f"requirements: resolving {len(requirements)} on the host: " + ", ".join(requirements))
        cmd = [
            sys.executable,
            "-m",
            "pip",
            "download",
            "--only-binary=:all:",
            "--progress-bar",
            "off",
            "-d",
            str(wheels),
            *_platform_args(target),
            *requirements,
        ]
        _run_logged(
            cmd, log, env=clean_pip_env(), timeout_s=timeout_s, what="resolving requirements"
        )

    house, cached = cached_wheelhouse(cache, key, download)
    text = house.lock.read_bytes()
    if cached:
        log(f"requirements: {len(requirements)} cached (lock {house.lock_hash[:12]})")
    else:
        log(f"requirements: locked {text.count(b'==')} wheels")
    return house


def _run_logged(
    cmd: Sequence[str],
    log: LogFn,
    *,
    env: dict[str, str] | None = None,
    cwd: Path | None = None,
    timeout_s: float,
    what: str,
) -> None:
    """Run ``cmd``, passing each output line to ``log``; BuildError with the tail on failure."""
    tail: list[str] = []
    scope = _SCOPE.get()
    # Under the scope's lock, so a cancel either sees this process or stops it being started.
    with scope._lock if scope is not None else contextlib.nullcontext():
        if scope is not None and scope.cancelled:
            raise BuildError(f"{what} not started: the build was cancelled")
        try:
            proc = subprocess.Popen(
                cmd,
                stdout=subprocess.PIPE,
                stderr=subprocess.STDOUT,
                env=env,
                cwd=cwd,
                text=True,
                bufsize=1,
                start_new_session=True,
            )
        except OSError as exc:
            raise BuildError(f"{what} failed: cannot run {cmd[0]}: {exc.strerror}") from exc
        ACTIVE.add(proc)
        if scope is not None:
            scope._procs.add(proc)
    assert proc.stdout is not None
    try:
        for line in proc.stdout:
            line = line.rstrip()
            log(line)
            tail = [*tail[-19:], line]
        code = proc.wait(timeout=timeout_s)
    except subprocess.TimeoutExpired as exc:
        _kill(proc)
        raise BuildError(f"{what} timed out after {timeout_s:.0f} s") from exc
    finally:
        ACTIVE.discard(proc)
        if scope is not None:
            with scope._lock:
                scope._procs.discard(proc)
        proc.stdout.close()
    if scope is not None and scope.cancelled:
        raise BuildError(f"{what} stopped: the build was cancelled")
    if code != 0:
        last = next((t for t in reversed(tail) if t.strip()), "")
        raise BuildError(f"{what} failed (exit {code}): {last[:300]}", detail=tail)


run_logged = _run_logged
