"""The local store's big-file path: a kernel copy into the store, the stored copy's sha256
computed on the hashing thread. The copy is the file as it was during the call, the digest is
the stored bytes' hash, a failing hash is an error of the future, small files are hashed in
line, and the folders written through open descriptors stay inside the root."""

from __future__ import annotations

import errno
import hashlib
import os
import tempfile
import threading
from concurrent.futures import Future
from pathlib import Path

import pytest

from tickrun.functions.artifacts import LocalArtifactStore
from tickrun.functions.artifacts import hashing as hashing_mod
from tickrun.functions.artifacts import local as local_mod
from tickrun.functions.artifacts.hashing import ArtifactHashError, digest_later
from tickrun.functions.artifacts.local import DEFER_HASH_MIN_BYTES, kernel_copy
from tickrun.functions.errors import ArtifactError

MB = 1024 * 1024


def hold_hashing_thread(monkeypatch: pytest.MonkeyPatch) -> tuple[threading.Event, Future[str]]:
    """Keep the hashing thread busy until the returned event is set: what is submitted
    meanwhile waits for it."""
    gate = threading.Event()
    real = hashing_mod.digest_fd

    def gated(fd: int, size: int) -> str:
        gate.wait(10)
        return real(fd, size)

    monkeypatch.setattr(hashing_mod, "digest_fd", gated)
    with tempfile.TemporaryFile() as f:
        f.write(b"x")
        f.flush()
        fd = os.dup(f.fileno())
    return gate, digest_later(fd, 1)


@pytest.mark.parametrize("size", [DEFER_HASH_MIN_BYTES, 3 * MB + 17])
def test_big_file_is_stored_at_once_and_hashed_later(tmp_path: Path, size: int) -> None:
    data = os.urandom(size)
    src = tmp_path / "src.bin"
    src.write_bytes(data)
    store = LocalArtifactStore(tmp_path / "store")
    info, pending = store.put_file_deferred("p/u/0/blob.bin", src)
    assert pending is not None and info.sha256 is None
    assert info.size_bytes == size
    assert Path(info.url) == tmp_path / "store" / "p" / "u" / "0" / "blob.bin"
    assert Path(info.url).read_bytes() == data
    assert pending.result(10) == hashlib.sha256(data).hexdigest()
    assert sorted(p.name for p in Path(info.url).parent.iterdir()) == ["blob.bin"]


