"""The catalogue index: every item version in a hub folder, generated from the item specs.

Layout of a hub folder: ``<root>/<name>/<version folder>/item.yaml`` plus the item's code. The
version folder's name is free (the version comes from ``item.yaml``); the bundled catalogue uses
``v1_2_0`` because setuptools skips folders with dots in their names when it builds the wheel,
and an identifier makes the code importable as ``tickrun.hub.items.<name>.v1_2_0.<module>``.

The index (``index.json``, also what ``/api/hub`` serves) lists, per item and version, the
summary, the folder and a SHA-256 per file, so a remote client can verify what it caches.

Versions are immutable, so a version found to mislead (a leaky default, a wrong streaming path) is
not edited: ``<root>/deprecations.yaml`` marks it deprecated with a reason, the index carries the
reason (``"deprecated"``), resolution prefers the newest version that is not deprecated and warns
when it hands out one that is, and ``latest`` names the newest version that is not deprecated.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml

from tickrun.functions.errors import SpecError

from .spec import ITEM_FILE, ItemSpec, check_item_file, check_item_name, load_item
from .statcache import Signature, StatCache, signature
from .versions import Version

logger = logging.getLogger(__name__)

INDEX_FILE = "index.json"
DEPRECATIONS_FILE = "deprecations.yaml"
INDEX_SCHEMA = 1
BUNDLED_ROOT = Path(__file__).resolve().parent / "items"
_SHA256 = re.compile(r"^[0-9a-f]{64}$")


@dataclass(frozen=True, slots=True)
class LocalItem:
    spec: ItemSpec
    folder: Path

    @property
    def version(self) -> Version:
        return self.spec.parsed_version


def file_sha256(path: Path) -> str:
    with path.open("rb") as fh:
        return hashlib.file_digest(fh, "sha256").hexdigest()


def scan(root: str | Path) -> list[LocalItem]:
    """Every valid item version under ``root``; invalid ones are errors, not silently skipped."""
    base = Path(root)
    if not base.is_dir():
        raise SpecError(f"hub folder {base} does not exist")
    found: list[LocalItem] = []
    seen: dict[tuple[str, str], Path] = {}
    for item_file in sorted(base.glob(f"*/*/{ITEM_FILE}")):
        folder = item_file.parent
        spec = load_item(folder)
        if spec.name.replace("-", "_") != folder.parent.name.replace("-", "_"):
            raise SpecError(
                f"{item_file}: item name {spec.name!r} does not match its folder "
                f"{folder.parent.name!r}"
            )
        inside = folder.resolve()
        for name in (ITEM_FILE, *spec.code_files):
            if not (folder / name).is_file():
                raise SpecError(f"{item_file}: lists {name!r}, which is missing")
            if not (folder / name).resolve().is_relative_to(inside):
                # A symlink out of the item would be served, cached and exported as its code.
                raise SpecError(f"{item_file}: {name!r} is a link out of the item's folder")
        key = (spec.name, spec.version)
        if key in seen:
            raise SpecError(
                f"{spec.name} {spec.version} is defined twice: {seen[key]} and {folder}"
            )
        seen[key] = folder
        found.append(LocalItem(spec, folder))
    return found


class HubDeprecationWarning(UserWarning):
    """A deprecated item version was resolved (a UserWarning, so Python shows it by default)."""


def load_deprecations(root: str | Path) -> dict[tuple[str, str], str]:
    """(name, version) → why, from ``<root>/deprecations.yaml`` (absent: none)::

    backtest:
      1.0.0: "why a user should move on, and to what"
    """
    path = Path(root) / DEPRECATIONS_FILE
    if not path.is_file():
        return {}
    try:
        data = yaml.safe_load(path.read_text(encoding="utf-8")) or {}
    except yaml.YAMLError as exc:
        raise SpecError(f"{path}: not YAML: {exc}") from exc
    if not isinstance(data, dict):
        raise SpecError(f"{path}: expected a mapping of item name → version → reason")
    found: dict[tuple[str, str], str] = {}
    for name, versions in data.items():
        if not isinstance(versions, dict) or not versions:
            raise SpecError(f"{path}: {name!r} needs a mapping of version → reason")
        for version, why in versions.items():
            try:
                Version.parse(str(version))
            except ValueError as exc:
                raise SpecError(f"{path}: {name}: {exc}") from None
            if not isinstance(why, str) or not why.strip():
                raise SpecError(f"{path}: {name} {version}: the reason must be a non-empty text")
            found[(str(name), str(version))] = why.strip()
    return found


def latest_of(versions: dict[str, dict[str, Any]]) -> str:
    """The newest version that is not deprecated (the newest of all if every one is)."""
    ordered = sorted(versions, key=Version.parse, reverse=True)
    live = [v for v in ordered if not versions[v].get("deprecated")]
    return (live or ordered)[0]


def build_index(root: str | Path) -> dict[str, Any]:
    base = Path(root)
    items: dict[str, dict[str, Any]] = {}
    deprecated = load_deprecations(base)
    for item in scan(base):
        entry = items.setdefault(item.spec.name, {"versions": {}})
        files = [ITEM_FILE, *item.spec.code_files]
        entry["versions"][item.spec.version] = {
            **item.spec.summary(),
            "path": item.folder.relative_to(base).as_posix(),
            "files": {name: file_sha256(item.folder / name) for name in files},
            "requirements": item.spec.requirements,
        }
        why = deprecated.pop((item.spec.name, item.spec.version), None)
        if why is not None:
            entry["versions"][item.spec.version]["deprecated"] = why
    if deprecated:
        name, version = next(iter(deprecated))
        raise SpecError(f"{base / DEPRECATIONS_FILE}: deprecates {name} {version}, which is absent")
    for entry in items.values():
        versions = sorted(entry["versions"], key=Version.parse)
        entry["latest"] = latest_of(entry["versions"])
        entry["versions"] = {v: entry["versions"][v] for v in reversed(versions)}
    return {"schema": INDEX_SCHEMA, "items": dict(sorted(items.items()))}


# Each hub folder's index, while none of the files it was built from changed (statcache.py).
_INDEXES = StatCache()


def _layout(base: Path) -> list[str]:
    """``name/folder/item.yaml`` for every two-level folder under ``base`` (a superset of what
    :func:`scan`'s glob finds): an item added or removed changes this list."""
    found: list[str] = []
    with os.scandir(base) as top:
        names = [e.name for e in top if e.is_dir()]
    for name in names:
        try:
            with os.scandir(os.path.join(base, name)) as sub:
                found.extend(f"{name}/{e.name}/{ITEM_FILE}" for e in sub if e.is_dir())
        except (FileNotFoundError, NotADirectoryError):  # removed meanwhile
            continue
    return sorted(found)


def _index_signature(base: Path, index: dict[str, Any]) -> Signature | None:
    """The stat of every file ``index`` was built from, and of the item.yaml files there are."""
    try:
        layout = _layout(base)
    except OSError:
        return None
    files = [DEPRECATIONS_FILE, *layout]
    for entry in index["items"].values():
        for meta in entry["versions"].values():
            files.extend(f"{meta['path']}/{name}" for name in meta["files"])
    return signature(base, files)


def cached_index(root: str | Path) -> dict[str, Any]:
    """:func:`build_index` of ``root``, built again only when one of its files changed (or an
    item was added or removed): an unchanged hub costs a ``stat`` per file, not a parse. The
    index is shared: read it, do not change it."""
    base = Path(root)

    def build() -> tuple[Signature, dict[str, Any]]:
        index = build_index(base)
        # Taken after the build: a file changed during it has a recent ctime, so the entry is
        # racy and not kept (StatCache.get).
        sig = _index_signature(base, index)
        if sig is None:
            raise SpecError(f"hub folder {base} cannot be listed")
        return sig, index

    index: dict[str, Any] = _INDEXES.get(
        os.path.abspath(base), lambda idx: _index_signature(base, idx), build
    )
    return index


def write_index(root: str | Path) -> Path:
    """Regenerate ``<root>/index.json`` (``tickrun hub index DIR``)."""
    index = build_index(root)
    path = Path(root) / INDEX_FILE
    path.write_text(json.dumps(index, indent=2, sort_keys=False) + "\n")
    logger.info("hub index written", extra={"path": str(path), "items": len(index["items"])})
    return path


def validate_index(data: Any, *, source: str) -> dict[str, Any]:
    """Shape-check an index that came over the network or from the cache."""
    if (
        not isinstance(data, dict)
        or data.get("schema") != INDEX_SCHEMA
        or not isinstance(data.get("items"), dict)
    ):
        raise SpecError(f"{source} is not a tickrun hub index (schema {INDEX_SCHEMA})")
    for name, entry in data["items"].items():
        try:
            check_item_name(name)  # names become cache folder names
        except ValueError as exc:
            raise SpecError(f"{source}: {exc}") from None
        if not isinstance(entry, dict) or not isinstance(entry.get("versions"), dict):
            raise SpecError(f"{source}: item {name!r} has no versions")
        for version, meta in entry["versions"].items():
            Version.parse(version)
            if not isinstance(meta, dict) or not isinstance(meta.get("files"), dict):
                raise SpecError(f"{source}: {name} {version} lists no files")
            for file, digest in meta["files"].items():
                try:
                    check_item_file(file)
                except ValueError as exc:
                    raise SpecError(f"{source}: {name} {version}: {exc}") from None
                if not isinstance(digest, str) or not _SHA256.match(digest):
                    raise SpecError(f"{source}: {name} {version}/{file} has no SHA-256")
            why = meta.get("deprecated")
            if why is not None and not isinstance(why, str):
                raise SpecError(f"{source}: {name} {version}: 'deprecated' must be a text")
    return data
