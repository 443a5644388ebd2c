"""Structured logging: JSON lines from entrypoints, human-readable lines on a terminal.

Fields come from ``extra={...}`` on stdlib calls and from nuclio-sdk's ``*_with`` calls, which
put their keyword arguments under the record attribute ``with``.
"""

from __future__ import annotations

import json
import logging
import sys
import time
from typing import Any

from . import settings

LEVELS_ENV = settings.LOG_LEVELS.name
_STD = set(vars(logging.LogRecord("", 0, "", 0, "", (), None))) | {"message", "asctime", "with"}


def record_fields(record: logging.LogRecord) -> dict[str, Any]:
    fields = {k: v for k, v in vars(record).items() if k not in _STD}
    extra_with = getattr(record, "with", None)
    if isinstance(extra_with, dict):
        fields.update(extra_with)
    return fields


class JsonFormatter(logging.Formatter):
    def format(self, record: logging.LogRecord) -> str:
        out: dict[str, Any] = {
            "time": time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(record.created))
            + f".{int(record.msecs):03d}Z",
            "level": record.levelname.lower(),
            "logger": record.name,
            "message": record.getMessage(),
        }
        out.update(record_fields(record))
        if record.exc_info:
            # Tracebacks go to the replica's own log (operators), never into a response.
            out["exc"] = self.formatException(record.exc_info)
        return json.dumps(out, default=str)


class TextFormatter(logging.Formatter):
    def format(self, record: logging.LogRecord) -> str:
        fields = record_fields(record)
        more = " ".join(f"{k}={v}" for k, v in fields.items())
        line = (
            f"{self.formatTime(record, '%H:%M:%S')} {record.levelname.lower():<7} {record.name}: "
        )
        line += record.getMessage() + (f"  {more}" if more else "")
        if record.exc_info:
            line += "\n" + self.formatException(record.exc_info)
        return line


def configure_logging(*, json_logs: bool | None = None, level: str | int = "INFO") -> None:
    """Install one handler on the root logger (idempotent). JSON unless stderr is a terminal."""
    if json_logs is None:
        json_logs = not sys.stderr.isatty()
    root = logging.getLogger()
    for h in list(root.handlers):
        if getattr(h, "_tickrun", False):
            root.removeHandler(h)
    handler = logging.StreamHandler(sys.stderr)
    handler._tickrun = True  # type: ignore[attr-defined]
    handler.setFormatter(JsonFormatter() if json_logs else TextFormatter())
    root.addHandler(handler)
    root.setLevel(level)
    for noisy in ("aiohttp.access", "kafka", "urllib3"):
        logging.getLogger(noisy).setLevel(logging.WARNING)
    # e.g. TICKRUN_LOG_LEVELS="kafka=DEBUG" to see a client library's own story when debugging.
    for item in settings.LOG_LEVELS.get().split(","):
        name, sep, value = item.partition("=")
        if sep and name.strip() and value.strip().upper() in logging.getLevelNamesMapping():
            logging.getLogger(name.strip()).setLevel(value.strip().upper())
