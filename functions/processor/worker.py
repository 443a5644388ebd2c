"""One worker process: loads the handler, serves the processor's HTTP port, runs the triggers.

Run by the supervisor (``main`` below, through :mod:`tickrun.functions.launch`, so it dies with
the supervisor: kill -9 of a replica kills its workers too) with its config in the
``TICKRUN_WORKER_CONFIG`` environment variable. It binds the shared port with SO_REUSEPORT only
once the handler is loaded and ``init_context`` has run, so the kernel never hands a connection
to a worker that cannot serve it.
"""

from __future__ import annotations

import asyncio
import contextlib
import gc
import inspect
import json
import logging
import os
import signal
import sys
import threading
from collections.abc import Awaitable
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

from aiohttp import web
from pydantic import BaseModel, ConfigDict

from .. import settings
from ..errors import HandlerLoadError, TickrunError
from ..handler import LoadedHandler, load_handler
from ..httpserver import HardenedServer, HardenedSite, request_id_of
from ..httpserver_guard import ConnectionGuard, connection_cap
from ..interfaces import Dispatcher, HttpHandler, Trigger
from ..requestid import REQUEST_ID_HEADER
from ..sdk import TriggerInfo, make_context
from ..spec import FunctionSpec, HttpTriggerSpec, TriggerSpec, parse_spec
from . import metrics
from .dispatcher import TriggerDispatcher
from .exitcodes import ExitCode, ExitStatus, Reason
from .inline import InlineGuard
from .registry import trigger_class
from .rescue import Rescue

logger = logging.getLogger(__name__)

CONTROL_PATHS = frozenset({"/healthz", "/readyz", "/metrics"})  # the processor's own

CONFIG_ENV = settings.WORKER_CONFIG.name
READY_DIR_ENV = settings.READY_DIR.name
STATS_FLUSH_INTERVAL_S = 1.0
FAILED_SUFFIX = ".failed"  # <ready dir>/<pid>.failed: why the worker could not start


class WorkerConfig(BaseModel):
    model_config = ConfigDict(extra="forbid")

    function_dir: str
    spec: dict[str, Any]
    host: str = "127.0.0.1"
    port: int
    worker_index: int = 0
    worker_count: int = 1


