"""One contract, two backends: the local folder and a real MinIO server (no fakes of S3)."""

from __future__ import annotations

import hashlib
import io
import os
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest
from pydantic import SecretStr

from tests.peers import MinioServer
from tickrun.functions.artifacts import (
    ArtifactAuthError,
    ArtifactKeyError,
    ArtifactNotFoundError,
    ArtifactStore,
    LocalArtifactStore,
    S3ArtifactStore,
    S3Settings,
)


def s3_settings(server: MinioServer, *, secret: str | None = None) -> S3Settings:
    return S3Settings(
        endpoint=server.endpoint,
        access_key=SecretStr(server.access_key),
        secret_key=SecretStr(secret or server.secret_key),
        secure=False,
        part_size_bytes=5 * 1024 * 1024,
    )


@pytest.fixture(params=["local", pytest.param("minio", marks=pytest.mark.minio)])
def store(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[ArtifactStore]:
    if request.param == "local":
        yield LocalArtifactStore(tmp_path / "artifacts")
    else:
        server: MinioServer = request.getfixturevalue("minio_server")
        yield S3ArtifactStore(f"s3://contract-{uuid.uuid4().hex[:8]}/pre/fix", s3_settings(server))


def test_put_get_stat_list_delete(store: ArtifactStore) -> None:
    data = os.urandom(4096)
    info = store.put("proj/uid/0/blob.bin", data)
    assert info.size_bytes == 4096
    assert info.sha256 == hashlib.sha256(data).hexdigest()
    assert store.get("proj/uid/0/blob.bin") == data
    assert store.stat("proj/uid/0/blob.bin").size_bytes == 4096
    store.put("proj/uid/1/other.txt", b"hi")
    store.put("proj2/uid/0/x.txt", b"no")
    assert [o.key for o in store.list("proj")] == ["proj/uid/0/blob.bin", "proj/uid/1/other.txt"]
    assert [o.key for o in store.list("proj/uid/1")] == ["proj/uid/1/other.txt"]
    assert len(store.list()) == 3
    store.delete("proj/uid/0/blob.bin")
    with pytest.raises(ArtifactNotFoundError):
        store.get("proj/uid/0/blob.bin")
    with pytest.raises(ArtifactNotFoundError):
        store.delete("proj/uid/0/blob.bin")
    assert not store.exists("proj/uid/0/blob.bin")
    assert store.exists("proj/uid/1/other.txt")


def test_overwrite_replaces(store: ArtifactStore) -> None:
    store.put("k/v.txt", b"one")
    store.put("k/v.txt", b"two!")
    assert store.get("k/v.txt") == b"two!"
    assert store.stat("k/v.txt").size_bytes == 4


def test_large_file_streams_byte_exact(store: ArtifactStore, tmp_path: Path) -> None:
    # 12 MiB: more than two 5 MiB parts, so S3 takes the multipart path.
    src = tmp_path / "big.bin"
    h = hashlib.sha256()
    with src.open("wb") as f:
        for _ in range(12):
            chunk = os.urandom(1024 * 1024)
            h.update(chunk)
            f.write(chunk)
    info = store.put_file("p/u/0/big.bin", src)
    assert info.sha256 == h.hexdigest()
    assert info.size_bytes == 12 * 1024 * 1024
    out = store.download("p/u/0/big.bin", tmp_path / "down" / "big.bin")
    assert hashlib.sha256(out.read_bytes()).hexdigest() == h.hexdigest()
    streamed = hashlib.sha256()
    for chunk in store.stream("p/u/0/big.bin", 1024 * 1024):
        assert len(chunk) <= 1024 * 1024
        streamed.update(chunk)
    assert streamed.hexdigest() == h.hexdigest()


def test_stream_of_unknown_length(store: ArtifactStore) -> None:
    class Unsized(io.RawIOBase):
        def __init__(self, total: int) -> None:
            self.left = total

        def readable(self) -> bool:
            return True

        def read(self, n: int = -1) -> bytes:
            n = self.left if n < 0 else min(n, self.left)
            self.left -= n
            return b"z" * n

    info = store.put_stream("p/u/0/stream.bin", Unsized(7 * 1024 * 1024))  # type: ignore[arg-type]
    assert info.size_bytes == 7 * 1024 * 1024
    assert store.stat("p/u/0/stream.bin").size_bytes == 7 * 1024 * 1024
    assert info.sha256 == hashlib.sha256(b"z" * (7 * 1024 * 1024)).hexdigest()


@pytest.mark.parametrize("key", ["../../etc/passwd", "/abs/path", "a/../b", ".."])
def test_traversal_keys_refused(store: ArtifactStore, key: str) -> None:
    with pytest.raises(ArtifactKeyError):
        store.put(key, b"x")
    with pytest.raises(ArtifactKeyError):
        store.get(key)


def test_missing_key(store: ArtifactStore) -> None:
    with pytest.raises(ArtifactNotFoundError):
        store.get("nope/missing.bin")
    with pytest.raises(ArtifactNotFoundError):
        store.stat("nope/missing.bin")


@pytest.mark.minio
def test_wrong_credentials_are_a_clear_error_without_the_secret(
    minio_server: MinioServer,
) -> None:
    wrong = "wrong-" + uuid.uuid4().hex
    store = S3ArtifactStore("s3://creds-test", s3_settings(minio_server, secret=wrong))
    with pytest.raises(ArtifactAuthError) as exc:
        store.put("a/b.txt", b"x")
    msg = str(exc.value)
    assert "refused the credentials" in msg
    assert wrong not in msg
    assert minio_server.secret_key not in msg
    assert exc.value.status == 401


@pytest.mark.minio
def test_objects_are_where_the_layout_says(minio_server: MinioServer) -> None:
    bucket = f"layout-{uuid.uuid4().hex[:8]}"
    store = S3ArtifactStore(f"s3://{bucket}/root", s3_settings(minio_server))
    store.put("proj/uid/0/k.txt", b"hello")
    raw = minio_server.client().get_object(bucket, "root/proj/uid/0/k.txt")
    try:
        assert raw.read() == b"hello"
    finally:
        raw.close()
        raw.release_conn()
