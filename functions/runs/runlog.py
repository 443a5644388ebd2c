"""A run's own log: what its handler logged (``context.logger``), kept with the run.

While a run (or one iteration of a sweep) executes, the records of its job logger go into a
:class:`RunLog`, a bounded buffer (the last :data:`MAX_LINES` lines / :data:`MAX_CHARS`
characters; the text says how many earlier lines were dropped). In a process started for the run
(a ``subprocess`` job, a sweep's worker), its ``print()`` output and ``sys.stderr`` writes are
captured too (:func:`capture_stdio`). When the run ends, a failure's traceback is added (it is the
user's own code: MLflow and MLRun keep it in the run's log, the run record keeps one line), secret
values of the environment are redacted, and the text is stored as the run's artifact of kind
``log`` (key ``log``), read back by ``GET /api/runs/{uid}/log``.

Cost when a job logs nothing: one small object per run, no thread, no logging handler, no file.
"""

from __future__ import annotations

import contextlib
import json
import logging
import os
import re
import sys
import time
import traceback
from collections import deque
from collections.abc import Iterator, Mapping
from functools import cache
from typing import TYPE_CHECKING, Any, Protocol, TextIO

from .records import ArtifactKind

if TYPE_CHECKING:
    import nuclio_sdk


_log = logging.getLogger(__name__)

MAX_LINES = 10_000
MAX_CHARS = 1 << 20
MAX_LINE_CHARS = 64 * 1024
LOG_KEY = "log"
REDACTED = "[redacted]"
# Environment variables whose values are secrets (tokens, passwords, keys): never in a log.
_SECRET_NAME = re.compile(
    r"(SECRET|TOKEN|PASSW|CREDENTIAL|PRIVATE|API_?KEY|ACCESS_?KEY)", re.IGNORECASE
)
_MIN_SECRET = 6  # shorter values ("true", "1") would redact ordinary words
_LEVELS = {
    logging.DEBUG: "DEBUG",
    logging.INFO: "INFO",
    logging.WARNING: "WARN",
    logging.ERROR: "ERROR",
}


class RunLog:
    """The last lines a run logged, bounded by line count and characters."""

    __slots__ = ("_chars", "_lines", "dropped", "max_chars", "max_lines")

    def __init__(self, max_lines: int = MAX_LINES, max_chars: int = MAX_CHARS) -> None:
        self._lines: deque[str] = deque()
        self._chars = 0
        self.dropped = 0
        self.max_lines = max_lines
        self.max_chars = max_chars

    def __len__(self) -> int:
        return len(self._lines)

    def __bool__(self) -> bool:
        return bool(self._lines)

    def add(self, text: str) -> None:
        """One or more lines (split on newlines; a very long line is cut)."""
        for line in text.splitlines() or [""]:
            if len(line) > MAX_LINE_CHARS:
                line = line[:MAX_LINE_CHARS] + f" … [{len(line) - MAX_LINE_CHARS} chars cut]"
            self._lines.append(line)
            self._chars += len(line) + 1
        while self._lines and (len(self._lines) > self.max_lines or self._chars > self.max_chars):
            self._chars -= len(self._lines.popleft()) + 1
            self.dropped += 1

    def record(
        self, level: int, message: str, args: tuple[Any, ...], fields: Mapping[str, Any]
    ) -> None:
        """A logger record as one line: time, level, message, its ``*_with`` fields as JSON."""
        try:
            text = message % args if args else str(message)
        except (TypeError, ValueError):
            text = f"{message} {args!r}"
        if fields:
            text += " " + json.dumps(fields, default=str, ensure_ascii=False)
        now = time.time()
        stamp = time.strftime("%Y-%m-%d %H:%M:%S", time.gmtime(now)) + f".{int(now % 1 * 1000):03d}"
        self.add(f"{stamp} {_LEVELS.get(level, logging.getLevelName(level))} {text}")

    def text(self, environ: Mapping[str, str] | None = None) -> str:
        """The log as text, secrets redacted, a first line saying what was dropped."""
        head = (
            f"[tickrun: {self.dropped} earlier lines dropped; the log keeps the last "
            f"{self.max_lines} lines / {self.max_chars} characters]\n"
            if self.dropped
            else ""
        )
        return redact(head + "\n".join(self._lines) + "\n", environ)


def secret_values(environ: Mapping[str, str] | None = None) -> list[str]:
    """Values of the environment's secret variables (by name), longest first."""
    env = os.environ if environ is None else environ
    found = {v for k, v in env.items() if _SECRET_NAME.search(k) and len(v) >= _MIN_SECRET}
    return sorted(found, key=len, reverse=True)


def redact(text: str, environ: Mapping[str, str] | None = None) -> str:
    for value in secret_values(environ):
        if value in text:
            text = text.replace(value, REDACTED)
    return text


