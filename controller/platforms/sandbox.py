"""Replica isolation for the process platform: bubblewrap, plus an unprivileged uid under root.

A replica must not reach the controller's secrets: the bearer token and database in the state
dir, the controller's environment (``/proc/<pid>/environ``), other functions' code and logs.
Each replica therefore runs in its own mount, pid, ipc and uts namespaces (bubblewrap, from
Debian's ``bubblewrap`` package, works with or without root on kernels that allow unprivileged
user namespaces) and sees only read-only system folders, the interpreter and tickrun's own code,
its build environment and its own code folder; ``/tmp`` is private, the network is shared (the
replica binds its loopback port). When the controller runs as root, the replica also drops to
the unprivileged ``tickrun-fn`` user, so root-only files stay unreadable even where bound.

Where bubblewrap cannot run, replicas still get only an allowlisted environment, and the
controller says once (a WARNING, and ``isolation`` in ``/api/version``) that they are not
isolated.
"""

from __future__ import annotations

import importlib.util
import logging
import os
import pwd
import shutil
import subprocess
import sys
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from tickrun.functions.settings import (
    ARTIFACT_PATH,
    DATA_DIR,
    LOG_FORMAT,
    LOG_LEVEL,
    S3_ENDPOINT,
    S3_REGION,
    S3_SECURE,
)

logger = logging.getLogger(__name__)

REPLICA_USER = "tickrun-fn"
# Used when the user cannot be created (no useradd, read-only /etc): unprivileged, unnamed.
FALLBACK_UID = 61790
PRIVATE_HOME = "/tmp"
SYSTEM_DIRS = ("/usr", "/bin", "/sbin", "/lib", "/lib32", "/lib64", "/libx32", "/etc")
# Variables of the controller's environment a replica may see (names or NAME_ prefixes); all
# else (tokens, database URLs, cloud keys, the user's shell) stays behind.
ENV_ALLOW = ("PATH", "LANG", "LANGUAGE", "TZ", LOG_FORMAT.name, LOG_LEVEL.name)
ENV_ALLOW_PREFIX = ("LC_",)
# Where artifacts and market data are, without credentials (those reach a function through
# its spec's env, e.g. a secretKeyRef).
ENV_ARTIFACTS = (
    DATA_DIR.name,
    ARTIFACT_PATH.name,
    S3_ENDPOINT.name,
    S3_SECURE.name,
    S3_REGION.name,
)


@dataclass(frozen=True)
class Isolation:
    """How replicas are isolated on this host (probed once)."""

    mechanism: str  # "bubblewrap" | "none"
    bwrap: str | None = None
    uid: int | None = None  # set when replicas drop from root to this uid
    gid: int | None = None
    user: str | None = None
    setpriv: str | None = None
    reason: str = ""

    def describe(self) -> dict[str, Any]:
        out: dict[str, Any] = {"mechanism": self.mechanism}
        if self.uid is not None:
            out.update(user=self.user, uid=self.uid)
        if self.reason:
            out["reason"] = self.reason
        return out


def replica_env(
    source: Mapping[str, str], spec_env: Mapping[str, str], runtime: Mapping[str, str]
) -> dict[str, str]:
    """The replica's environment: allowlisted host variables, the spec's env, then the
    runtime's own variables (which a spec cannot override)."""
    env = {
        k: v
        for k, v in source.items()
        if k in ENV_ALLOW or k in ENV_ARTIFACTS or k.startswith(ENV_ALLOW_PREFIX)
    }
    env.setdefault("PATH", "/usr/local/bin:/usr/bin:/bin")
    env.update({"HOME": PRIVATE_HOME, "TMPDIR": "/tmp"})
    env.update(spec_env)
    env.update(runtime)
    return env


