"""tickrun itself as a wheel for images: made once per content of its sources, cached.

Replicas get tickrun the way users do, as one installed distribution (metadata and entry points
included) rather than folders on PYTHONPATH. Where the wheel comes from depends on how the
controller runs:

- from a source tree (an editable install, or a checkout on sys.path): setuptools builds it with
  ``pip wheel --no-build-isolation --no-index`` (offline, with the controller's own setuptools)
  from a private copy of the files the build reads, so the shared tree gets no ``build/`` or
  egg-info and two builds never share a build folder;
- from a regular install: the installed files its RECORD lists are packed back into a wheel with
  ``wheel pack``, metadata as installed.

Either way the cache key is a hash of exactly the files the wheel is made from.
"""

from __future__ import annotations

import importlib.metadata
import importlib.util
import json
import shutil
import sys
import tempfile
import tomllib
from dataclasses import dataclass
from pathlib import Path
from urllib.parse import unquote, urlparse

import tickrun
from tickrun.functions.errors import BuildError

from .hashing import hash_files, iter_files
from .wheels import LogFn, Wheelhouse, cached_wheelhouse, clean_pip_env, run_logged

# Read by setuptools besides the packages (the readme named in pyproject.toml is added to these).
BUILD_FILES = ("pyproject.toml", "setup.py", "setup.cfg", "MANIFEST.in")
LICENSE_GLOBS = ("LICEN[CS]E*", "COPYING*", "NOTICE*", "AUTHORS*")  # setuptools' defaults
# Written by the installer, not part of the distribution (``wheel pack`` writes a new RECORD).
INSTALLER_FILES = {"RECORD", "INSTALLER", "REQUESTED", "direct_url.json"}
# Zip timestamps from this instead of the clock: the same sources give the same wheel bytes.
SOURCE_DATE_EPOCH = "315532800"  # 1980-01-01, the earliest a zip can hold


@dataclass(frozen=True)
class Sources:
    """The files a tickrun wheel is made from: ``files`` below ``root``.

    ``installed``: ``root`` is a site-packages folder and ``files`` an installed distribution's
    (packed back as they are); otherwise ``root`` is a source tree that setuptools builds.
    """

    root: Path
    files: tuple[Path, ...]
    installed: bool

    def content_hash(self) -> str:
        return hash_files(self.root, self.files)


def locate() -> Sources:
    """The sources of the tickrun this process runs."""
    root = _source_root()
    if root is not None:
        return source_tree(root)
    try:
        dist = importlib.metadata.distribution("tickrun")
    except importlib.metadata.PackageNotFoundError as exc:
        raise BuildError(
            "cannot make a tickrun wheel for the image: tickrun is neither installed nor run "
            "from a source tree with pyproject.toml"
        ) from exc
    return installed(dist)


def _has_build_file(folder: Path) -> bool:
    return (folder / "pyproject.toml").is_file() or (folder / "setup.py").is_file()


def _source_root() -> Path | None:
    # The folder above the imported package first: it is what this process runs, even when a
    # checkout on sys.path shadows an install.
    here = Path(tickrun.__file__).resolve().parent.parent
    if _has_build_file(here):
        return here
    try:
        text = importlib.metadata.distribution("tickrun").read_text("direct_url.json")
    except importlib.metadata.PackageNotFoundError:
        return None
    if not text:
        return None
    info = json.loads(text)
    url = urlparse(str(info.get("url", "")))
    if not info.get("dir_info", {}).get("editable") or url.scheme != "file":
        return None
    root = Path(unquote(url.path))
    return root if _has_build_file(root) else None


def package_dirs(root: Path) -> list[Path]:
    """The folders of ``root`` that make up the ``tickrun`` package, as the import system maps
    them (setup.py's ``package_dir``): ``tickrun/`` and each top-level folder that is importable
    as ``tickrun.<folder>`` from that very folder. Tests, benchmarks and docs are not."""
    dirs = [Path(p).resolve() for p in tickrun.__path__]
    for child in sorted(root.iterdir()):
        if not child.is_dir() or not child.name.isidentifier() or child.resolve() in dirs:
            continue
        spec = importlib.util.find_spec(f"tickrun.{child.name}")
        locations = spec.submodule_search_locations if spec is not None else None
        if locations and child.resolve() in {Path(p).resolve() for p in locations}:
            dirs.append(child.resolve())
    outside = [d for d in dirs if not d.is_relative_to(root)]
    if outside:
        raise BuildError(f"tickrun's package folder {outside[0]} is outside its source tree {root}")
    return dirs


