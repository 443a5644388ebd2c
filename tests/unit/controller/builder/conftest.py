from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import pytest

TreeMaker = Callable[[Path, dict[str, str]], Path]


def _make_tree(root: Path, files: dict[str, str]) -> Path:
    for rel, text in files.items():
        (root / rel).parent.mkdir(parents=True, exist_ok=True)
        (root / rel).write_text(text)
    return root


@pytest.fixture
def make_tree() -> TreeMaker:
    """``make_tree(root, {relative path: text})`` writes the files and returns ``root``."""
    return _make_tree