class Worker:
    """A :class:`~tickrun.functions.interfaces.TriggerHost`. Constructor does no I/O.

    ``inline=False`` keeps every sync call in the thread pool (see :mod:`.inline`); inline calls
    also need the worker to run on the main thread (the event timeout interrupts by signal).
    """

    def __init__(self, config: WorkerConfig, *, inline: bool = True) -> None:
        self.config = config
        self._inline_allowed = inline
        self._inline: InlineGuard | None = None
        self.function: FunctionSpec = parse_spec(config.spec)
        self.worker_index = config.worker_index
        self.worker_count = config.worker_count
        self._handler: LoadedHandler | None = None
        self._context: Any = None
        self._executor: ThreadPoolExecutor | None = None
        self._triggers: list[Trigger] = []
        self._dispatchers: list[TriggerDispatcher] = []
        self._http_handler: HttpHandler | None = None
        self._runner: web.ServerRunner | None = None
        self._guard: ConnectionGuard | None = None
        self._started = False
        self._draining = False
        self._stopped = asyncio.Event()
        self._flusher: asyncio.Task[None] | None = None
        self.exit_code = int(ExitCode.OK)

    @property
    def port(self) -> int:
        """The bound port (differs from the configured one when that was 0)."""
        if self._runner is None or not self._runner.addresses:
            return self.config.port
        return int(self._runner.addresses[0][1])

    # --- TriggerHost ------------------------------------------------------------------------

    def dispatcher(self, trigger: TriggerSpec) -> Dispatcher:
        if self._handler is None:
            raise TickrunError("worker not started")
        spec = self.function.spec
        d = TriggerDispatcher(
            handler=self._handler,
            context=self._context,
            function_name=self.function.name,
            trigger_name=trigger.name,
            trigger_kind=trigger.kind,
            slots=trigger.slots,
            availability_timeout_s=trigger.worker_availability_timeout_ms / 1000,
            event_timeout_s=spec.event_timeout_s,
            executor=self._executor,
            on_stuck=self._on_stuck,
            inline=self._inline if trigger.kind == "http" else None,
        )
        self._dispatchers.append(d)
        return d

    def mount_http(self, handler: HttpHandler) -> None:
        self._http_handler = handler

    @property
    def context(self) -> Any:
        """The handler's nuclio-sdk context (triggers may add APIs, e.g. ``context.kafka``)."""
        return self._context

    # --- lifecycle --------------------------------------------------------------------------

    async def start(self) -> None:
        spec = self.function.spec
        os.environ.update(spec.env_dict())
        self._handler = load_handler(self.config.function_dir, spec.handler)
        triggers = spec.effective_triggers()
        if not self._handler.is_async:
            slots = sum(t.slots for t in triggers) or 1
            self._executor = ThreadPoolExecutor(slots, thread_name_prefix="handler")
            if (
                self._inline_allowed
                and any(t.kind == "http" for t in triggers)
                and threading.current_thread() is threading.main_thread()
            ):
                self._inline = InlineGuard(spec.event_timeout_s, on_hung=self._exit_hung)
        first = triggers[0] if triggers else None
        self._context = make_context(
            self.function.name,
            worker_id=self.worker_index,
            trigger=TriggerInfo(first.kind, first.name) if first else None,
        )
        pending = self._handler.run_init_context(self._context)
        if inspect.isawaitable(pending):
            await pending
        for tspec in triggers:
            trigger = trigger_class(tspec.kind)(tspec, self.function)
            await trigger.start(self)
            self._triggers.append(trigger)
        # What is loaded by now (the runtime, the handler's modules such as pandas, what
        # init_context built, the triggers' clients) lives as long as the worker: keep it out
        # of the collector's full passes, which otherwise walk all of it each time enough
        # objects outlive the young generations (a Kafka pool's backlog does, about once a
        # second: 12% of a no-op handler's CPU, issue 17). Objects freed by reference count
        # still are; only reference cycles among these are never collected.
        gc.freeze()
        http = next((t for t in triggers if isinstance(t, HttpTriggerSpec)), None)
        attrs = (http or HttpTriggerSpec(kind="http")).attributes
        guard = ConnectionGuard(
            connection_cap(attrs.max_connections),
            header_timeout_s=attrs.read_header_timeout_s,
            keepalive_timeout_s=attrs.keep_alive_timeout_s,
            body_timeout_s=None,  # the HTTP trigger times out a body read itself
        )
        self._guard = guard
        server = HardenedServer(
            self._route, guard=guard, handler_cancellation=False, access_log=None
        )
        self._runner = web.ServerRunner(server, shutdown_timeout=spec.drain_timeout_s)
        await self._runner.setup()
        site = HardenedSite(self._runner, self.config.host, self.config.port, reuse_port=True)
        await site.start()
        listener = site.listener
        if self._inline is not None and listener is not None:
            self._inline.rescue = Rescue(
                listener.sockets, CONTROL_PATHS, self._control_answer, self._adopter(listener)
            )
        self._started = True
        self._flusher = asyncio.get_running_loop().create_task(self._flush_stats())
        ready_dir = settings.READY_DIR.get()
        if ready_dir:  # tells the supervisor this worker is bound and serving
            Path(ready_dir, str(os.getpid())).touch()  # noqa: ASYNC240 - once, at start
        logger.info(
            "worker ready",
            extra={
                "function": self.function.name,
                "worker": self.worker_index,
                "port": self.port,
                "pid": os.getpid(),
                "triggers": [t.name for t in self._triggers],
            },
        )

    async def stop(self) -> None:
        """Drain: refuse new work, let in-flight events finish, then stop every trigger."""
        if self._draining:
            return
        self._draining = True
        timeout = self.function.spec.drain_timeout_s
        logger.info("worker draining", extra={"worker": self.worker_index, "timeout_s": timeout})
        # HTTP and the other triggers drain side by side: the supervisor allows one drain
        # timeout (plus a margin) in all, not one per trigger kind.
        stops = [t.stop(timeout) for t in self._triggers if t.kind != "http"]
        results = await asyncio.gather(*stops, self._stop_http(timeout), return_exceptions=True)
        for r in results:
            if isinstance(r, BaseException):
                logger.error("trigger stop failed", exc_info=r)
        if self._executor is not None:
            self._executor.shutdown(wait=False, cancel_futures=True)
        if self._inline is not None:
            self._inline.close()
        if self._flusher is not None:
            self._flusher.cancel()
        with contextlib.suppress(OSError):
            metrics.STATS.flush()
        self._stopped.set()

    async def _stop_http(self, timeout_s: float) -> None:
        if self._runner is not None:
            await self._runner.cleanup()  # waits up to the drain timeout for in-flight requests
        if self._guard is not None:
            self._guard.close()  # its last report of closed connections
        for t in self._triggers:
            if t.kind == "http":
                await t.stop(timeout_s)

    async def _flush_stats(self) -> None:
        while True:
            await asyncio.sleep(STATS_FLUSH_INTERVAL_S)
            try:
                metrics.STATS.flush()
            except OSError as exc:  # a full disk must not take the worker down
                logger.warning("cannot write event statistics", extra={"error": str(exc)})

    def _on_stuck(self) -> None:
        logger.error(
            "every handler slot is stuck past the event timeout; replacing this worker",
            extra={"worker": self.worker_index},
        )
        self.exit_code = ExitCode.RESTART
        asyncio.get_running_loop().create_task(self.stop())

    def _exit_hung(self) -> None:
        """On the inline watch thread: the loop's thread is stuck in a handler for good, so no
        drain can run; the supervisor replaces this worker (in-flight requests are cut)."""
        with contextlib.suppress(OSError, ValueError):
            metrics.STATS.flush()
        for stream in (sys.stdout, sys.stderr):
            with contextlib.suppress(OSError, ValueError):
                stream.flush()
        os._exit(ExitCode.RESTART)

    @staticmethod
    def _adopter(listener: Any) -> Any:
        loop = asyncio.get_running_loop()

        def adopt(conn: Any) -> None:  # on the watch thread
            try:
                loop.call_soon_threadsafe(listener.adopt, conn)
            except RuntimeError:  # the loop is closed: the worker is gone
                conn.close()

        return adopt

    async def wait_stopped(self) -> None:
        await self._stopped.wait()

    # --- HTTP -------------------------------------------------------------------------------

    def _route(self, request: web.BaseRequest) -> Awaitable[web.StreamResponse]:
        # Not a coroutine itself: aiohttp awaits the trigger's coroutine directly, one coroutine
        # (and frame) less per request.
        path = request.path
        handler = self._http_handler
        if handler is None or path in CONTROL_PATHS:
            return self._control_route(request, path)
        return handler(request)

    async def _control_route(self, request: web.BaseRequest, path: str) -> web.StreamResponse:
        # The processor's own answers carry a request id too (the HTTP trigger sets its own).
        response = self._control(path)
        response.headers[REQUEST_ID_HEADER] = request_id_of(request)
        return response

    def _control(self, path: str) -> web.Response:
        if path == "/metrics":
            body, ctype = metrics.render()
            return web.Response(body=body, headers={"Content-Type": ctype})
        status, obj = self._control_json(path)
        return web.json_response(obj, status=status)

    def _control_answer(self, path: str) -> tuple[int, bytes, str]:
        """:meth:`_control` as bytes, for the inline watch thread's rescue acceptor."""
        if path == "/metrics":
            body, ctype = metrics.render()
            return 200, body, ctype
        status, obj = self._control_json(path)
        return status, json.dumps(obj).encode(), "application/json; charset=utf-8"

    def _control_json(self, path: str) -> tuple[int, dict[str, Any]]:
        if path == "/healthz":
            return 200, {"status": "ok"}
        if path == "/readyz":
            return self._readyz()
        return 404, {"error": "this function has no http trigger"}

    def _readyz(self) -> tuple[int, dict[str, Any]]:
        """200 when serving; otherwise 503 with the state and a structured reason (a
        :class:`~.exitcodes.Reason`) that a platform can show without reading logs."""
        if self._draining or not self._started:
            reason = Reason.DRAINING if self._draining else Reason.STARTING
            return self._not_ready(reason, reason.value, {})
        not_ready = [t.name for t in self._triggers if not t.ready()]
        if not_ready:
            detail = "waiting for trigger(s): " + ", ".join(not_ready)
            extra = {"triggers_not_ready": not_ready}
            return self._not_ready(Reason.TRIGGERS_NOT_READY, "not ready", extra, detail)
        in_flight = sum(d.in_flight for d in self._dispatchers)
        return 200, {"ready": True, "status": "ready", "in_flight": in_flight}

    @staticmethod
    def _not_ready(
        reason: Reason, status: str, extra: dict[str, Any], detail: str = ""
    ) -> tuple[int, dict[str, Any]]:
        body: dict[str, Any] = {"ready": False, "status": status, "reason": reason.value}
        if detail:
            body["detail"] = detail
        return 503, {**body, **extra}


