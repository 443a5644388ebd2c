"""The artifact store interface every backend implements, and the key rules they share.

A store is rooted at a URL (a local folder or ``s3://bucket/prefix``); keys are relative,
``/``-separated paths below that root. Keys are sanitised once, here, so no backend can be
talked into writing outside its root. Reads of existing S3 objects (inputs, ``tickrun artifact
download``) accept any valid S3 key but a traversal (:func:`check_object_key`).
"""

from __future__ import annotations

import hashlib
import re
from abc import ABC, abstractmethod
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from typing import TYPE_CHECKING, BinaryIO

from ..errors import ArtifactError, AuthError, NotFoundError

if TYPE_CHECKING:
    from .hashing import Digest

CHUNK_BYTES = 1024 * 1024
_SEGMENT = re.compile(r"^[A-Za-z0-9_][A-Za-z0-9._=+@-]{0,199}$")


class ArtifactKeyError(ArtifactError):
    """An artifact key is empty, absolute, or escapes its root (``..``)."""

    status = 400


class ArtifactNotFoundError(ArtifactError, NotFoundError):
    """No object under that key."""

    status = 404


class ArtifactAuthError(ArtifactError, AuthError):
    """The object store refused the configured credentials."""

    status = 401


def sanitize_key(key: str) -> str:
    """Return ``key`` in canonical form or raise :class:`ArtifactKeyError`.

    Each ``/``-separated segment must start with a letter, digit or ``_`` and use only
    ``[A-Za-z0-9._=+@-]``; that rules out ``..``, ``.``, hidden files, absolute paths,
    backslashes, drive letters and control characters in one rule.
    """
    if not isinstance(key, str) or not key:
        raise ArtifactKeyError("artifact key must be a non-empty string")
    if key.startswith("/") or "\\" in key or "\x00" in key:
        raise ArtifactKeyError(f"artifact key {key[:80]!r} must be a relative path")
    segments = key.split("/")
    for seg in segments:
        if not _SEGMENT.match(seg) or seg in (".", ".."):
            raise ArtifactKeyError(
                f"artifact key {key[:80]!r} has an invalid segment {seg[:40]!r} "
                "(allowed: letters, digits and ._=+@- ; no '..', no leading dot)"
            )
    return "/".join(segments)


MAX_OBJECT_KEY_BYTES = 1024  # S3's limit on a key's UTF-8 length


def check_object_key(key: str) -> str:
    """Return the key of an existing object to *read*, or raise :class:`ArtifactKeyError`.

    :func:`sanitize_key` is for keys tickrun creates; inputs name objects that others wrote,
    and S3 allows any UTF-8 key (``:``, spaces, ``~``, parentheses…). Only what could climb out
    of a folder when a key is mirrored onto a filesystem is refused: a ``..`` segment (``/`` or
    ``\\`` separated) and a leading ``/``.
    """
    if not isinstance(key, str) or not key:
        raise ArtifactKeyError("object key must be a non-empty string")
    if key.startswith("/"):
        raise ArtifactKeyError(f"object key {key[:80]!r} must not start with '/'")
    if len(key.encode("utf-8", "surrogatepass")) > MAX_OBJECT_KEY_BYTES:
        raise ArtifactKeyError(
            f"object key {key[:80]!r}… is longer than {MAX_OBJECT_KEY_BYTES} bytes"
        )
    if ".." in re.split(r"[/\\]", key):
        raise ArtifactKeyError(f"object key {key[:80]!r} has a '..' segment")
    return key


@dataclass(frozen=True, slots=True)
class ObjectInfo:
    """What a store knows about one object. ``sha256`` is known after a put, else maybe not."""

    key: str
    size_bytes: int
    sha256: str | None = None
    modified: datetime | None = None
    url: str = ""


class HashingReader:
    """Wraps a binary stream, counting and hashing what is read through it."""

    def __init__(self, raw: BinaryIO) -> None:
        self._raw = raw
        self._hash = hashlib.sha256()
        self.size_bytes = 0

    def read(self, n: int = -1) -> bytes:
        data = self._raw.read(n)
        self._hash.update(data)
        self.size_bytes += len(data)
        return data

    @property
    def sha256(self) -> str:
        return self._hash.hexdigest()


def file_sha256(path: Path) -> tuple[str, int]:
    h = hashlib.sha256()
    size = 0
    with path.open("rb") as f:
        while chunk := f.read(CHUNK_BYTES):
            h.update(chunk)
            size += len(chunk)
    return h.hexdigest(), size


class ArtifactStore(ABC):
    """put / get / stream / list / delete / stat over one root. Constructors do no I/O."""

    url: str
    """The root, as a URL: an absolute folder path or ``s3://bucket[/prefix]``."""

    @abstractmethod
    def put(self, key: str, data: bytes) -> ObjectInfo: ...

    @abstractmethod
    def put_file(self, key: str, path: str | Path) -> ObjectInfo:
        """Upload a local file without reading it into memory."""

    def put_file_deferred(self, key: str, path: str | Path) -> tuple[ObjectInfo, Digest | None]:
        """Store a local file; the stored copy's sha256 may come later.

        A store that copies faster without hashing (the local one, for big files) returns the
        object with ``sha256=None`` and a :class:`~.hashing.Digest` of the stored copy's
        sha256, computed on the hashing thread or by whoever waits for it first; the bytes are
        stored when this returns. Others store and hash in one pass (:meth:`put_file`) and
        return no digest."""
        return self.put_file(key, path), None

    @abstractmethod
    def put_stream(self, key: str, stream: BinaryIO) -> ObjectInfo:
        """Upload a stream of unknown length (multipart on S3)."""

    @abstractmethod
    def get(self, key: str) -> bytes: ...

    @abstractmethod
    def stream(self, key: str, chunk_bytes: int = CHUNK_BYTES) -> Iterator[bytes]: ...

    @abstractmethod
    def list(self, prefix: str = "") -> list[ObjectInfo]:
        """Objects whose key starts with ``prefix`` (a folder-like prefix), sorted by key."""

    @abstractmethod
    def delete(self, key: str) -> None: ...

    @abstractmethod
    def stat(self, key: str) -> ObjectInfo: ...

    @abstractmethod
    def url_for(self, key: str) -> str:
        """The URL of ``key`` (``/abs/path`` or ``s3://bucket/prefix/key``)."""

    def prepare(self) -> None:
        """Check (before a run starts) that the store can be written; raise a clear error."""
        return

    def download(self, key: str, dest: str | Path) -> Path:
        """Write ``key`` to ``dest`` chunk by chunk (atomically: temp file, then rename)."""
        target = Path(dest)
        target.parent.mkdir(parents=True, exist_ok=True)
        tmp = target.with_name(f".{target.name}.part")
        try:
            with tmp.open("wb") as f:
                for chunk in self.stream(key):
                    f.write(chunk)
            tmp.replace(target)
        finally:
            tmp.unlink(missing_ok=True)
        return target

    def head(self, key: str, limit: int) -> bytes:
        """The first ``limit`` bytes of ``key`` (all of it when shorter), read chunk by chunk."""
        out = bytearray()
        for chunk in self.stream(key):
            out += chunk
            if len(out) >= limit:
                break
        return bytes(out[:limit])

    def exists(self, key: str) -> bool:
        try:
            self.stat(key)
        except ArtifactNotFoundError:
            return False
        return True
