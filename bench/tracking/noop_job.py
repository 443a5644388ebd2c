"""The no-op job of the run-overhead benchmark (also runnable directly as the baseline)."""

from __future__ import annotations

from typing import Any


def noop(context: Any) -> None:
    return None


if __name__ == "__main__":
    noop(None)
