"""The HTTP trigger (aiohttp)."""

from __future__ import annotations

from .config import HttpConfig
from .trigger import HttpTrigger

__all__ = ["HttpConfig", "HttpTrigger"]
