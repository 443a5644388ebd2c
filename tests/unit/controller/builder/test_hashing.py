from __future__ import annotations

import io
import stat
import tarfile
import tracemalloc
from collections.abc import Callable
from pathlib import Path

import pytest

from tickrun.controller.builder.hashing import hash_tree, pack_dir, unpack
from tickrun.functions.errors import BodyTooLargeError, SpecError

TreeMaker = Callable[[Path, dict[str, str]], Path]  # the make_tree fixture (conftest.py)


def test_hash_tree_ignores_caches_and_mtimes_but_not_content(
    tmp_path: Path, make_tree: TreeMaker
) -> None:
    a = make_tree(tmp_path / "a", {"main.py": "x = 1", "pkg/m.py": "y", "__pycache__/m.pyc": "z"})
    b = make_tree(tmp_path / "b", {"main.py": "x = 1", "pkg/m.py": "y"})
    assert hash_tree(a) == hash_tree(b)
    (b / "main.py").write_text("x = 2")
    assert hash_tree(a) != hash_tree(b)


def test_pack_is_deterministic_and_round_trips(tmp_path: Path, make_tree: TreeMaker) -> None:
    src = make_tree(tmp_path / "src", {"main.py": "print(1)", "data/a.txt": "a", ".git/HEAD": "r"})
    assert pack_dir(src) == pack_dir(src)
    unpack(pack_dir(src), tmp_path / "out")
    assert (tmp_path / "out" / "data" / "a.txt").read_text() == "a"
    assert not (tmp_path / "out" / ".git").exists()


def test_unpack_refuses_paths_escaping_the_folder(tmp_path: Path) -> None:
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w:gz") as tar:
        info = tarfile.TarInfo("../evil.py")
        info.size = 1
        tar.addfile(info, io.BytesIO(b"x"))
    with pytest.raises(SpecError, match="archive is invalid"):
        unpack(buf.getvalue(), tmp_path / "out")
    assert not (tmp_path / "evil.py").exists()
    with pytest.raises(SpecError):
        unpack(b"not a tarball", tmp_path / "out2")


class _Zeros:
    """``size`` zero bytes, made as they are read (the bomb never sits in memory)."""

    def __init__(self, size: int) -> None:
        self.left = size

    def read(self, n: int = -1) -> bytes:
        n = self.left if n < 0 else min(n, self.left)
        self.left -= n
        return bytes(n)


def _bomb(size: int) -> bytes:
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w:gz", compresslevel=9) as tar:
        info = tarfile.TarInfo("zeros.bin")
        info.size = size
        tar.addfile(info, _Zeros(size))
    return buf.getvalue()


def test_a_tar_bomb_is_refused_before_anything_is_written(tmp_path: Path) -> None:
    archive = _bomb(300 * 1024 * 1024)
    assert len(archive) < 400 * 1024  # ~300 KB that would unpack to 300 MiB
    tracemalloc.start()
    try:
        with pytest.raises(BodyTooLargeError, match="unpacks to more than 256 MiB") as err:
            unpack(archive, tmp_path / "out")
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert err.value.status == 413
    assert peak < 16 * 1024 * 1024
    assert list((tmp_path / "out").iterdir()) == []


def test_an_archive_of_too_many_entries_is_refused(tmp_path: Path) -> None:
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w:gz") as tar:
        for i in range(30):
            tar.addfile(tarfile.TarInfo(f"f{i}.py"), io.BytesIO(b""))
    with pytest.raises(BodyTooLargeError, match="more than 20 entries"):
        unpack(buf.getvalue(), tmp_path / "out", max_files=20)
    unpack(buf.getvalue(), tmp_path / "ok", max_files=30)
    assert len(list((tmp_path / "ok").iterdir())) == 30


def test_unpacked_code_is_private_and_hashing_streams(tmp_path: Path, make_tree: TreeMaker) -> None:
    src = make_tree(tmp_path / "src", {"main.py": "x", "bin/run.sh": "#!/bin/sh\n"})
    (src / "bin" / "run.sh").chmod(0o755)
    (src / "big.bin").write_bytes(b"\1" * (48 * 1024 * 1024))
    out = tmp_path / "out"
    unpack(pack_dir(src), out)
    assert stat.S_IMODE(out.stat().st_mode) == 0o700
    assert stat.S_IMODE((out / "bin").stat().st_mode) == 0o700
    assert stat.S_IMODE((out / "main.py").stat().st_mode) == 0o600
    assert stat.S_IMODE((out / "bin" / "run.sh").stat().st_mode) == 0o700
    tracemalloc.start()
    try:
        digest = hash_tree(out)
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert digest == hash_tree(src)  # modes kept as far as the hash sees them (executable)
    assert peak < 8 * 1024 * 1024  # the 48 MiB file was hashed in chunks