def probe(bwrap: str | None = None, *, euid: int | None = None) -> Isolation:
    """Find out whether bubblewrap works here and, as root, which uid replicas drop to."""
    path = bwrap or shutil.which("bwrap")
    if path is None:
        return Isolation("none", reason="bubblewrap (bwrap) is not installed")
    try:
        done = subprocess.run(
            [path, *_system_binds(), "--unshare-pid", "--", "/bin/true"],
            stdin=subprocess.DEVNULL,
            capture_output=True,
            timeout=20,
            check=False,
        )
    except (OSError, subprocess.TimeoutExpired) as exc:
        return Isolation("none", reason=f"bwrap cannot run: {exc}")
    if done.returncode != 0:
        err = done.stderr.decode(errors="replace").strip().splitlines()
        return Isolation("none", reason=f"bwrap cannot run: {(err or ['?'])[-1][:200]}")
    if (os.geteuid() if euid is None else euid) != 0:
        return Isolation("bubblewrap", bwrap=path)
    setpriv = shutil.which("setpriv")
    if setpriv is None:
        return Isolation(
            "bubblewrap", bwrap=path, reason="setpriv (util-linux) missing: replicas run as root"
        )
    uid, gid, user = _replica_user()
    return Isolation("bubblewrap", bwrap=path, uid=uid, gid=gid, user=user, setpriv=setpriv)


def _replica_user() -> tuple[int, int, str]:
    try:
        entry = pwd.getpwnam(REPLICA_USER)
    except KeyError:
        useradd = shutil.which("useradd")
        if useradd is not None:
            subprocess.run(
                [
                    useradd,
                    "--system",
                    "--user-group",
                    "--no-create-home",
                    "--home-dir",
                    "/nonexistent",
                    "--shell",
                    "/usr/sbin/nologin",
                    REPLICA_USER,
                ],
                capture_output=True,
                timeout=30,
                check=False,
            )
        try:
            entry = pwd.getpwnam(REPLICA_USER)
        except KeyError:
            return FALLBACK_UID, FALLBACK_UID, str(FALLBACK_UID)
    return entry.pw_uid, entry.pw_gid, REPLICA_USER


def _system_binds() -> list[str]:
    out: list[str] = []
    for d in SYSTEM_DIRS:
        out += ["--ro-bind-try", d, d]
    return [*out, "--proc", "/proc", "--dev", "/dev", "--perms", "1777", "--tmpfs", "/tmp"]


def runtime_paths() -> list[str]:
    """Folders the interpreter and tickrun are loaded from (read-only in the sandbox)."""
    paths = {sys.prefix, sys.base_prefix, sys.exec_prefix, sys.base_exec_prefix}
    paths.add(str(Path(os.path.realpath(sys.executable)).parent.parent))
    # Not the working directory (``python -m`` puts it on sys.path): it may be anything.
    cwd = os.getcwd()
    paths.update(p for p in sys.path if p and os.path.isabs(p) and p != cwd)
    # An editable install maps tickrun and each sub-package to a folder of the source tree.
    names = {"tickrun"} | {m for m in sys.modules if m.count(".") == 1 and m.startswith("tickrun.")}
    for name, mod in list(sys.modules.items()):
        mapping = getattr(mod, "MAPPING", None)
        if name.startswith("__editable__") and isinstance(mapping, dict):
            paths.update(str(v) for v in mapping.values())
    for name in names:
        spec = importlib.util.find_spec(name)
        if spec is not None and spec.submodule_search_locations:
            paths.update(spec.submodule_search_locations)
    # A path entry such as $HOME (PYTHONPATH=~) would bring the home's keys along.
    home = str(Path.home())
    return sorted(p for p in paths if os.path.exists(p) and not _under(home, [p]))


def _under(path: str, roots: Iterable[str]) -> bool:
    return any(path == r or path.startswith(r.rstrip("/") + "/") for r in roots)


