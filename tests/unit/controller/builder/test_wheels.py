from __future__ import annotations

import threading
from pathlib import Path

import pytest

from tickrun.controller.builder.wheels import Wheelhouse, _write_lock, cached_wheelhouse, resolve


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


def test_racing_builds_of_one_wheelhouse_leave_one_complete_folder(tmp_path: Path) -> None:
    both_filling = threading.Barrier(2, timeout=10)
    fills: list[str] = []

    def fill(wheels: Path) -> None:
        fills.append(threading.current_thread().name)
        both_filling.wait()  # neither has published yet: a true race for the rename
        (wheels / f"w{len(fills)}-1.0-py3-none-any.whl").write_bytes(b"wheel")

    out: dict[str, tuple[Wheelhouse, bool]] = {}

    def build() -> None:
        out[threading.current_thread().name] = cached_wheelhouse(tmp_path, "key", fill)

    threads = [threading.Thread(target=build, name=f"t{i}") for i in range(2)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(20)
    assert sorted(fills) == ["t0", "t1"]
    (first, _), (second, _) = out.values()
    assert first == second  # the loser returns the winner's wheelhouse
    assert [p.name for p in tmp_path.iterdir()] == ["key"]  # no temp folder left behind
    [wheel] = (tmp_path / "key" / "wheels").iterdir()
    assert wheel.name.split("-")[0] in first.lock.read_text()
    assert cached_wheelhouse(tmp_path, "key", fill) == (first, True)
    assert len(fills) == 2  # the cached call did not fill again


def test_a_failed_fill_leaves_nothing_cached(tmp_path: Path) -> None:
    def fail(wheels: Path) -> None:
        (wheels / "half.whl").write_bytes(b"")
        raise OSError("disk full")

    with pytest.raises(OSError, match="disk full"):
        cached_wheelhouse(tmp_path, "key", fail)
    assert list(tmp_path.iterdir()) == []
