"""The tickrun wheel images install: built by setuptools / packed by ``wheel``, for real."""

from __future__ import annotations

import importlib.metadata
import subprocess
import sys
import zipfile
from collections.abc import Callable
from pathlib import Path

import pytest

from tickrun.controller.builder import selfwheel
from tickrun.controller.builder.wheels import Wheelhouse, cached_wheelhouse, clean_pip_env
from tickrun.functions.errors import BuildError

TreeMaker = Callable[[Path, dict[str, str]], Path]  # the make_tree fixture (conftest.py)
REPO = Path(__file__).resolve().parents[4]

FAKE_PYPROJECT = """
[build-system]
requires = ["setuptools>=77"]
build-backend = "setuptools.build_meta"

[project]
name = "fakepkg"
version = "1.2.3"
readme = "README.md"

[tool.setuptools]
package-dir = {"fakepkg" = "fakepkg", "fakepkg.sub" = "sub"}
packages = ["fakepkg", "fakepkg.sub"]
"""


def _wheel(house: Wheelhouse) -> zipfile.ZipFile:
    [path] = house.wheels.glob("*.whl")
    return zipfile.ZipFile(path)


def _fake(root: Path) -> selfwheel.Sources:
    return selfwheel.source_tree(root, [root / "fakepkg", root / "sub"])


def test_the_wheel_is_cached_by_the_content_of_its_sources(
    tmp_path: Path, make_tree: TreeMaker
) -> None:
    root = make_tree(
        tmp_path / "src",
        {
            "pyproject.toml": FAKE_PYPROJECT,
            "README.md": "# fake\n",
            "notes.txt": "not read by the build",
            "fakepkg/__init__.py": "",
            "sub/__init__.py": "",
            "sub/mod.py": "VALUE = 1\n",
            "tests/test_sub.py": "def test(): pass\n",
        },
    )
    sources = _fake(root)
    rels = {p.relative_to(root).as_posix() for p in sources.files}
    assert rels == {
        "pyproject.toml",
        "README.md",
        "fakepkg/__init__.py",
        "sub/__init__.py",
        "sub/mod.py",
    }
    cache = tmp_path / "cache"
    logs: list[str] = []
    first = selfwheel.tickrun_wheel(cache, logs.append, sources)
    assert any("building a wheel" in line for line in logs) and "built" in logs[-1]
    assert first.lock.read_text().startswith("fakepkg==1.2.3 --hash=sha256:")
    with _wheel(first) as whl:
        assert whl.read("fakepkg/sub/mod.py") == b"VALUE = 1\n"
        assert "Name: fakepkg" in whl.read("fakepkg-1.2.3.dist-info/METADATA").decode()
    # built from a private copy: the source tree gets no build/ or egg-info
    assert sorted(p.name for p in root.iterdir()) == [
        "README.md",
        "fakepkg",
        "notes.txt",
        "pyproject.toml",
        "sub",
        "tests",
    ]

    logs.clear()
    again = selfwheel.tickrun_wheel(cache, logs.append, _fake(root))
    assert again == first
    assert len(logs) == 1 and "cached" in logs[0]  # no build ran

    (root / "notes.txt").write_text("changed, but not a source")
    assert selfwheel.tickrun_wheel(cache, logs.append, _fake(root)) == first

    (root / "sub" / "mod.py").write_text("VALUE = 2\n")
    changed = selfwheel.tickrun_wheel(cache, logs.append, _fake(root))
    assert changed.path != first.path and changed.lock_hash != first.lock_hash
    with _wheel(changed) as whl:
        assert whl.read("fakepkg/sub/mod.py") == b"VALUE = 2\n"
    assert sorted(p.name for p in cache.iterdir()) == sorted([first.path.name, changed.path.name])


