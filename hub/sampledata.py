"""The BTCUSDT market data tickrun ships (demo, tests, benchmarks, hub examples).

The files are package data in ``tickrun/hub/data`` (about 4 MB gzipped, with their README), so a
fresh clone or a plain ``pip install`` has them. ``$TICKRUN_DATA_DIR`` overrides the folder, for
a user's own copy with the same file names.
"""

from __future__ import annotations

from pathlib import Path

from tickrun.functions import settings
from tickrun.functions.errors import NotFoundError

HOURLY = "btcusdt_1h.csv.gz"
MINUTE = "btcusdt_1m_2024-01.csv.gz"
DATA_ENV = settings.DATA_DIR.name
BUNDLED_DIR = Path(__file__).resolve().parent / "data"


def market_data_dir() -> Path:
    """The folder holding the market data files: ``$TICKRUN_DATA_DIR`` or the bundled copy."""
    override = settings.DATA_DIR.get()
    folder = override or BUNDLED_DIR
    if not (folder / HOURLY).is_file():
        hint = f"unset {DATA_ENV} to use the bundled copy" if override else "reinstall tickrun"
        raise NotFoundError(f"BTCUSDT market data not found in {folder}; {hint}")
    return folder


def market_data(name: str = HOURLY) -> Path:
    """Path of one of the bundled files: :data:`HOURLY` or :data:`MINUTE`."""
    path = market_data_dir() / name
    if not path.is_file():
        raise NotFoundError(f"market data file {name} not found in {path.parent}")
    return path
