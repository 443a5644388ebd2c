"""The artifact store: one interface, a local-folder backend and a MinIO/S3 backend.

``open_store("s3://bucket/prefix")`` or ``open_store("/some/folder")`` picks the backend from
the URL; S3 endpoint and keys come from :class:`S3Settings` (``TICKRUN_S3_*``).
"""

from __future__ import annotations

from pathlib import Path

from .base import (
    CHUNK_BYTES,
    ArtifactAuthError,
    ArtifactKeyError,
    ArtifactNotFoundError,
    ArtifactStore,
    ObjectInfo,
    check_object_key,
    sanitize_key,
)
from .local import LocalArtifactStore
from .s3 import S3ArtifactStore, parse_s3_object_url, parse_s3_url
from .settings import S3Settings
from .targets import ArtifactRoots, ArtifactTargetError

__all__ = [
    "CHUNK_BYTES",
    "ArtifactAuthError",
    "ArtifactKeyError",
    "ArtifactNotFoundError",
    "ArtifactRoots",
    "ArtifactStore",
    "ArtifactTargetError",
    "LocalArtifactStore",
    "ObjectInfo",
    "S3ArtifactStore",
    "S3Settings",
    "check_object_key",
    "open_store",
    "parse_s3_object_url",
    "parse_s3_url",
    "sanitize_key",
    "split_url",
]


def open_store(url: str | Path, s3: S3Settings | None = None) -> ArtifactStore:
    """A store rooted at ``url``: ``s3://bucket[/prefix]``, ``file:///path`` or a path."""
    text = str(url)
    if text.startswith("s3://"):
        return S3ArtifactStore(text, s3)
    if text.startswith("file://"):
        text = text[len("file://") :]
    return LocalArtifactStore(text)


def split_url(url: str, s3: S3Settings | None = None) -> tuple[ArtifactStore, str]:
    """(store, key) for reading one existing object: ``s3://bucket/key`` or a local file path.

    An S3 key may be anything S3 accepts except a ``..`` segment or a leading ``/``; keys that
    tickrun writes keep the strict :func:`sanitize_key` rule.
    """
    if url.startswith("s3://"):
        bucket, key = parse_s3_object_url(url)
        return S3ArtifactStore(f"s3://{bucket}", s3), key
    path = Path(url[len("file://") :] if url.startswith("file://") else url).expanduser().resolve()
    return LocalArtifactStore(path.parent), path.name