def bwrap_command(
    isolation: Isolation,
    cmd: list[str],
    *,
    code_dir: str,
    env_root: str | None,
    hidden: Iterable[str],
    readable: Iterable[str] = (),
    mounts: Iterable[str] = (),
) -> list[str]:
    """``cmd`` wrapped in bubblewrap. ``hidden`` folders (the state and cache dirs) are covered
    by an empty tmpfs wherever a bound folder contains them; the replica's own code, build
    environment and ``mounts`` (model folders under the state dir, ``bindings.py``) are bound
    after that, so they stay visible (read-only)."""
    assert isolation.bwrap is not None
    plan = _Mounts([isolation.bwrap, *_system_binds()], [(d, "bind") for d in SYSTEM_DIRS])
    plan.mounts.append(("/tmp", "tmpfs"))
    home = str(Path.home())
    # Data folders, but never one holding the whole home or root (its keys, its history).
    extra = [p for p in readable if os.path.isdir(p) and not _under(home, [p])]
    bound = runtime_paths() + extra
    for p in bound:
        plan.bind(p)
    for h in hidden:
        if _under(h, bound) or _under(h, ["/tmp"]):
            plan.tmpfs(h)
    if env_root and os.path.exists(env_root):
        plan.bind(env_root)
    plan.bind(code_dir)
    for m in mounts:
        if os.path.isdir(m):
            plan.bind(m)
    args = [*plan.args, "--chdir", code_dir]
    # No --die-with-parent: it ends the sandbox with the controller (measured), and replicas
    # outlive a controller crash. A bwrap killed on its own leaves its sandbox behind; the
    # platform finds it by process group and replica id (process.py). The pid namespace
    # hides every other process, the controller's included.
    args += ["--unshare-pid", "--unshare-ipc", "--unshare-uts"]
    # Not --as-pid-1: bwrap stays the namespace's init (reaping orphans), and a worker whose
    # parent is pid 1 would take its supervisor for dead.
    args += ["--"]
    if isolation.uid is not None and isolation.setpriv is not None:
        args += [
            isolation.setpriv,
            f"--reuid={isolation.uid}",
            f"--regid={isolation.gid}",
            "--clear-groups",
            "--inh-caps=-all",
            "--bounding-set=-all",
            "--",
        ]
    return args + cmd


class _Mounts:
    """bwrap mount arguments in order. bwrap makes a bind's missing parent folders with the
    mode of the host's (``/root`` 0700), which an unprivileged replica could not cross: they
    are made 0755 first (they hold nothing but the path to what is bound)."""

    def __init__(self, args: list[str], mounts: list[tuple[str, str]]) -> None:
        self.args = args
        self.mounts = mounts
        self.made: set[str] = set()

    def _exists(self, path: str) -> bool:
        covering = [(root, kind) for root, kind in self.mounts if _under(path, [root])]
        if covering and (covering[-1][1] == "bind" or covering[-1][0] == path):
            return True  # inside a bound folder, or a mount point itself
        return path in self.made

    def _parents(self, path: str) -> None:
        parts = Path(path).parts[1:-1]
        for n in range(1, len(parts) + 1):
            parent = "/" + "/".join(parts[:n])
            if not self._exists(parent):
                self.args += ["--perms", "0755", "--dir", parent]
                self.made.add(parent)

    def bind(self, path: str) -> None:
        self._parents(path)
        self.args += ["--ro-bind", path, path]
        self.mounts.append((path, "bind"))

    def tmpfs(self, path: str) -> None:
        self._parents(path)
        self.args += ["--perms", "0755", "--tmpfs", path]
        self.mounts.append((path, "tmpfs"))
        self.made = {m for m in self.made if not _under(m, [path])}


def sandbox_child(pid: int) -> int | None:
    """The replica's own process inside a bwrap ``pid`` (it receives SIGTERM to drain:
    a SIGTERM to bwrap itself would tear the sandbox down at once). bwrap runs as the pid
    namespace's init, so the replica is found below one or more bwrap processes."""
    current = pid
    for depth in range(4):
        try:
            if Path(f"/proc/{current}/comm").read_text().strip() != "bwrap":
                return current if depth else None
            children = Path(f"/proc/{current}/task/{current}/children").read_text().split()
        except OSError:
            return None
        if not children:
            return None  # still setting up: nothing inside to drain yet
        current = int(children[0])
    return None


def give_to(uid: int, gid: int, root: Path) -> None:
    """Hand a replica's code folder to the replica user (it stays 0700/0600, read-only bound)."""
    for dirpath, dirnames, filenames in os.walk(root):
        for name in (dirpath, *(os.path.join(dirpath, n) for n in dirnames + filenames)):
            st = os.lstat(name)
            if st.st_uid != uid:
                os.lchown(name, uid, gid)