def source_tree(root: Path, packages: list[Path] | None = None) -> Sources:
    """A source tree's build files and the files of its ``packages`` (by default
    :func:`package_dirs`)."""
    root = root.resolve()
    names = set(BUILD_FILES)
    pyproject = root / "pyproject.toml"
    if pyproject.is_file():
        try:
            project = tomllib.loads(pyproject.read_text(encoding="utf-8")).get("project", {})
        except tomllib.TOMLDecodeError as exc:
            raise BuildError(f"{pyproject} is not valid TOML: {exc}") from exc
        named = project.get("readme")
        names.add(named.get("file", "") if isinstance(named, dict) else str(named or ""))
    tops = {root / n for n in names if n and (root / n).is_file()}
    tops |= {p for g in LICENSE_GLOBS for p in root.glob(g) if p.is_file()}
    files = sorted(tops)
    for folder in packages if packages is not None else package_dirs(root):
        files.extend(iter_files(folder.resolve()))
    return Sources(root, tuple(files), installed=False)


def installed(dist: importlib.metadata.Distribution) -> Sources:
    """An installed distribution's own files (no scripts outside site-packages, no bytecode, no
    installer records)."""
    if dist.files is None:
        raise BuildError("the installed tickrun has no RECORD: reinstall it with pip")
    root = Path(str(dist.locate_file(""))).resolve()
    files = []
    for rel in dist.files:
        parts = rel.parts
        if parts[0] == ".." or "__pycache__" in parts or rel.suffix in (".pyc", ".pyo"):
            continue
        if parts[0].endswith(".dist-info") and rel.name in INSTALLER_FILES:
            continue
        files.append(root / rel)
    return Sources(root, tuple(sorted(files)), installed=True)


def tickrun_wheel(
    cache: Path, log: LogFn, sources: Sources | None = None, *, timeout_s: float = 600
) -> Wheelhouse:
    """A wheelhouse holding the tickrun wheel made from ``sources`` (by default
    :func:`locate`), built once per content hash of those sources."""
    sources = sources or locate()
    digest = sources.content_hash()
    house, cached = cached_wheelhouse(
        cache,
        f"tickrun-{digest[:24]}",
        lambda wheels: _make_wheel(sources, digest, wheels, log, timeout_s),
    )
    [wheel] = house.wheels.glob("*.whl")
    size = wheel.stat().st_size / (1 << 20)
    log(f"tickrun wheel {wheel.name} ({size:.1f} MiB) {'cached' if cached else 'built'}")
    return house


def _make_wheel(sources: Sources, key_hash: str, dest: Path, log: LogFn, timeout_s: float) -> None:
    dest = dest.resolve()  # the command runs in the staging folder
    with tempfile.TemporaryDirectory(prefix="src-", dir=dest.parent) as tmp:
        staging = Path(tmp)
        for path in sources.files:
            target = staging / path.relative_to(sources.root)
            target.parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(path, target, follow_symlinks=False)
        copied = (staging / p.relative_to(sources.root) for p in sources.files)
        if hash_files(staging, copied) != key_hash:
            # Edited between hashing and copying: this wheel would be cached under the old hash.
            raise BuildError(
                "tickrun's sources changed while its wheel was being made; deploy again"
            )
        env = {**clean_pip_env(), "SOURCE_DATE_EPOCH": SOURCE_DATE_EPOCH}
        if sources.installed:
            if importlib.util.find_spec("wheel") is None:
                raise BuildError(
                    "packing the installed tickrun into a wheel for images needs the `wheel` "
                    "package: pip install 'tickrun[controller]'"
                )
            log(f"tickrun: packing the installed distribution in {sources.root}")
            cmd = [sys.executable, "-m", "wheel", "pack", "-d", str(dest), str(staging)]
            what = "packing the tickrun wheel"
        else:
            log(f"tickrun: building a wheel from {sources.root}")
            cmd = [
                sys.executable,
                "-m",
                "pip",
                "wheel",
                "--no-deps",
                "--no-build-isolation",
                # pyproject's build requirements, checked against what is installed here: an
                # old setuptools fails with that said, not with a metadata error
                "--check-build-dependencies",
                "--no-index",
                "--progress-bar",
                "off",
                "-w",
                str(dest),
                str(staging),
            ]
            what = "building the tickrun wheel"
        run_logged(cmd, log, env=env, cwd=staging, timeout_s=timeout_s, what=what)
    made = [p.name for p in dest.iterdir()]
    if len(made) != 1 or not made[0].endswith(".whl"):
        raise BuildError(f"the tickrun wheel build left {made or 'nothing'} instead of one wheel")
