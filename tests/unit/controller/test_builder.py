from __future__ import annotations

import io
import stat
import tarfile
import tracemalloc
from pathlib import Path

import pytest

from tickrun.controller.builder import image
from tickrun.controller.builder.hashing import hash_tree, pack_dir, unpack
from tickrun.controller.builder.wheels import Wheelhouse, _write_lock, resolve
from tickrun.functions.errors import BodyTooLargeError, SpecError
from tickrun.functions.spec import parse_spec


def _tree(root: Path, files: dict[str, str]) -> Path:
    for rel, text in files.items():
        (root / rel).parent.mkdir(parents=True, exist_ok=True)
        (root / rel).write_text(text)
    return root


def test_hash_tree_ignores_caches_and_mtimes_but_not_content(tmp_path: Path) -> None:
    a = _tree(tmp_path / "a", {"main.py": "x = 1", "pkg/m.py": "y", "__pycache__/m.pyc": "z"})
    b = _tree(tmp_path / "b", {"main.py": "x = 1", "pkg/m.py": "y"})
    assert hash_tree(a) == hash_tree(b)
    (b / "main.py").write_text("x = 2")
    assert hash_tree(a) != hash_tree(b)


def test_pack_is_deterministic_and_round_trips(tmp_path: Path) -> None:
    src = _tree(tmp_path / "src", {"main.py": "print(1)", "data/a.txt": "a", ".git/HEAD": "r"})
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


def test_unpacked_code_is_private_and_hashing_streams(tmp_path: Path) -> None:
    src = _tree(tmp_path / "src", {"main.py": "x", "bin/run.sh": "#!/bin/sh\n"})
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


def test_lock_pins_name_version_and_hash(tmp_path: Path) -> None:
    wheels = tmp_path / "w"
    wheels.mkdir()
    (wheels / "Foo_Bar-1.2.3-py3-none-any.whl").write_bytes(b"wheel")
    _write_lock(wheels, tmp_path / "lock")
    line = (tmp_path / "lock").read_text().strip()
    assert line.startswith("foo-bar==1.2.3 --hash=sha256:")
    assert len(line.split("sha256:")[1]) == 64


def test_resolve_without_requirements_needs_no_network_and_is_cached(tmp_path: Path) -> None:
    logs: list[str] = []
    first = resolve([], tmp_path, target="image", log=logs.append)
    second = resolve([], tmp_path, target="image", log=logs.append)
    assert first == second and first.lock.read_text() == ""
    assert "cached" in logs[-1]


def _house(tmp_path: Path, name: str, lock: str) -> Wheelhouse:
    (tmp_path / name / "wheels").mkdir(parents=True)
    (tmp_path / name / "requirements.lock").write_text(lock)
    return Wheelhouse(tmp_path / name, f"hash-{lock}")


def test_containerfile_layers_put_code_last_and_commands_before_it(tmp_path: Path) -> None:
    spec = parse_spec(
        {
            "metadata": {"name": "f"},
            "spec": {
                "handler": "main:handler",
                "build": {"commands": ["apt-get -v", "echo hi > x"]},
            },
        }
    )
    text = image.containerfile(spec, "localhost/base:3.11", has_requirements=True)
    lines = text.splitlines()
    assert lines[0] == "FROM localhost/base:3.11"
    idx = {
        key: next(i for i, ln in enumerate(lines) if ln.startswith(key))
        for key in (
            "COPY runtime.lock",
            "COPY requirements.lock",
            "RUN apt-get -v",
            "COPY lib",
            "COPY function",
        )
    }
    assert (
        idx["COPY runtime.lock"]
        < idx["COPY requirements.lock"]
        < idx["RUN apt-get -v"]
        < idx["COPY lib"]
        < idx["COPY function"]
    )
    assert "--require-hashes" in text and "--no-index" in text
    assert "COPY requirements.lock" not in image.containerfile(spec, "b", has_requirements=False)


def test_plan_hash_changes_with_code_not_with_mtime(tmp_path: Path) -> None:
    spec = parse_spec({"metadata": {"name": "f"}})
    code = _tree(tmp_path / "code", {"main.py": "def handler(c, e): return 1"})
    runtime = _house(tmp_path, "rt", "aiohttp==1 --hash=sha256:00\n")
    reqs = _house(tmp_path, "rq", "")
    first = image.plan(spec, code, "base", runtime, reqs)
    assert image.plan(spec, code, "base", runtime, reqs) == first
    assert image.plan(spec, code, "other-base", runtime, reqs).content_hash != first.content_hash
    (code / "main.py").write_text("def handler(c, e): return 2")
    assert image.plan(spec, code, "base", runtime, reqs).content_hash != first.content_hash


def test_write_context_has_everything_the_containerfile_copies(tmp_path: Path) -> None:
    spec = parse_spec({"metadata": {"name": "f"}})
    code = _tree(tmp_path / "code", {"main.py": "x", "function.yaml": "metadata: {name: f}"})
    runtime = _house(tmp_path, "rt", "")
    (runtime.wheels / "a-1-py3-none-any.whl").write_bytes(b"w")
    reqs = _house(tmp_path, "rq", "")
    plan = image.plan(spec, code, "base", runtime, reqs)
    ctx = tmp_path / "ctx"
    image.write_context(ctx, plan, code, runtime, reqs)
    assert (ctx / "Containerfile").read_text() == plan.containerfile
    assert (ctx / "runtime-wheels" / "a-1-py3-none-any.whl").read_bytes() == b"w"
    assert (ctx / "function" / "main.py").read_text() == "x"
    assert (ctx / "lib" / "tickrun" / "functions" / "processor" / "supervisor.py").is_file()
    assert (ctx / "lib" / "tickrun" / "triggers" / "http").is_dir()
    assert not (ctx / "lib" / "tickrun" / "controller").exists()  # not needed in a replica
