"""The embedded default backend: a folder on local disk."""

from __future__ import annotations

import contextlib
import errno
import hashlib
import io
import os
import shutil
import tempfile
from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path
from typing import TYPE_CHECKING, Any, BinaryIO

from ..errors import ArtifactError
from .base import (
    CHUNK_BYTES,
    ArtifactNotFoundError,
    ArtifactStore,
    ObjectInfo,
    sanitize_key,
)
from .folders import Folders
from .hashing import digest_later

if TYPE_CHECKING:
    from .hashing import Digest

# 256 KiB chunks: the copy's buffer stays in the CPU's cache between the hash and the write
# (0.95 ms a MB here vs 1.01 with 1 MB chunks: 1 MB files, 9 rounds of 20, medians).
COPY_CHUNK_BYTES = 256 * 1024

# From this size a file is copied by the kernel and hashed on the hashing thread: below it the
# hand-over (a thread wake-up, a future, a kept descriptor) costs more than hashing in line
# (log_artifact through commit(), in line vs deferred: 32 KiB 0.21 vs 0.28 ms, 128 KiB 0.31
# vs 0.33, 256 KiB 0.46 vs 0.34, 1 MB 1.27 vs 0.97).
DEFER_HASH_MIN_BYTES = 128 * 1024

# copy_file_range refuses some pairs of files (across filesystems on older kernels, special
# files, filesystems without support); then sendfile, then a plain read/write loop.
_NO_KERNEL_COPY = {errno.EXDEV, errno.EINVAL, errno.ENOSYS, errno.EOPNOTSUPP, errno.EBADF}
_CREATE = os.O_RDWR | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW | os.O_CLOEXEC


def copy_hashing(src: BinaryIO, out: BinaryIO, digest: Any) -> int:
    """Copy ``src`` into ``out`` reading it once, feeding ``digest`` as the bytes pass; the
    number of bytes copied.

    One reused buffer: no allocation (and page faults) per chunk. Hashing on a helper thread
    while writing was tried and measured slower (1.20 vs 0.95 ms a MB with a 2-core machine
    busy: the hand-over costs more than the overlap gains when no core is idle)."""
    buf = bytearray(COPY_CHUNK_BYTES)
    view = memoryview(buf)
    size = 0
    while n := src.readinto(buf):  # type: ignore[attr-defined]
        digest.update(view[:n])
        _write_all(out, view[:n])
        size += n
    return size


def kernel_copy(src: int, out: int) -> int:
    """Copy the file open at ``src`` (from its offset, to its end) into ``out`` in the kernel;
    the number of bytes copied. ``copy_file_range`` shares extents (a reflink) where the
    filesystem can (Btrfs, XFS), else copies page cache to page cache: no pass through Python."""
    size = 0
    try:
        while n := os.copy_file_range(src, out, 1 << 30):
            size += n
        return size
    except OSError as exc:
        if exc.errno not in _NO_KERNEL_COPY or size:
            raise
    try:
        while n := os.sendfile(out, src, None, 1 << 30):
            size += n
        return size
    except OSError as exc:
        if exc.errno not in _NO_KERNEL_COPY or size:
            raise
    buf = bytearray(COPY_CHUNK_BYTES)
    view = memoryview(buf)
    while n := os.readv(src, [buf]):
        chunk = view[:n]
        while chunk:
            chunk = chunk[os.write(out, chunk) :]
        size += n
    return size


def _write_all(out: BinaryIO, chunk: memoryview) -> None:
    # An unbuffered file may take part of a write.
    while chunk:
        chunk = chunk[out.write(chunk) :]


