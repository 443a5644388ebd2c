"""A run's own log: what its handler logged (``context.logger``), kept with the run.

While a run (or one iteration of a sweep) executes, the records of its job logger go into a
:class:`RunLog`, a bounded buffer (the last :data:`MAX_LINES` lines / :data:`MAX_CHARS`
characters; the text says how many earlier lines were dropped). In a process started for the run
(a ``subprocess`` job, a sweep's worker), its ``print()`` output and ``sys.stderr`` writes are
captured too (:func:`capture_stdio`). The text, secret values of the environment redacted, is
stored as the run's artifact of kind ``log`` (key ``log``), read back by
``GET /api/runs/{uid}/log``:

- while the run executes, by a :class:`LivePublisher`: a thread started by the log's first line
  stores the text every :data:`PUBLISH_INTERVAL_S` while there are new lines (record meta
  ``final: false``), so a long run's log can be watched, and a run whose process is killed
  leaves its last published log behind;
- when the run ends, once more, complete (``final: true``): a failure's traceback is added (it
  is the user's own code: MLflow and MLRun keep it in the run's log, the run record keeps one
  line). The publisher is stopped first, so no live text can land after the final one.

Cost when a job logs nothing: one small object per run, no thread, no logging handler, no file.
Cost of a line: a lock and an append on the caller's thread; the store is written on the
publisher's.
"""

from __future__ import annotations

import contextlib
import json
import logging
import os
import re
import sys
import threading
import time
import traceback
from collections import deque
from collections.abc import Callable, Iterator, Mapping
from functools import cache
from typing import TYPE_CHECKING, Any, Protocol, TextIO

from .records import ArtifactKind

if TYPE_CHECKING:
    import nuclio_sdk


_log = logging.getLogger(__name__)

MAX_LINES = 10_000
MAX_CHARS = 1 << 20
MAX_LINE_CHARS = 64 * 1024
# How often a running run's log is stored while it has new lines: a reader sees a line within
# about this (plus the run tracker's flush interval for the record).
PUBLISH_INTERVAL_S = 2.0
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
    """The last lines a run logged, bounded by line count and characters.

    Written by the run's threads (the handler's, its own threads', a tee of stdout) and read by
    the live publisher's: the lines change under a lock. ``version`` counts the additions, so a
    reader knows whether anything is new."""

    __slots__ = (
        "_chars",
        "_lines",
        "_lock",
        "_on_add",
        "dropped",
        "max_chars",
        "max_lines",
        "version",
    )

    def __init__(self, max_lines: int = MAX_LINES, max_chars: int = MAX_CHARS) -> None:
        self._lines: deque[str] = deque()
        self._chars = 0
        self._lock = threading.Lock()
        # Called after an addition while set: a LivePublisher's start, cleared once it runs.
        self._on_add: Callable[[], None] | None = None
        self.dropped = 0
        self.version = 0
        self.max_lines = max_lines
        self.max_chars = max_chars

    def __len__(self) -> int:
        return len(self._lines)

    def __bool__(self) -> bool:
        return bool(self._lines)

    def add(self, text: str) -> None:
        """One or more lines (split on newlines; a very long line is cut)."""
        with self._lock:
            for line in text.splitlines() or [""]:
                if len(line) > MAX_LINE_CHARS:
                    line = line[:MAX_LINE_CHARS] + f" … [{len(line) - MAX_LINE_CHARS} chars cut]"
                self._lines.append(line)
                self._chars += len(line) + 1
            while self._lines and (
                len(self._lines) > self.max_lines or self._chars > self.max_chars
            ):
                self._chars -= len(self._lines.popleft()) + 1
                self.dropped += 1
            self.version += 1
        on_add = self._on_add
        if on_add is not None:
            on_add()

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
        return self.snapshot(environ)[0]

    def snapshot(self, environ: Mapping[str, str] | None = None) -> tuple[str, int, int]:
        """(text, lines, dropped) of one moment, consistent with each other."""
        with self._lock:
            lines, dropped = list(self._lines), self.dropped
        head = (
            f"[tickrun: {dropped} earlier lines dropped; the log keeps the last "
            f"{self.max_lines} lines / {self.max_chars} characters]\n"
            if dropped
            else ""
        )
        return redact(head + "\n".join(lines) + "\n", environ), len(lines), dropped


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


