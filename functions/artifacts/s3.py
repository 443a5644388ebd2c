"""MinIO / S3 backend through the ``minio`` client; big objects go up as multipart streams."""

from __future__ import annotations

import io
import logging
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import TYPE_CHECKING, Any, BinaryIO, TypeVar

from ..errors import ArtifactError
from ..settings import S3_ACCESS_KEY, S3_ENDPOINT, S3_SECRET_KEY
from .base import (
    CHUNK_BYTES,
    ArtifactAuthError,
    ArtifactKeyError,
    ArtifactNotFoundError,
    ArtifactStore,
    HashingReader,
    ObjectInfo,
    check_object_key,
    sanitize_key,
)
from .settings import S3Settings

if TYPE_CHECKING:
    from minio import Minio

logger = logging.getLogger(__name__)
T = TypeVar("T")

_AUTH_CODES = {
    "InvalidAccessKeyId",
    "SignatureDoesNotMatch",
    "AccessDenied",
    "InvalidToken",
    "ExpiredToken",
}
_MISSING_CODES = {"NoSuchKey", "NoSuchBucket", "NoSuchObject"}


def parse_s3_url(url: str) -> tuple[str, str]:
    """``s3://bucket/some/prefix`` → (bucket, ``some/prefix``)."""
    if not url.startswith("s3://"):
        raise ArtifactError(f"not an s3:// URL: {url[:100]!r}")
    bucket, _, prefix = url[5:].partition("/")
    if not bucket:
        raise ArtifactError(f"s3 URL {url[:100]!r} has no bucket")
    prefix = prefix.strip("/")
    return bucket, sanitize_key(prefix) if prefix else ""


def parse_s3_object_url(url: str) -> tuple[str, str]:
    """``s3://bucket/any key`` of an existing object → (bucket, key), for reading.

    Unlike :func:`parse_s3_url` (a root tickrun writes under), the key may be any valid S3 key
    except one with a ``..`` segment or a leading ``/`` (see :func:`check_object_key`).
    """
    if not url.startswith("s3://"):
        raise ArtifactError(f"not an s3:// URL: {url[:100]!r}")
    bucket, _, key = url[5:].partition("/")
    if not bucket:
        raise ArtifactError(f"s3 URL {url[:100]!r} has no bucket")
    if not key:
        raise ArtifactKeyError(f"{url[:100]!r} names a bucket, not an object")
    return bucket, check_object_key(key)


