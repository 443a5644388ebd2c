"""The cron trigger: fires the handler on a schedule or at a fixed interval.

Only worker 0 of a replica fires, so ``--workers N`` does not run a schedule N times (each
replica fires, as in Nuclio). With ``concurrencyPolicy: Forbid`` (the default) a tick that comes
while the previous run of this trigger is still going is skipped and counted, never queued; with
``Allow`` runs may overlap. Ticks missed while the process was busy or asleep are not replayed:
the schedule continues from the next fire time after now.
"""

from __future__ import annotations

import asyncio
import datetime as dt
import json
import logging
from typing import TYPE_CHECKING, Any, ClassVar

from nuclio_sdk import Event, TriggerInfo
from prometheus_client import Counter

from tickrun.functions.errors import TickrunError

from ..base import BaseTrigger
from .config import CronConfig
from .spec import CronTriggerSpec

if TYPE_CHECKING:
    from tickrun.functions.interfaces import Dispatcher, TriggerHost
    from tickrun.functions.spec import FunctionSpec

logger = logging.getLogger(__name__)

FIRES = Counter(
    "tickrun_cron_fires_total",
    "Cron ticks, by outcome: fired, or skipped because the previous run was still going.",
    ("function", "trigger", "outcome"),
)


def _body(value: Any) -> tuple[Any, str]:
    if value is None:
        return b"", "application/octet-stream"
    if isinstance(value, dict | list):
        return value, "application/json"
    if isinstance(value, bytes):
        return value, "application/octet-stream"
    if isinstance(value, str):
        stripped = value.lstrip()
        if stripped[:1] in ("{", "["):  # a JSON document given as a YAML string
            try:
                return json.loads(value), "application/json"
            except ValueError:
                pass
        return value.encode("utf-8"), "text/plain"
    return str(value).encode("utf-8"), "text/plain"


class CronTrigger(BaseTrigger[CronTriggerSpec]):
    kind: ClassVar[str] = "cron"

    def __init__(self, spec: CronTriggerSpec, function: FunctionSpec) -> None:
        super().__init__(spec, function)
        self.config = CronConfig.from_spec(spec)
        self.name = self.config.name
        self._dispatcher: Dispatcher | None = None
        self._scheduler: asyncio.Task[None] | None = None
        self._running: set[asyncio.Task[None]] = set()
        self._fires = 0
        self._fired = FIRES.labels(function.name, self.name, "fired")
        self._skipped = FIRES.labels(function.name, self.name, "skipped")

    @property
    def active(self) -> bool:
        return self._scheduler is not None

    async def start(self, host: TriggerHost) -> None:
        if host.worker_index != 0:
            logger.debug("cron trigger idle on worker %d", host.worker_index)
            return
        self._dispatcher = host.dispatcher(self.spec)
        self._scheduler = asyncio.get_running_loop().create_task(
            self._schedule(), name=f"cron-{self.name}"
        )
        logger.info(
            "cron trigger scheduled",
            extra={
                "trigger": self.name,
                "schedule": self.config.schedule,
                "interval_s": self.config.interval_s,
            },
        )

    async def stop(self, drain_timeout_s: float) -> None:
        if self._scheduler is not None:
            self._scheduler.cancel()
            await asyncio.gather(self._scheduler, return_exceptions=True)
            self._scheduler = None
        if self._running:
            _, pending = await asyncio.wait(self._running, timeout=drain_timeout_s)
            for task in pending:
                task.cancel()

    async def _schedule(self) -> None:
        cfg = self.config
        now = dt.datetime.now(dt.UTC)
        due = cfg.next_fire(now)
        while True:
            await asyncio.sleep(max((due - dt.datetime.now(dt.UTC)).total_seconds(), 0.0))
            if self._running and not cfg.allow_overlap:
                self._skipped.inc()
                logger.warning(
                    "cron tick skipped: the previous run is still going",
                    extra={"trigger": self.name, "scheduled": due.isoformat()},
                )
            else:
                task = asyncio.get_running_loop().create_task(self._fire(due))
                self._running.add(task)
                task.add_done_callback(self._running.discard)
            now = dt.datetime.now(dt.UTC)
            due = cfg.next_fire(due)
            if due <= now:  # fell behind: continue from now instead of firing a burst
                due = cfg.next_fire(now)

    async def _fire(self, scheduled: dt.datetime) -> None:
        assert self._dispatcher is not None
        cfg = self.config
        self._fires += 1
        body, content_type = _body(cfg.body)
        event = Event(
            body=body,
            content_type=content_type,
            trigger=TriggerInfo(self.kind, self.name),
            headers=dict(cfg.headers),
            _id=f"{self.name}-{int(scheduled.timestamp() * 1000)}",
            method=cfg.method,
            path=cfg.path,
            size=len(body) if isinstance(body, bytes) else 0,
            timestamp=scheduled,
        )
        self._fired.inc()
        try:
            await self._dispatcher.dispatch(event)
        except TickrunError as exc:
            # The dispatcher logged the handler's traceback; one line here ties it to the tick.
            logger.warning(
                "cron run failed: %s",
                exc.message,
                extra={"trigger": self.name, "scheduled": scheduled.isoformat()},
            )