def test_sources_edited_after_hashing_are_not_cached_under_the_old_hash(
    tmp_path: Path, make_tree: TreeMaker
) -> None:
    root = make_tree(
        tmp_path / "src",
        {"pyproject.toml": FAKE_PYPROJECT, "fakepkg/__init__.py": "", "sub/mod.py": "A = 1\n"},
    )
    sources = _fake(root)
    digest = sources.content_hash()
    (root / "sub" / "mod.py").write_text("A = 2\n")  # between the hash and the copy
    cache = tmp_path / "cache"
    with pytest.raises(BuildError, match="changed while its wheel was being made"):
        cached_wheelhouse(
            cache, "k", lambda wheels: selfwheel._make_wheel(sources, digest, wheels, print, 60)
        )
    assert list(cache.iterdir()) == []


def test_the_repo_is_found_with_the_folders_setup_py_maps() -> None:
    sources = selfwheel.locate()
    assert sources.root == REPO and not sources.installed
    tops = {p.relative_to(REPO).parts[0] for p in sources.files}
    assert tops == {
        "pyproject.toml",
        "setup.py",
        "README.md",
        "tickrun",
        "functions",
        "triggers",
        "controller",
        "hub",
    }
    assert {p.name for p in selfwheel.package_dirs(REPO)} == {
        "tickrun",
        "functions",
        "triggers",
        "controller",
        "hub",
    }


@pytest.mark.slow
def test_the_tickrun_wheel_installs_and_a_regular_install_packs_back_the_same(
    tmp_path: Path,
) -> None:
    built = selfwheel.tickrun_wheel(tmp_path / "cache", lambda _: None)
    [whl] = built.wheels.glob("*.whl")
    version = importlib.metadata.version("tickrun")
    dist_info = f"tickrun-{version}.dist-info"
    with zipfile.ZipFile(whl) as z:
        names = set(z.namelist())
        metadata = z.read(f"{dist_info}/METADATA")
        entry_points = z.read(f"{dist_info}/entry_points.txt")
    for name in (
        "tickrun/cli.py",
        "tickrun/functions/spec/__init__.py",
        "tickrun/triggers/http/__init__.py",
        "tickrun/controller/builder/selfwheel.py",
        "tickrun/hub/data/btcusdt_1h.csv.gz",
    ):
        assert name in names, name
    assert not [n for n in names if n.startswith(("tests/", "bench/")) or n.endswith(".pyc")]
    assert f"Name: tickrun\nVersion: {version}\n".encode() in metadata
    assert b"[tickrun.triggers]" in entry_points

    site = tmp_path / "site"
    pip = [sys.executable, "-m", "pip", "install", "-q", "--no-index", "--no-deps"]
    subprocess.run([*pip, "--target", str(site), str(whl)], check=True, env=clean_pip_env())
    probe = (
        f"import sys; sys.path.insert(0, {str(site)!r}); "
        "import tickrun.functions, tickrun.triggers.http; "
        "print(tickrun.functions.__file__); print(tickrun.triggers.http.__file__)"
    )
    out = subprocess.run(
        [sys.executable, "-c", probe], check=True, capture_output=True, text=True, cwd=tmp_path
    ).stdout.split()
    assert out == [
        str(site / "tickrun" / "functions" / "__init__.py"),
        str(site / "tickrun" / "triggers" / "http" / "__init__.py"),
    ]

    # a controller running from that install finds it as a regular install, not a source tree
    probe = (
        f"import sys; sys.path.insert(0, {str(site)!r}); "
        "from tickrun.controller.builder import selfwheel; "
        "s = selfwheel.locate(); print(s.root, s.installed, len(s.files))"
    )
    out = subprocess.run(
        [sys.executable, "-c", probe], check=True, capture_output=True, text=True, cwd=tmp_path
    ).stdout.split()
    assert out[:2] == [str(site.resolve()), "True"]
    dist = importlib.metadata.Distribution.at(site / dist_info)
    sources = selfwheel.installed(dist)
    assert sources.installed and sources.root == site.resolve()
    assert not [p for p in sources.files if "__pycache__" in p.parts or p.name == "INSTALLER"]
    assert int(out[2]) == len(sources.files)
    packed = selfwheel.tickrun_wheel(tmp_path / "cache2", lambda _: None, sources)
    with _wheel(packed) as z:
        assert set(z.namelist()) == names
        assert z.read(f"{dist_info}/METADATA") == metadata
        assert z.read(f"{dist_info}/entry_points.txt") == entry_points