class S3ArtifactStore(ArtifactStore):
    """Objects under ``s3://bucket/prefix``. The bucket is created on the first write."""

    def __init__(self, url: str, settings: S3Settings | None = None) -> None:
        self.bucket, self.prefix = parse_s3_url(url)
        self.url = f"s3://{self.bucket}" + (f"/{self.prefix}" if self.prefix else "")
        self.settings = settings or S3Settings.from_env()
        self._client: Minio | None = None
        self._bucket_ready = False

    # -- plumbing ------------------------------------------------------------------------------

    @property
    def client(self) -> Minio:
        if self._client is None:
            if not self.settings.endpoint:
                raise ArtifactError(
                    f"artifact path {self.url} needs an S3 endpoint: set {S3_ENDPOINT.name} "
                    f"(and {S3_ACCESS_KEY.name} / {S3_SECRET_KEY.name})"
                )
            import urllib3
            from minio import Minio

            s = self.settings
            http = urllib3.PoolManager(
                timeout=urllib3.Timeout(connect=s.connect_timeout_s, read=s.read_timeout_s),
                retries=urllib3.Retry(
                    total=s.retries, backoff_factor=0.2, status_forcelist=[500, 502, 503, 504]
                ),
                maxsize=10,
                cert_reqs="CERT_REQUIRED" if s.secure else "CERT_NONE",
                ca_certs=s.ca_bundle,
            )
            self._client = Minio(
                s.endpoint,
                access_key=s.access_key.get_secret_value() if s.access_key else None,
                secret_key=s.secret_key.get_secret_value() if s.secret_key else None,
                secure=s.secure,
                region=s.region,
                http_client=http,
            )
        return self._client

    def _object(self, key: str) -> str:
        key = sanitize_key(key)
        return f"{self.prefix}/{key}" if self.prefix else key

    def _existing(self, key: str) -> str:
        # Reads may name objects tickrun did not write: any S3 key but a traversal.
        key = check_object_key(key)
        return f"{self.prefix}/{key}" if self.prefix else key

    def url_for(self, key: str) -> str:
        return f"s3://{self.bucket}/{self._object(key)}"

    def _call(self, what: str, fn: Callable[[], T], key: str = "") -> T:
        """Run one client call, mapping its failures onto tickrun's errors (no secrets)."""
        from minio.error import MinioException, S3Error
        from urllib3.exceptions import HTTPError

        where = f"{self.settings.describe()} bucket {self.bucket!r}"
        try:
            return fn()
        except S3Error as exc:
            if exc.code in _AUTH_CODES:
                raise ArtifactAuthError(
                    f"S3 at {where} refused the credentials ({exc.code}) while trying to {what}; "
                    f"check {S3_ACCESS_KEY.name} / {S3_SECRET_KEY.name}"
                ) from exc
            if exc.code in _MISSING_CODES:
                raise ArtifactNotFoundError(f"artifact {key!r} not found in {self.url}") from exc
            raise ArtifactError(f"S3 at {where} failed to {what}: {exc.code}") from exc
        except MinioException as exc:
            raise ArtifactError(f"S3 at {where} failed to {what}: {type(exc).__name__}") from exc
        except (HTTPError, OSError) as exc:
            raise ArtifactError(
                f"cannot reach S3 at {where} to {what}: {type(exc).__name__}"
            ) from exc

    def _ensure_bucket(self) -> None:
        if self._bucket_ready:
            return
        if not self._call("check the bucket", lambda: self.client.bucket_exists(self.bucket)):
            try:
                self._call("create the bucket", lambda: self.client.make_bucket(self.bucket))
            except ArtifactError as exc:
                # Another writer may have created it in between.
                if "BucketAlreadyOwnedByYou" not in exc.message:
                    raise
        self._bucket_ready = True

    def prepare(self) -> None:
        self._ensure_bucket()

    # -- interface -----------------------------------------------------------------------------

    def _upload(self, key: str, stream: BinaryIO, length: int) -> ObjectInfo:
        name = self._object(key)  # a bad key fails before any network call
        self._ensure_bucket()
        reader = HashingReader(stream)
        part = self.settings.part_size_bytes
        self._call(
            f"upload {key}",
            lambda: self.client.put_object(
                self.bucket,
                name,
                reader,  # type: ignore[arg-type]
                length=length,
                part_size=part,
            ),
            key,
        )
        return ObjectInfo(
            key=sanitize_key(key),
            size_bytes=reader.size_bytes,
            sha256=reader.sha256,
            url=self.url_for(key),
        )

    def put(self, key: str, data: bytes) -> ObjectInfo:
        return self._upload(key, io.BytesIO(data), len(data))

    def put_file(self, key: str, path: str | Path) -> ObjectInfo:
        p = Path(path)
        try:
            size = p.stat().st_size
            with p.open("rb") as f:
                return self._upload(key, f, size)
        except FileNotFoundError as exc:
            raise ArtifactNotFoundError(f"local file {p} does not exist") from exc

    def put_stream(self, key: str, stream: BinaryIO) -> ObjectInfo:
        return self._upload(key, stream, -1)

    def get(self, key: str) -> bytes:
        return b"".join(self.stream(key))

    def stream(self, key: str, chunk_bytes: int = CHUNK_BYTES) -> Iterator[bytes]:
        name = self._existing(key)
        resp: Any = self._call(
            f"read {key}", lambda: self.client.get_object(self.bucket, name), key
        )
        return self._iter(resp, key, chunk_bytes)

    def _iter(self, resp: Any, key: str, chunk_bytes: int) -> Iterator[bytes]:
        try:
            yield from self._call(f"read {key}", lambda: resp.stream(chunk_bytes), key)
        finally:
            resp.close()
            resp.release_conn()

    def list(self, prefix: str = "") -> list[ObjectInfo]:
        p = prefix.strip("/")
        full = self._object(p) + "/" if p else (f"{self.prefix}/" if self.prefix else "")
        strip = len(self.prefix) + 1 if self.prefix else 0

        def run() -> list[ObjectInfo]:
            if not self.client.bucket_exists(self.bucket):
                return []
            return [
                ObjectInfo(
                    key=o.object_name[strip:],
                    size_bytes=int(o.size or 0),
                    modified=o.last_modified,
                    url=f"s3://{self.bucket}/{o.object_name}",
                )
                for o in self.client.list_objects(self.bucket, prefix=full, recursive=True)
                if o.object_name and not o.is_dir
            ]

        return sorted(self._call(f"list {prefix or '/'}", run), key=lambda o: o.key)

    def delete(self, key: str) -> None:
        name = self._object(key)  # deletes keep the strict rule of keys tickrun writes
        self.stat(key)  # S3 deletes of missing keys succeed silently; callers expect 404
        self._call(f"delete {key}", lambda: self.client.remove_object(self.bucket, name), key)

    def stat(self, key: str) -> ObjectInfo:
        name = self._existing(key)
        st: Any = self._call(f"stat {key}", lambda: self.client.stat_object(self.bucket, name), key)
        return ObjectInfo(
            key=key,
            size_bytes=int(st.size or 0),
            modified=st.last_modified,
            url=f"s3://{self.bucket}/{name}",
        )
