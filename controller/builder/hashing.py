"""Content hashes of folders and files, and the function code archive format (tar.gz)."""

from __future__ import annotations

import hashlib
import io
import os
import tarfile
from collections.abc import Iterable
from pathlib import Path

from tickrun.functions.errors import SpecError

# Never part of a function's code: caches, VCS data, virtual environments.
IGNORED = {
    "__pycache__",
    ".git",
    ".hg",
    ".svn",
    ".venv",
    "venv",
    ".mypy_cache",
    ".ruff_cache",
    ".pytest_cache",
    ".DS_Store",
    "node_modules",
}
MAX_CODE_BYTES = 64 * 1024 * 1024


def iter_files(root: Path) -> Iterable[Path]:
    """Files below ``root`` in a stable order, skipping IGNORED names and *.pyc."""
    for dirpath, dirnames, filenames in os.walk(root):
        dirnames[:] = sorted(d for d in dirnames if d not in IGNORED)
        for name in sorted(filenames):
            if name in IGNORED or name.endswith((".pyc", ".pyo")):
                continue
            yield Path(dirpath) / name


def hash_tree(root: Path, h: hashlib._Hash | None = None) -> str:
    """sha256 over relative paths, modes and contents (mtimes are ignored on purpose)."""
    h = h or hashlib.sha256()
    for path in iter_files(root):
        rel = path.relative_to(root).as_posix()
        h.update(rel.encode() + b"\0")
        h.update(b"x" if os.access(path, os.X_OK) else b"-")
        h.update(path.read_bytes() if not path.is_symlink() else os.readlink(path).encode())
        h.update(b"\0")
    return h.hexdigest()


def sha256_bytes(*parts: bytes | str) -> str:
    h = hashlib.sha256()
    for part in parts:
        h.update(part.encode() if isinstance(part, str) else part)
        h.update(b"\0")
    return h.hexdigest()


def sha256_file(path: Path) -> str:
    h = hashlib.sha256()
    with path.open("rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


def pack_dir(root: Path) -> bytes:
    """A deterministic tar.gz of ``root`` (what ``tickrun deploy`` uploads)."""
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w:gz", compresslevel=6) as tar:
        for path in iter_files(root):
            info = tar.gettarinfo(str(path), arcname=path.relative_to(root).as_posix())
            info.mtime, info.uid, info.gid, info.uname, info.gname = 0, 0, 0, "", ""
            if info.isfile():
                with path.open("rb") as f:
                    tar.addfile(info, f)
            else:
                tar.addfile(info)
    data = buf.getvalue()
    if len(data) > MAX_CODE_BYTES:
        raise SpecError(
            f"function code in {root} is {len(data) >> 20} MiB compressed; the limit is "
            f"{MAX_CODE_BYTES >> 20} MiB (keep data and models in the artifact store)"
        )
    return data


def unpack(data: bytes, dest: Path) -> None:
    """Extract an uploaded archive; members escaping ``dest`` or special files are refused."""
    dest.mkdir(parents=True, exist_ok=True)
    try:
        with tarfile.open(fileobj=io.BytesIO(data), mode="r:*") as tar:
            tar.extractall(dest, filter="data")
    except (tarfile.TarError, OSError) as exc:
        raise SpecError(f"function code archive is invalid: {exc}") from exc
