"""Content hashes of folders and files, and the function code archive format (tar.gz)."""

from __future__ import annotations

import hashlib
import io
import os
import shutil
import tarfile
import zlib
from collections.abc import Iterable
from pathlib import Path

from tickrun.functions.errors import BodyTooLargeError, SpecError

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
# What an uploaded archive may unpack to (a few hundred KB of gzip can hold gigabytes).
MAX_UNPACKED_BYTES = 256 * 1024 * 1024
MAX_FILES = 20_000


def iter_files(root: Path) -> Iterable[Path]:
    """Files below ``root`` in a stable order, skipping IGNORED names, *.pyc and what is not a
    regular file or a symlink."""
    for dirpath, dirnames, filenames in os.walk(root):
        dirnames[:] = sorted(d for d in dirnames if d not in IGNORED)
        for name in sorted(filenames):
            if name in IGNORED or name.endswith((".pyc", ".pyo")):
                continue
            path = Path(dirpath) / name
            if not path.is_symlink() and not path.is_file():
                continue  # a socket or a fifo (a running server's): not code, not packable
            yield path


def hash_tree(root: Path, h: hashlib._Hash | None = None) -> str:
    """sha256 over relative paths, modes and contents (mtimes are ignored on purpose)."""
    return hash_files(root, iter_files(root), h)


def hash_files(root: Path, paths: Iterable[Path], h: hashlib._Hash | None = None) -> str:
    """:func:`hash_tree` over a chosen list of files below ``root`` (in the order given)."""
    h = h or hashlib.sha256()
    for path in paths:
        rel = path.relative_to(root).as_posix()
        h.update(rel.encode() + b"\0")
        h.update(b"x" if os.access(path, os.X_OK) else b"-")
        if path.is_symlink():
            h.update(os.readlink(path).encode())
        else:
            _update_from_file(h, path)
        h.update(b"\0")
    return h.hexdigest()


def sha256_bytes(*parts: bytes | str) -> str:
    h = hashlib.sha256()
    for part in parts:
        h.update(part.encode() if isinstance(part, str) else part)
        h.update(b"\0")
    return h.hexdigest()


def _update_from_file(h: hashlib._Hash, path: Path) -> None:
    # In chunks: a big file never sits in memory whole.
    with path.open("rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            h.update(chunk)


def sha256_file(path: Path) -> str:
    h = hashlib.sha256()
    _update_from_file(h, path)
    return h.hexdigest()


def publish_tree(tmp: Path, final: Path) -> None:
    """Move the finished folder ``tmp`` to its content-addressed name ``final``; when ``final``
    is there already it has the same content, and ``tmp`` is dropped."""
    if final.exists():
        shutil.rmtree(tmp)
    else:
        tmp.rename(final)


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


def unpack(
    data: bytes,
    dest: Path,
    *,
    max_bytes: int = MAX_UNPACKED_BYTES,
    max_files: int = MAX_FILES,
) -> None:
    """Extract an uploaded archive; members escaping ``dest`` or special files are refused, and
    so is an archive whose members add up to more than ``max_bytes`` or ``max_files`` (checked
    on the headers, before anything is written: a small bomb never unpacks)."""
    dest.mkdir(mode=0o700, parents=True, exist_ok=True)
    try:
        with tarfile.open(fileobj=io.BytesIO(data), mode="r:*") as tar:
            members: list[tarfile.TarInfo] = []
            total = 0
            for member in tar:  # lazily, header by header
                members.append(member)
                total += max(member.size, 0)
                if len(members) > max_files:
                    raise BodyTooLargeError(
                        f"function code archive has more than {max_files} entries"
                    )
                if total > max_bytes:
                    raise BodyTooLargeError(
                        f"function code unpacks to more than {max_bytes >> 20} MiB; keep data "
                        "and models in the artifact store"
                    )
            tar.extractall(dest, members=members, filter="data")
    except (tarfile.TarError, OSError, EOFError, zlib.error) as exc:
        raise SpecError(f"function code archive is invalid: {type(exc).__name__}") from exc
    private(dest)


def private(root: Path) -> None:
    """Folders 0700, files 0600 (0700 when executable): code is the controller's alone."""
    os.chmod(root, 0o700)
    for dirpath, dirnames, filenames in os.walk(root):
        for d in dirnames:
            full = os.path.join(dirpath, d)
            if not os.path.islink(full):
                os.chmod(full, 0o700)
        for f in filenames:
            full = os.path.join(dirpath, f)
            if os.path.islink(full):
                continue
            mode = os.stat(full).st_mode
            os.chmod(full, 0o700 if mode & 0o111 else 0o600)
