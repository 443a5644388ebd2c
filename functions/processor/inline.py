"""Sync handlers run on the event loop's own thread, as Nuclio's Python runtime runs them.

A hop to a handler thread per request costs about half the throughput of a no-op handler (the
future, the wake-up of the loop, and the GIL passed back and forth). The HTTP trigger's
dispatcher calls the handler inline instead (always with one slot; with many slots while the
handler proves quick, see :mod:`.dispatcher`). What a thread used to give for free is kept by
:class:`InlineGuard`'s watch thread:

- ``eventTimeout``: past it, the watch thread sends the loop's thread :data:`INTERRUPT`; its
  handler raises :class:`InlineTimeout` inside the handler (a sleep, a socket wait or Python
  code is interrupted; ``finally`` blocks and context managers run), the request gets its 504
  and the worker goes on serving. A handler that swallows it, or sits in C code that never
  returns, is past saving: after :data:`HUNG_GRACE_S` more the worker exits with the restart
  code and the supervisor replaces it (as a stuck thread pool does);
- health and metrics: while a call has been running for :data:`RESCUE_AFTER_S`, the watch
  thread takes over accepting connections (:mod:`.rescue`): ``/healthz``, ``/readyz`` and
  ``/metrics`` are answered there, every other connection is handed back, unread, to the loop.

The hot path writes two attributes per call; the watch thread polls them.
"""

from __future__ import annotations

import logging
import signal
import threading
import time
from collections.abc import Callable
from types import FrameType
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from .rescue import Rescue

logger = logging.getLogger(__name__)

# A real-time signal nothing else in tickrun (or a typical handler library) uses.
INTERRUPT: int = signal.SIGRTMIN + 3 if hasattr(signal, "SIGRTMIN") else signal.SIGUSR2
RESCUE_AFTER_S = 0.1
HUNG_GRACE_S = 2.0
POLL_MAX_S = 0.05

_LIVE: set[InlineGuard] = set()  # one signal handler serves every guard of the process
_previous_handler: Any = None


def _on_interrupt(signum: int, frame: FrameType | None) -> None:
    # Runs on the main thread between two bytecodes (or as a blocking call is interrupted):
    # only the call a watch thread meant is interrupted, never the loop's own code.
    for guard in list(_LIVE):
        if guard._running and guard._running == guard._interrupted:
            raise InlineTimeout


class InlineTimeout(BaseException):
    """The event timeout, raised inside a handler running inline.

    A BaseException, so a handler's ``except Exception`` does not swallow it.
    """


class InlineGuard:
    """Runs handler calls on the loop's thread under a watch thread (see the module docstring).

    Build it on the main thread (it installs the :data:`INTERRUPT` handler there);
    :meth:`call` runs on that thread only.
    """

    def __init__(
        self,
        event_timeout_s: float | None,
        on_hung: Callable[[], None],
    ) -> None:
        if threading.current_thread() is not threading.main_thread():
            raise RuntimeError("handlers run inline on the main thread only (signals)")
        self.timeout_s = event_timeout_s or None
        self.rescue: Rescue | None = None  # set once the port is bound
        self._on_hung = on_hung
        self._gen = 0
        self._running = 0  # the call being run (its generation), 0 between calls
        self._started = 0.0
        self._interrupted = 0  # the generation the watch thread interrupted
        self._closed = threading.Event()
        self._main = threading.main_thread().ident or 0
        if not _LIVE:
            global _previous_handler
            _previous_handler = signal.signal(INTERRUPT, _on_interrupt)
        _LIVE.add(self)
        poll = POLL_MAX_S if self.timeout_s is None else min(POLL_MAX_S, self.timeout_s / 4)
        self._poll_s = max(poll, 0.005)
        self._thread = threading.Thread(target=self._watch, name="inline-watch", daemon=True)
        self._thread.start()

    def call(self, fn: Callable[[Any, Any], Any], context: Any, event: Any, started: float) -> Any:
        """``fn(context, event)`` on this thread; raises :class:`InlineTimeout` if interrupted."""
        self._gen = gen = self._gen + 1
        try:
            # Inside the try: an interrupt arriving anywhere from here on is caught by the
            # caller's handler of InlineTimeout, never outside it.
            self._started = started
            self._running = gen
            out = fn(context, event)
            self._running = 0
        except BaseException:
            self._running = 0
            raise
        return out

    @property
    def busy_s(self) -> float:
        """How long the current call has been running (0.0 between calls)."""
        return time.perf_counter() - self._started if self._running else 0.0

    def _watch(self) -> None:
        while not self._closed.wait(self._poll_s):
            gen, started = self._running, self._started
            if not gen:
                continue
            age = time.perf_counter() - started
            timeout = self.timeout_s
            if timeout is not None and age > timeout:
                if self._interrupted != gen:
                    self._interrupted = gen
                    signal.pthread_kill(self._main, INTERRUPT)
                elif age > timeout + HUNG_GRACE_S:
                    logger.error(
                        "handler ignored the event timeout on the event loop's thread; "
                        "replacing this worker",
                        extra={"timeout_s": timeout, "running_s": round(age, 3)},
                    )
                    self._on_hung()
                    return
            rescue = self.rescue
            if rescue is not None and age > RESCUE_AFTER_S and self._running == gen:
                # Serve health and metrics until the call ends (or its timeout needs acting on).
                limit = None if timeout is None else started + timeout + self._poll_s
                rescue.serve_while(self._still(gen), limit)

    def _still(self, gen: int) -> Callable[[], bool]:
        return lambda: self._running == gen

    def close(self) -> None:
        """Stop the watch thread and put the previous signal handler back."""
        self._closed.set()
        if self.rescue is not None:
            self.rescue.close()
        if self._thread is not threading.current_thread():
            self._thread.join(timeout=5)
        _LIVE.discard(self)
        if not _LIVE and threading.current_thread() is threading.main_thread():
            signal.signal(INTERRUPT, _previous_handler or signal.SIG_DFL)
