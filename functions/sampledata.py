"""Where the bundled BTCUSDT market data lives (tests, demos, benchmarks).

``$TICKRUN_DATA_DIR`` wins; otherwise the ``shared/data`` folder beside the repository checkout.
"""

from __future__ import annotations

import os
from pathlib import Path

from .errors import NotFoundError

HOURLY = "btcusdt_1h.csv.gz"
MINUTE = "btcusdt_1m_2024-01.csv.gz"


def market_data_dir() -> Path:
    env = os.environ.get("TICKRUN_DATA_DIR")
    candidates = [Path(env)] if env else []
    repo = Path(__file__).resolve().parents[1]
    candidates += [repo.parent / "shared" / "data", Path.cwd().parent / "shared" / "data"]
    for candidate in candidates:
        if (candidate / HOURLY).exists():
            return candidate
    tried = ", ".join(str(c) for c in candidates)
    raise NotFoundError(f"BTCUSDT market data not found (tried {tried}); set TICKRUN_DATA_DIR")


def market_data(name: str = HOURLY) -> Path:
    """Path of one of the bundled files: :data:`HOURLY` or :data:`MINUTE`."""
    return market_data_dir() / name
