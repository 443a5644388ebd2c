"""Writing item files into a folder without ever writing outside it.

Item file names come from ``item.yaml`` or a remote index; they are validated
(:func:`~tickrun.hub.spec.check_item_file`), and on top of that every write here checks the
*resolved* destination: a symlinked sub-folder or a symlink planted at a file's place in the
target cannot redirect the write. Files are written to a temp file beside the destination and
renamed over it, so an existing symlink is replaced, never followed.
"""

from __future__ import annotations

import os
import shutil
import tempfile
from pathlib import Path
from typing import BinaryIO

from tickrun.functions.errors import HubError

from .spec import check_item_file


def inside(root: Path, relative: str) -> Path:
    """``root / relative``, after checking the name and that its folder resolves in ``root``."""
    try:
        check_item_file(relative)
    except ValueError as exc:
        raise HubError(str(exc)) from None
    base = root.resolve()
    dest = base / relative
    dest.parent.mkdir(parents=True, exist_ok=True)
    if not dest.parent.resolve().is_relative_to(base):
        raise HubError(f"{relative!r} would be written outside {base} (a symlinked folder)")
    return dest


def write_inside(root: Path, relative: str, src: BinaryIO | bytes, mode: int = 0o644) -> Path:
    """Write ``src`` (bytes or a binary stream) to ``root/relative``, atomically."""
    dest = inside(root, relative)
    fd, tmp = tempfile.mkstemp(prefix=".hub-", dir=dest.parent)
    try:
        with os.fdopen(fd, "wb") as out:
            if isinstance(src, bytes):
                out.write(src)
            else:
                shutil.copyfileobj(src, out)
        os.chmod(tmp, mode)
        os.replace(tmp, dest)  # replaces a symlink at dest instead of writing through it
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    return dest


def copy_inside(src_root: Path, root: Path, relative: str) -> Path:
    """Copy ``src_root/relative`` to ``root/relative``; the source must resolve inside
    ``src_root`` too (an item's file that is a link out of the item is not copied)."""
    base = src_root.resolve()
    src = (src_root / relative).resolve()
    if not src.is_relative_to(base) or not src.is_file():
        raise HubError(f"{relative!r} is not a file inside {base}")
    with src.open("rb") as fh:
        return write_inside(root, relative, fh, src.stat().st_mode & 0o755)
