"""Per-function Python environments for the process platform, cached by lock and commands.

A function without requirements or build commands runs on the controller's own interpreter
(nothing to build, fastest start). Otherwise a venv with ``--system-site-packages`` (so tickrun
and its dependencies come from the host) gets the locked wheels and runs ``build.commands`` in
its ``build/`` folder, which replicas see as ``TICKRUN_BUILD_DIR``.
"""

from __future__ import annotations

import fcntl
import os
import shutil
import site
import sys
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

from tickrun.functions import settings
from tickrun.functions.errors import BuildError

from .hashing import sha256_bytes
from .wheels import LogFn, Wheelhouse, clean_pip_env, run_logged

READY = ".tickrun-ready"
LAYOUT = "2"  # bump when the way an environment is made changes: cached ones are then remade


@dataclass(frozen=True)
class ProcessEnv:
    python: str
    build_dir: str | None
    key: str
    cached: bool = True


def _see_host_packages(root: Path) -> None:
    """Let the function's venv import tickrun and its dependencies from the controller's.

    ``--system-site-packages`` only reaches the *base* interpreter's packages; when the
    controller itself runs from a venv (the usual install), tickrun lives there instead. A
    ``.pth`` hook adds those folders after the function's own, so locked requirements win,
    and ``addsitedir`` processes their ``.pth`` files (editable installs need that).
    """
    own = [p for p in site.getsitepackages() if Path(p).is_dir()]
    if sys.prefix == sys.base_prefix or not own:
        return
    for target in (root / "lib").glob("python*/site-packages"):
        # One statement, no comprehension: site exec()s the line with separate locals.
        line = f"import site; list(map(site.addsitedir, {own!r}))\n"
        (target / "zz-tickrun-host.pth").write_text(line)


def env_key(wheelhouse: Wheelhouse, commands: Sequence[str]) -> str:
    # sys.prefix: the .pth hook names the controller's own site folders.
    return sha256_bytes(LAYOUT, sys.version, sys.prefix, wheelhouse.lock_hash, *commands)[:24]


def ensure_env(
    wheelhouse: Wheelhouse,
    commands: Sequence[str],
    cache: Path,
    *,
    log: LogFn,
    timeout_s: float = 1800,
) -> ProcessEnv:
    has_reqs = wheelhouse.lock.stat().st_size > 0
    if not has_reqs and not commands:
        log("environment: the controller's interpreter (no requirements, no build commands)")
        return ProcessEnv(sys.executable, None, "system")
    key = env_key(wheelhouse, commands)
    root = cache / key
    python = root / "bin" / "python"
    cache.mkdir(parents=True, exist_ok=True)
    # One builder per environment: a second deploy of the same lock waits, then reuses it.
    with (cache / f"{key}.lock").open("w") as lock_file:
        fcntl.flock(lock_file, fcntl.LOCK_EX)
        if (root / READY).exists():
            log(f"environment: cached {key}")
            return ProcessEnv(str(python), str(root / "build"), key)
        if root.exists():
            shutil.rmtree(root)  # a half-built environment from an interrupted build
        log(f"environment: creating venv {key}")
        venv_cmd = [sys.executable, "-m", "venv", "--system-site-packages"]
        if not commands:
            venv_cmd.append("--without-pip")  # the host's pip installs into it (--python)
        run_logged([*venv_cmd, str(root)], log, timeout_s=300, what="creating the environment")
        _see_host_packages(root)
        if has_reqs:
            log("environment: installing locked requirements")
            run_logged(
                [
                    sys.executable,
                    "-m",
                    "pip",
                    "--python",
                    str(python),
                    "install",
                    "--no-index",
                    "--find-links",
                    str(wheelhouse.wheels),
                    "--require-hashes",
                    "-r",
                    str(wheelhouse.lock),
                    "--progress-bar",
                    "off",
                ],
                log,
                env=clean_pip_env(),
                timeout_s=timeout_s,
                what="installing requirements",
            )
        build_dir = root / "build"
        build_dir.mkdir()
        env = clean_pip_env() | {
            "VIRTUAL_ENV": str(root),
            settings.BUILD_DIR.name: str(build_dir),
            "PATH": f"{root}/bin:{os.environ.get('PATH', '/usr/bin:/bin')}",
        }
        for i, cmd in enumerate(commands, 1):
            log(f"build command {i}/{len(commands)}: {cmd}")
            try:
                run_logged(
                    ["/bin/sh", "-c", cmd],
                    log,
                    env=env,
                    cwd=build_dir,
                    timeout_s=timeout_s,
                    what=f"build command {i}",
                )
            except BuildError:
                shutil.rmtree(root, ignore_errors=True)
                raise
        (root / READY).write_text("ok\n")
        log(f"environment: ready {key}")
        return ProcessEnv(str(python), str(build_dir), key, cached=False)
