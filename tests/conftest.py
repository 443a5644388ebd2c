"""Shared test set-up: the repo root on sys.path so tests can import ``tests.support``, and a
private ``TICKRUN_HOME`` for the whole session so no test writes to the real ``~/.tickrun``."""

from __future__ import annotations

import os
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

REPO_ROOT = Path(__file__).resolve().parents[1]
if str(REPO_ROOT) not in sys.path:
    sys.path.insert(0, str(REPO_ROOT))

from tickrun.functions.settings import CACHE, HOME  # noqa: E402 - needs the path above


@pytest.fixture(autouse=True, scope="session")
def _private_tickrun_home(tmp_path_factory: pytest.TempPathFactory) -> Iterator[None]:
    """Runs, artifacts and controller state (all under TICKRUN_HOME) go to a session folder,
    also for the processes tests start. The cache stays where CI keeps its warm peers and
    wheelhouses (``$TICKRUN_CACHE``, else ``~/.cache/tickrun``, the deploy/peers root), as before
    the one state root, so a session does not rebuild them."""
    saved = {name: os.environ.get(name) for name in (HOME.name, CACHE.name)}
    os.environ[HOME.name] = str(tmp_path_factory.mktemp("tickrun-home"))
    os.environ.setdefault(CACHE.name, str(Path.home() / ".cache" / "tickrun"))
    yield
    for name, value in saved.items():
        if value is None:
            os.environ.pop(name, None)
        else:
            os.environ[name] = value