def write_log(
    ctx: LogsArtifacts, run_log: RunLog, *, final: bool = True, warn: bool = True
) -> bool:
    """Store ``run_log`` as the run's ``log`` artifact (nothing when it is empty); ``final``:
    the complete log of the ended run, else a live copy (meta ``final``). Never fails the run:
    a log that cannot be stored is reported in the operator's log (at debug level when not
    ``warn``: a live copy failing again every few seconds). False when it could not be."""
    if not run_log:
        return True
    try:
        mine = ctx.artifacts.get(LOG_KEY)
        key = LOG_KEY if mine is None or mine.kind is ArtifactKind.LOG else "run-log"
        text, lines, dropped = run_log.snapshot()
        info = {"lines": lines, "dropped": dropped}
        ctx.log_artifact(
            key,
            text,
            kind=ArtifactKind.LOG,
            format="txt",
            preview=info,
            meta={**info, "truncated": dropped > 0, "final": final},
        )
    except Exception:
        _log.log(
            logging.WARNING if warn else logging.DEBUG,
            "could not store the run's log",
            exc_info=True,
            extra={"uid": ctx.uid, "final": final},
        )
        return False
    return True


class LivePublisher:
    """Publishes a running run's log: ``publish(run_log)`` (False: it failed) every
    ``interval_s`` while the log has new lines, on a thread started by the log's first line (a
    run that logs nothing gets no thread). :meth:`stop` ends it; after it returns no publish
    runs or starts, so the caller's final write is the last one."""

    def __init__(
        self,
        run_log: RunLog,
        publish: Callable[[RunLog], bool | None],
        *,
        interval_s: float | None = None,
        name: str = "run-log",
    ) -> None:
        self._log = run_log
        self._publish = publish
        self.interval_s = PUBLISH_INTERVAL_S if interval_s is None else interval_s
        self.name = name
        self._stop = threading.Event()
        self._start_lock = threading.Lock()
        self._publish_lock = threading.Lock()  # one publish at a time, none after stop()
        self._stopped = False
        self._thread: threading.Thread | None = None
        self._published = 0  # the log's version last published
        self.publishes = 0
        self.failures = 0  # publishes that returned False (the store refused the text)
        run_log._on_add = self._start

    @property
    def started(self) -> bool:
        return self._thread is not None

    def _start(self) -> None:
        # On the caller's thread, once: the first line of the run's log.
        with self._start_lock:
            self._log._on_add = None
            if self._thread is not None or self._stop.is_set():
                return
            self._thread = threading.Thread(target=self._loop, name=self.name, daemon=True)
            self._thread.start()

    def _loop(self) -> None:
        while not self._stop.wait(self.interval_s):
            self.publish_now()

    def publish_now(self) -> bool:
        """Publish if there is something new and the publisher is not stopped (True if it did)."""
        with self._publish_lock:
            version = self._log.version
            if self._stopped or version == self._published:
                return False
            self._published = version
            try:
                if self._publish(self._log) is False:
                    self.failures += 1
            except Exception:  # write_log reports its own; anything else must not kill the loop
                self.failures += 1
                _log.warning("could not publish the run's log", exc_info=True)
            self.publishes += 1
            return True

    def stop(self) -> None:
        """End live publishing; waits for a publish under way."""
        self._stop.set()
        self._log._on_add = None
        with self._publish_lock:
            self._stopped = True
        thread = self._thread
        if thread is not None and thread is not threading.current_thread():
            thread.join(timeout=5)


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
    "PUBLISH_INTERVAL_S",
    "LivePublisher",
    "RunLog",
    "add_failure",
    "capture_stdio",
    "capturing_logger",
    "enable_stdio_capture",
    "redact",
    "secret_values",
    "write_log",
]
