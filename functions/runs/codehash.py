"""What code and which installed packages a run target is: the labels ``code.hash`` and
``requirements.lock``.

One place for both, read by ``run_function`` (every run whose target it can hash carries the
labels, which the registry's lineage records: :mod:`.db.lineage`) and by pipelines (a step's
cache key). The rules:

- code hash: sha256 of the handler's source file (``file.py:fn``, a module's file); for a hub
  item version (a folder with ``item.yaml``) sha256 over all the version's files, by relative
  path, so an edited helper module changes it too;
- requirements: the item's ``requirements:`` (hub), else the ``requirements`` of a
  ``function.yaml`` beside the handler file; the lock is sha256 of the sorted lines
  ``name==installed version`` (``name (not installed)`` when missing), so an upgraded package
  changes it.

Nothing here imports the hub: the hub's handler is a function in the item's folder, which is
enough to find the folder.
"""

from __future__ import annotations

import hashlib
import inspect
import logging
import re
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path
from typing import Any

logger = logging.getLogger(__name__)

CODE_HASH_LABEL = "code.hash"
REQUIREMENTS_LOCK_LABEL = "requirements.lock"
ITEM_FILE = "item.yaml"
FUNCTION_FILE = "function.yaml"
_SKIP_DIRS = {"__pycache__", ".git", ".pytest_cache", ".mypy_cache"}
_NAME = re.compile(r"^\s*([A-Za-z0-9][A-Za-z0-9._-]*)")


@dataclass(frozen=True)
class CodeFingerprint:
    """A target's code hash and requirements (lines as written, and the installed lock)."""

    code_hash: str
    requirements: tuple[str, ...]
    requirements_lock: str
    source: str  # the file or item folder hashed

    def labels(self) -> dict[str, str]:
        return {CODE_HASH_LABEL: self.code_hash, REQUIREMENTS_LOCK_LABEL: self.requirements_lock}


def source_file(fn: Callable[..., Any]) -> Path | None:
    """The ``.py`` file ``fn`` is defined in, or None (a builtin, a C extension, a REPL)."""
    target = inspect.unwrap(fn)
    try:
        src = inspect.getsourcefile(target)
    except TypeError:
        return None
    if not src or not src.endswith(".py"):
        return None
    path = Path(src)
    return path if path.is_file() else None


def fingerprint(fn: Callable[..., Any]) -> CodeFingerprint | None:
    """The fingerprint of the target ``fn``; None when its code cannot be found on disk."""
    path = source_file(fn)
    if path is None:
        return None
    try:
        st = path.stat()
        folder = path.parent
        item = folder / ITEM_FILE
        if item.is_file():
            return _item_fingerprint(str(folder), _folder_stamp(folder))
        return _file_fingerprint(str(path), st.st_mtime_ns, st.st_size)
    except OSError as exc:
        logger.warning("cannot hash the code of %s: %s", path, exc)
        return None


def fingerprint_labels(fn: Callable[..., Any]) -> dict[str, str]:
    """``{code.hash, requirements.lock}`` for ``fn``, or ``{}`` when it cannot be hashed."""
    fp = fingerprint(fn)
    return fp.labels() if fp is not None else {}


def requirements_lock(requirements: Iterable[str]) -> str:
    """sha256 of the sorted ``name==installed version`` lines of ``requirements``."""
    lines = sorted({_locked(r) for r in requirements if r.strip()})
    return hashlib.sha256("\n".join(lines).encode()).hexdigest()


def _locked(requirement: str) -> str:
    m = _NAME.match(requirement)
    if m is None:
        return requirement.strip()
    # Here, not at the top: every run imports this module, few have requirements to lock
    # (importlib.metadata ~12 ms, yaml ~10 ms of a job's start-up).
    from importlib import metadata

    name = m.group(1)
    try:
        return f"{_canonical(name)}=={metadata.version(name)}"
    except metadata.PackageNotFoundError:
        return f"{_canonical(name)} (not installed)"


def _canonical(name: str) -> str:
    return re.sub(r"[-_.]+", "-", name).lower()


def _folder_stamp(folder: Path) -> tuple[tuple[str, int, int], ...]:
    """What changes when a file of the folder does (the cache key of its hash)."""
    stamp = []
    for p in _files(folder):
        st = p.stat()
        stamp.append((p.relative_to(folder).as_posix(), st.st_mtime_ns, st.st_size))
    return tuple(stamp)


def _files(folder: Path) -> list[Path]:
    out = []
    for p in folder.rglob("*"):
        rel = p.relative_to(folder).parts
        if any(part in _SKIP_DIRS for part in rel) or p.suffix in (".pyc", ".pyo"):
            continue
        if p.is_file():
            out.append(p)
    return sorted(out)


# Cached by (path, mtime, size): a sweep or a pipeline hashes the same file many times.
@lru_cache(maxsize=256)
def _file_fingerprint(path: str, _mtime_ns: int, _size: int) -> CodeFingerprint:
    file = Path(path)
    code_hash = hashlib.sha256(file.read_bytes()).hexdigest()
    reqs = _function_yaml_requirements(file.parent / FUNCTION_FILE)
    return CodeFingerprint(code_hash, reqs, requirements_lock(reqs), path)


@lru_cache(maxsize=64)
def _item_fingerprint(folder: str, stamp: tuple[tuple[str, int, int], ...]) -> CodeFingerprint:
    root = Path(folder)
    h = hashlib.sha256()
    for rel, _mtime, _size in stamp:
        h.update(rel.encode() + b"\0")
        h.update(hashlib.sha256((root / rel).read_bytes()).digest())
    reqs = _yaml_list(root / ITEM_FILE, ("requirements",))
    return CodeFingerprint(h.hexdigest(), reqs, requirements_lock(reqs), folder)


def _function_yaml_requirements(path: Path) -> tuple[str, ...]:
    if not path.is_file():
        return ()
    # function.yaml keeps tickrun's own fields under spec: (Nuclio's layout); accept the top too.
    return _yaml_list(path, ("spec", "requirements")) or _yaml_list(path, ("requirements",))


def _yaml_list(path: Path, keys: tuple[str, ...]) -> tuple[str, ...]:
    import yaml

    try:
        node: Any = yaml.safe_load(path.read_text())
    except (OSError, yaml.YAMLError) as exc:
        logger.warning("cannot read requirements from %s: %s", path, exc)
        return ()
    for k in keys:
        node = node.get(k) if isinstance(node, dict) else None
    if not isinstance(node, list):
        return ()
    return tuple(str(r) for r in node)


__all__ = [
    "CODE_HASH_LABEL",
    "REQUIREMENTS_LOCK_LABEL",
    "CodeFingerprint",
    "fingerprint",
    "fingerprint_labels",
    "requirements_lock",
    "source_file",
]