def test_the_stored_copy_and_its_hash_ignore_later_edits(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    data = os.urandom(2 * MB)
    src = tmp_path / "src.bin"
    src.write_bytes(data)
    store = LocalArtifactStore(tmp_path / "store")
    gate, held = hold_hashing_thread(monkeypatch)
    try:
        info, pending = store.put_file_deferred("p/u/0/blob.bin", src)
        assert pending is not None and not pending.done()  # the hash has not run yet
        # The user rewrites the source in place, then the store's name is replaced too.
        with src.open("r+b") as f:
            f.write(b"\0" * MB)
        store.put("p/u/0/blob.bin", b"another object under the same key")
    finally:
        gate.set()
    assert held.result(10) == hashlib.sha256(b"x").hexdigest()
    # The digest is of the bytes this call stored (the inode it wrote), not of the edits.
    assert pending.result(10) == hashlib.sha256(data).hexdigest()
    assert info.size_bytes == len(data)


def test_a_failing_hash_fails_the_future(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    def broken(fd: int, size: int) -> str:
        raise OSError(errno.EIO, "Input/output error")

    monkeypatch.setattr(hashing_mod, "digest_fd", broken)
    src = tmp_path / "src.bin"
    src.write_bytes(os.urandom(MB))
    info, pending = LocalArtifactStore(tmp_path / "s").put_file_deferred("k/b.bin", src)
    assert pending is not None
    with pytest.raises(ArtifactHashError, match="Input/output error"):
        pending.result(10)
    assert Path(info.url).read_bytes() == src.read_bytes()  # the copy itself is stored


def test_a_copy_that_changed_size_is_a_hash_error(tmp_path: Path) -> None:
    path = tmp_path / "f"
    path.write_bytes(b"12345")
    fd = os.open(path, os.O_RDONLY)
    with pytest.raises(ArtifactHashError, match="holds 5 bytes, 9 were written"):
        digest_later(fd, 9).result(10)


def test_small_files_are_hashed_in_line(tmp_path: Path) -> None:
    data = os.urandom(DEFER_HASH_MIN_BYTES - 1)
    src = tmp_path / "src.bin"
    src.write_bytes(data)
    info, pending = LocalArtifactStore(tmp_path / "s").put_file_deferred("k/b.bin", src)
    assert pending is None
    assert info.sha256 == hashlib.sha256(data).hexdigest()
    assert Path(info.url).read_bytes() == data


def test_missing_source_is_not_found(tmp_path: Path) -> None:
    from tickrun.functions.artifacts import ArtifactNotFoundError

    with pytest.raises(ArtifactNotFoundError):
        LocalArtifactStore(tmp_path).put_file_deferred("k/b.bin", tmp_path / "nope")


@pytest.mark.parametrize("refused", ["copy_file_range", "sendfile"])
def test_kernel_copy_falls_back(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, refused: str
) -> None:
    def no(*args: object) -> int:
        raise OSError(errno.EXDEV, "Invalid cross-device link")

    monkeypatch.setattr(local_mod.os, "copy_file_range", no)
    if refused == "sendfile":
        monkeypatch.setattr(local_mod.os, "sendfile", no)
    data = os.urandom(MB + 5)
    (tmp_path / "a").write_bytes(data)
    src = os.open(tmp_path / "a", os.O_RDONLY)
    out = os.open(tmp_path / "b", os.O_WRONLY | os.O_CREAT)
    try:
        assert kernel_copy(src, out) == len(data)
    finally:
        os.close(src)
        os.close(out)
    assert (tmp_path / "b").read_bytes() == data


def test_a_folder_deleted_meanwhile_is_created_again(tmp_path: Path) -> None:
    import shutil

    src = tmp_path / "src.bin"
    src.write_bytes(os.urandom(MB))
    store = LocalArtifactStore(tmp_path / "s")
    info, pending = store.put_file_deferred("p/u/0/a.bin", src)
    assert pending is not None
    pending.result(10)
    shutil.rmtree(tmp_path / "s" / "p")
    info, pending = store.put_file_deferred("p/u/0/b.bin", src)
    assert pending is not None
    assert pending.result(10) == hashlib.sha256(src.read_bytes()).hexdigest()
    assert Path(info.url).read_bytes() == src.read_bytes()


def test_a_folder_symlinked_out_of_the_root_is_refused(tmp_path: Path) -> None:
    outside = tmp_path / "outside"
    outside.mkdir()
    (tmp_path / "s" / "p").mkdir(parents=True)
    (tmp_path / "s" / "p" / "u").symlink_to(outside)
    src = tmp_path / "src.bin"
    src.write_bytes(os.urandom(MB))
    with pytest.raises(ArtifactError, match="outside the store root"):
        LocalArtifactStore(tmp_path / "s").put_file_deferred("p/u/0/a.bin", src)
    assert list(outside.iterdir()) == []


def hold_the_thread_only(monkeypatch: pytest.MonkeyPatch) -> tuple[threading.Event, object]:
    """The hashing thread blocks in its next hash until the event is set; hashes computed by
    other threads (waiters, a caller past the queue's bound) run at once."""
    gate, entered = threading.Event(), threading.Event()
    real = hashing_mod.digest_fd

    def gated(fd: int, size: int) -> str:
        if threading.current_thread().name == "tickrun-hash":
            entered.set()
            gate.wait(30)
        return real(fd, size)

    monkeypatch.setattr(hashing_mod, "digest_fd", gated)
    with tempfile.TemporaryFile() as f:
        f.write(b"x")
        f.flush()
        fd = os.dup(f.fileno())
    held = digest_later(fd, 1)
    assert entered.wait(30)  # the thread is in it: what comes next stays queued
    return gate, held


def _open_copy(tmp_path: Path, name: str, data: bytes) -> int:
    path = tmp_path / name
    path.write_bytes(data)
    return os.open(path, os.O_RDONLY | os.O_CLOEXEC)


def test_a_waiter_computes_a_hash_the_thread_has_not_started(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    gate, held = hold_the_thread_only(monkeypatch)
    try:
        data = [os.urandom(MB + i) for i in range(3)]
        digests = [
            digest_later(_open_copy(tmp_path, f"f{i}", d), len(d)) for i, d in enumerate(data)
        ]
        # Newest first, as commit() settles: each is computed here, the thread still held.
        for d, want in reversed(list(zip(digests, data, strict=True))):
            assert d.result(30) == hashlib.sha256(want).hexdigest()
        assert not held.done()
    finally:
        gate.set()
    assert held.result(30) == hashlib.sha256(b"x").hexdigest()


def test_past_the_queue_bound_the_caller_hashes_its_own_copy(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    gate, held = hold_the_thread_only(monkeypatch)
    try:
        data = os.urandom(4096)
        queued = [
            digest_later(_open_copy(tmp_path, f"q{i}", data), len(data))
            for i in range(hashing_mod.MAX_PENDING)
        ]
        assert not any(d.done() for d in queued)
        over = digest_later(_open_copy(tmp_path, "over", data), len(data))
        assert over.done()  # hashed before digest_later returned
        assert over.result(0) == hashlib.sha256(data).hexdigest()
        for d in queued:  # and the queued ones are still served, by the waiter
            assert d.result(30) == hashlib.sha256(data).hexdigest()
    finally:
        gate.set()
    held.result(30)