def _install_loop() -> None:
    try:
        import uvloop
    except ImportError:
        return
    asyncio.set_event_loop_policy(uvloop.EventLoopPolicy())


async def _serve(worker: Worker) -> int:
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, lambda: loop.create_task(worker.stop()))
    try:
        await worker.start()
    except (HandlerLoadError, TickrunError) as exc:
        logger.error(
            "function cannot start: %s", exc.message, extra={"worker": worker.worker_index}
        )
        _report_start_failure(ExitStatus.of(exc, ExitCode.CONFIG))
        return ExitCode.CONFIG
    await worker.wait_stopped()
    return worker.exit_code


def _report_start_failure(status: ExitStatus) -> None:
    """Leave the reason beside the ready marks, for the supervisor's status line: its code
    tells a start failure, this file tells which one (the log is for people)."""
    ready_dir = settings.READY_DIR.get()
    if not ready_dir:
        return
    try:
        Path(ready_dir, f"{os.getpid()}{FAILED_SUFFIX}").write_text(status.model_dump_json())
    except OSError as exc:  # the exit code still says it; only the detail is lost
        logger.warning("cannot record the start failure", extra={"error": str(exc)})


def main() -> None:
    """The worker process's entry. The supervisor starts it through
    :func:`tickrun.functions.launch.python_command`, which also makes it die with the supervisor."""
    from ..logs import configure_logging

    configure_logging(
        json_logs=settings.LOG_FORMAT.get() != "text",  # JSON unless asked for text
        level=settings.LOG_LEVEL.get(),
    )
    raw = settings.WORKER_CONFIG.get()
    if not raw:
        logger.error("%s is not set; workers are started by `tickrun serve`", CONFIG_ENV)
        sys.exit(ExitCode.CONFIG)
    config = WorkerConfig.model_validate(json.loads(raw))
    if str(Path(config.function_dir)) not in sys.path:
        sys.path.insert(0, str(Path(config.function_dir).resolve()))
    _install_loop()
    sys.exit(asyncio.run(_serve(Worker(config))))


if __name__ == "__main__":
    main()
