"""The command lines of the Python processes tickrun starts for itself, and their parent-death.

A child is ``python -c BOOT FLAGS MODULE FUNCTION ARGS…``: :func:`python_command` builds it
from the function itself (the caller imports what the child runs, so the layer contract sees the
dependency), and the boot code here sets the child up before calling the function:

- on Linux the kernel sends the child ``on_parent_death`` when its parent dies (kill -9 of the
  CLI, of a replica's supervisor): no orphans. A child started with :func:`parent_env` in its
  environment also exits when the parent died before that took effect;
- with ``interrupt=True`` SIGINT and SIGTERM both raise KeyboardInterrupt (a job's runner then
  marks its run aborted), even when the parent was started with SIGINT ignored (a background job
  of a non-interactive shell passes that on).

The function gets ``ARGS`` as ``sys.argv[1:]``; an int it returns is the exit status.

Every Python process tickrun starts for itself is built here: a job (``controller/jobs.py``,
dies with its launcher), a replica (:func:`tickrun.functions.replica.replica_command`, for the
process and container platforms and a hub item's local deployment; never dies with its parent,
since replicas outlive the controller) and a processor's worker (the supervisor; SIGKILL when
the supervisor dies).
"""

from __future__ import annotations

import importlib
import os
import signal
import sys
from collections.abc import Callable
from types import FrameType

from . import settings

PARENT_PID_ENV = settings.PARENT_PID.name
BOOT = "from tickrun.functions.launch import _boot\n_boot()\n"


def python_command(
    entry: Callable[[], object],
    *args: str,
    python: str = sys.executable,
    on_parent_death: signal.Signals | None = signal.SIGTERM,
    interrupt: bool = False,
) -> list[str]:
    """``[python, "-c", BOOT, …]`` that runs ``entry()`` (a module-level function)."""
    module, name = entry.__module__, entry.__qualname__
    if not module or "." in name or "<" in name:
        raise ValueError(f"{module}.{name} is not a module-level function another process can run")
    flags = f"{int(on_parent_death or 0)}:{int(interrupt)}"
    return [python, "-c", BOOT, flags, module, name, *args]


def parent_env() -> dict[str, str]:
    """Variables that let a child tell its parent died before it could ask to die with it."""
    return {PARENT_PID_ENV: str(os.getpid())}


def die_with_parent(signum: int, parent_pid: int | None = None) -> bool:
    """Ask the kernel for ``signum`` when the parent dies (Linux); False when the parent
    ``parent_pid`` is already gone (the child was re-parented before the request)."""
    if sys.platform != "linux":
        return True
    import ctypes

    try:
        ctypes.CDLL(None, use_errno=True).prctl(1, signum)  # PR_SET_PDEATHSIG
    except (OSError, AttributeError):
        return True
    return parent_pid is None or os.getppid() == parent_pid


def _interrupt(_signum: int, _frame: FrameType | None) -> None:
    raise KeyboardInterrupt


def _boot() -> None:
    # sys.argv of `python -c BOOT FLAGS MODULE FUNCTION ARGS…` is ['-c', FLAGS, MODULE, …].
    _c, flags, module, name, *args = sys.argv
    death, interrupt = (int(f) for f in flags.split(":"))
    if interrupt:
        signal.signal(signal.SIGINT, _interrupt)
        signal.signal(signal.SIGTERM, _interrupt)
    parent = os.environ.pop(PARENT_PID_ENV, "")
    if death and not die_with_parent(death, int(parent) if parent.isdigit() else None):
        raise SystemExit(130)
    sys.argv = [f"{module}:{name}", *args]
    # The module was named by the parent from a function it imported (python_command).
    result = getattr(importlib.import_module(module), name)()
    if isinstance(result, int):
        raise SystemExit(result)


__all__ = ["BOOT", "PARENT_PID_ENV", "die_with_parent", "parent_env", "python_command"]
