"""The local store copies a file once, hashing as it goes: byte-exact copies and the file's
sha256, whatever the chunking, the writer's short writes or the file's size."""

from __future__ import annotations

import hashlib
import io
import os
from pathlib import Path

import pytest

from tickrun.functions.artifacts import LocalArtifactStore
from tickrun.functions.artifacts.local import COPY_CHUNK_BYTES, copy_hashing


@pytest.mark.parametrize(
    "size", [0, 1, COPY_CHUNK_BYTES - 1, COPY_CHUNK_BYTES, 3 * COPY_CHUNK_BYTES + 12345]
)
def test_put_file_is_byte_exact_with_the_files_sha256(tmp_path: Path, size: int) -> None:
    data = os.urandom(size)
    src = tmp_path / "src.bin"
    src.write_bytes(data)
    store = LocalArtifactStore(tmp_path / "store")
    info = store.put_file("p/u/0/blob.bin", src)
    assert info.size_bytes == size
    assert info.sha256 == hashlib.sha256(data).hexdigest()
    assert Path(info.url).read_bytes() == data
    # no temp file left beside it
    assert sorted(p.name for p in Path(info.url).parent.iterdir()) == ["blob.bin"]


class Trickle(io.RawIOBase):
    """A writer that takes at most 1000 bytes a call, as an unbuffered file may."""

    def __init__(self) -> None:
        self.got = bytearray()

    def writable(self) -> bool:
        return True

    def write(self, b: object) -> int:
        chunk = bytes(memoryview(b))[:1000]  # type: ignore[arg-type]
        self.got += chunk
        return len(chunk)


def test_copy_survives_short_writes(tmp_path: Path) -> None:
    data = os.urandom(COPY_CHUNK_BYTES + 4321)
    out = Trickle()
    digest = hashlib.sha256()
    with io.BytesIO(data) as src:
        assert copy_hashing(src, out, digest) == len(data)  # type: ignore[arg-type]
    assert bytes(out.got) == data
    assert digest.hexdigest() == hashlib.sha256(data).hexdigest()


def test_a_stream_without_readinto_is_copied_too(tmp_path: Path) -> None:
    class ReadOnly:
        def __init__(self, data: bytes) -> None:
            self._f = io.BytesIO(data)

        def read(self, n: int = -1) -> bytes:
            return self._f.read(min(n, 777) if n > 0 else n)

    data = os.urandom(50_000)
    info = LocalArtifactStore(tmp_path).put_stream("k/x.bin", ReadOnly(data))  # type: ignore[arg-type]
    assert (info.size_bytes, info.sha256) == (len(data), hashlib.sha256(data).hexdigest())
    assert Path(info.url).read_bytes() == data