def add_failure(log: RunLog, message: str, exc: BaseException | None = None) -> None:
    """The end of a failed run: its message and, for an exception, the traceback."""
    log.add(f"run failed: {message}")
    if exc is not None:
        log.add("".join(traceback.format_exception(type(exc), exc, exc.__traceback__)))


class LogsArtifacts(Protocol):
    """What :func:`write_log` needs of a run's context (context.py imports this module)."""

    uid: str

    @property
    def artifacts(self) -> Mapping[str, Any]: ...

    def log_artifact(self, *args: Any, **kwargs: Any) -> Any: ...


def write_log(ctx: LogsArtifacts, run_log: RunLog) -> None:
    """Store ``run_log`` as the run's ``log`` artifact (nothing when it is empty). Never fails
    the run: a log that cannot be stored is reported in the operator's log."""
    if not run_log:
        return
    try:
        mine = ctx.artifacts.get(LOG_KEY)
        key = LOG_KEY if mine is None or mine.kind is ArtifactKind.LOG else "run-log"
        info = {"lines": len(run_log), "dropped": run_log.dropped}
        ctx.log_artifact(
            key,
            run_log.text(),
            kind=ArtifactKind.LOG,
            format="txt",
            preview=info,
            meta={**info, "truncated": run_log.dropped > 0},
        )
    except Exception:
        _log.warning("could not store the run's log", exc_info=True, extra={"uid": ctx.uid})


@cache
def _capturing_class() -> type[nuclio_sdk.Logger]:
    # Built on first use: nuclio_sdk (~10 ms) is imported by the first job that logs.
    from ..sdk import LevelledLogger

    class CapturingLogger(LevelledLogger):
        """The job logger (``context.logger``), also writing each record into the run's log:
        INFO and above always, DEBUG when the logger is enabled for it."""

        def __init__(self, name: str, run_log: RunLog) -> None:
            super().__init__(logging.NOTSET, name=name)
            self.run_log = run_log

        def _update_bound_vars_and_log(
            self, level: int, message: str, *args: Any, **kw_args: Any
        ) -> None:
            enabled = self._logger.isEnabledFor(level)
            if level >= logging.INFO or enabled:
                self.run_log.record(level, message, args, {**kw_args, **self._bound_variables})
            if enabled:
                super()._update_bound_vars_and_log(level, message, *args, **kw_args)

    return CapturingLogger


def capturing_logger(name: str, run_log: RunLog) -> nuclio_sdk.Logger:
    """A job logger (``tickrun.job.<name>``) whose records also go into ``run_log``."""
    logger: nuclio_sdk.Logger = _capturing_class()(f"tickrun.job.{name}", run_log)
    return logger


class _Tee:
    """A text stream writing through to ``inner`` and keeping whole lines in a run's log."""

    def __init__(self, inner: TextIO, run_log: RunLog) -> None:
        self._inner = inner
        self._log = run_log
        self._partial = ""

    def write(self, s: str) -> int:
        n = self._inner.write(s)
        if s:
            text = self._partial + s
            head, sep, self._partial = text.rpartition("\n")
            if sep:
                self._log.add(head)
            if len(self._partial) > MAX_LINE_CHARS:
                self._log.add(self._partial)
                self._partial = ""
        return n

    def flush_partial(self) -> None:
        if self._partial:
            self._log.add(self._partial)
            self._partial = ""

    def __getattr__(self, name: str) -> Any:
        return getattr(self._inner, name)


_stdio = False


def enable_stdio_capture() -> None:
    """In a process that runs one run at a time (a job, a sweep's worker): each run's log also
    keeps what it prints to stdout and stderr."""
    global _stdio
    _stdio = True


@contextlib.contextmanager
def capture_stdio(run_log: RunLog) -> Iterator[None]:
    """``sys.stdout``/``sys.stderr`` writes also into ``run_log`` (when enabled for this
    process: see :func:`enable_stdio_capture`; otherwise nothing is swapped)."""
    if not _stdio:
        yield
        return
    out, err = sys.stdout, sys.stderr
    tees = (_Tee(out, run_log), _Tee(err, run_log))
    sys.stdout, sys.stderr = tees
    try:
        yield
    finally:
        for tee in tees:
            tee.flush_partial()
        if sys.stdout is tees[0]:
            sys.stdout = out
        if sys.stderr is tees[1]:
            sys.stderr = err


__all__ = [
    "LOG_KEY",
    "MAX_CHARS",
    "MAX_LINES",
    "RunLog",
    "add_failure",
    "capture_stdio",
    "capturing_logger",
    "enable_stdio_capture",
    "redact",
    "secret_values",
    "write_log",
]