class LocalArtifactStore(ArtifactStore):
    """Objects are files under ``root``; writes land in a temp file, then an atomic rename."""

    def __init__(self, root: str | Path) -> None:
        self.root = Path(root).expanduser().resolve()
        self.url = str(self.root)
        self._folders = Folders(self.root)

    def _path(self, key: str) -> Path:
        path = self.root.joinpath(*sanitize_key(key).split("/"))
        # sanitize_key already forbids '..'; this guards against symlinked folders too.
        if not path.resolve().is_relative_to(self.root):
            raise ArtifactError(f"artifact key {key!r} resolves outside the store root")
        return path

    def url_for(self, key: str) -> str:
        return str(self._path(key))

    def _write(self, key: str, src: BinaryIO) -> ObjectInfo:
        path = self._path(key)
        try:
            path.parent.mkdir(parents=True, exist_ok=True)
            fd, tmp = tempfile.mkstemp(prefix=".put-", dir=path.parent)
        except OSError as exc:
            raise ArtifactError(f"cannot write artifact {key!r}: {exc.strerror}") from exc
        digest = hashlib.sha256()
        try:
            with os.fdopen(fd, "wb", buffering=0) as out:
                if isinstance(src, io.BufferedIOBase | io.FileIO):
                    size = copy_hashing(src, out, digest)
                else:  # any object with read(): user streams may not implement readinto
                    size = 0
                    while chunk := src.read(CHUNK_BYTES):
                        digest.update(chunk)
                        out.write(chunk)
                        size += len(chunk)
            os.replace(tmp, path)
        except OSError as exc:
            raise ArtifactError(f"cannot write artifact {key!r}: {exc.strerror}") from exc
        finally:
            if os.path.exists(tmp):
                os.unlink(tmp)
        return ObjectInfo(
            key=sanitize_key(key), size_bytes=size, sha256=digest.hexdigest(), url=str(path)
        )

    def put(self, key: str, data: bytes) -> ObjectInfo:
        return self._write(key, io.BytesIO(data))

    def put_file(self, key: str, path: str | Path) -> ObjectInfo:
        try:
            with Path(path).open("rb") as f:
                return self._write(key, f)
        except FileNotFoundError as exc:
            raise ArtifactNotFoundError(f"local file {path} does not exist") from exc

    def put_file_deferred(self, key: str, path: str | Path) -> tuple[ObjectInfo, Digest | None]:
        """A big file is copied by the kernel into the store, and the copy's sha256 computed
        on the hashing thread from the descriptor this copy was written through (so it is the
        stored bytes' hash whatever happens to the source afterwards); a small one is copied
        and hashed in one pass, as :meth:`put_file` does."""
        try:
            src = os.open(path, os.O_RDONLY | os.O_CLOEXEC)
        except FileNotFoundError as exc:
            raise ArtifactNotFoundError(f"local file {path} does not exist") from exc
        except OSError as exc:
            raise ArtifactError(f"cannot read {path}: {exc.strerror}") from exc
        try:
            if os.fstat(src).st_size < DEFER_HASH_MIN_BYTES:
                with os.fdopen(src, "rb", closefd=False) as f:
                    return self._write(key, f), None
            return self._copy_unhashed(key, src)
        finally:
            os.close(src)

    def _copy_unhashed(self, key: str, src: int) -> tuple[ObjectInfo, Digest]:
        key = sanitize_key(key)
        folder, _, name = key.rpartition("/")
        with self._folders.open(folder) as (dir_fd, dir_path):
            tmp = f".put-{os.urandom(6).hex()}"
            try:
                fd = os.open(tmp, _CREATE, 0o600, dir_fd=dir_fd)
            except OSError as exc:
                raise ArtifactError(f"cannot write artifact {key!r}: {exc.strerror}") from exc
            try:
                size = kernel_copy(src, fd)
                os.replace(tmp, name, src_dir_fd=dir_fd, dst_dir_fd=dir_fd)
            except BaseException as exc:
                os.close(fd)
                with contextlib.suppress(OSError):
                    os.unlink(tmp, dir_fd=dir_fd)
                if isinstance(exc, OSError):
                    raise ArtifactError(f"cannot write artifact {key!r}: {exc.strerror}") from exc
                raise
        # The descriptor is open for reading too: the hashing thread reads the inode just
        # written (whatever later happens to the name), and closes it.
        pending = digest_later(fd, size)
        url = os.path.join(dir_path, name)
        return ObjectInfo(key=key, size_bytes=size, url=url), pending

    def put_stream(self, key: str, stream: BinaryIO) -> ObjectInfo:
        return self._write(key, stream)

    def get(self, key: str) -> bytes:
        path = self._path(key)
        try:
            return path.read_bytes()
        except (FileNotFoundError, IsADirectoryError) as exc:
            raise ArtifactNotFoundError(f"artifact {key!r} not found in {self.url}") from exc

    def stream(self, key: str, chunk_bytes: int = CHUNK_BYTES) -> Iterator[bytes]:
        path = self._path(key)
        if not path.is_file():
            raise ArtifactNotFoundError(f"artifact {key!r} not found in {self.url}")
        return self._iter(path, chunk_bytes)

    @staticmethod
    def _iter(path: Path, chunk_bytes: int) -> Iterator[bytes]:
        with path.open("rb") as f:
            while chunk := f.read(chunk_bytes):
                yield chunk

    def list(self, prefix: str = "") -> list[ObjectInfo]:
        base = self._path(prefix.rstrip("/")) if prefix.strip("/") else self.root
        if base.is_file():
            return [self._info(base)]
        if not base.is_dir():
            return []
        out = [self._info(p) for p in base.rglob("*") if p.is_file() and not p.name.startswith(".")]
        return sorted(out, key=lambda o: o.key)

    def _info(self, path: Path) -> ObjectInfo:
        st = path.stat()
        return ObjectInfo(
            key=path.relative_to(self.root).as_posix(),
            size_bytes=st.st_size,
            modified=datetime.fromtimestamp(st.st_mtime, tz=UTC),
            url=str(path),
        )

    def delete(self, key: str) -> None:
        path = self._path(key)
        try:
            if path.is_dir():
                shutil.rmtree(path)
            else:
                path.unlink()
        except FileNotFoundError as exc:
            raise ArtifactNotFoundError(f"artifact {key!r} not found in {self.url}") from exc

    def stat(self, key: str) -> ObjectInfo:
        path = self._path(key)
        if not path.is_file():
            raise ArtifactNotFoundError(f"artifact {key!r} not found in {self.url}")
        return self._info(path)

    def sha256(self, key: str) -> str:
        h = hashlib.sha256()
        for chunk in self.stream(key):
            h.update(chunk)
        return h.hexdigest()
