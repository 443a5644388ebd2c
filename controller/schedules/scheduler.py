"""The loop that fires scheduled jobs, and the policies of a firing.

A firing is due when its time (``next_at``) has come. The scheduler sleeps until the earliest
one (an API change wakes it), then for each due schedule takes the newest due firing:

- on time (at most ``on_time_s`` late, 5 s): it fires; older due ones (the loop was blocked)
  are recorded as skipped;
- later than that (the controller was down, its firings missed), the schedule's ``missed``
  policy decides: ``skip`` records them skipped and waits for the next one; ``run-once`` fires
  once for the newest, unless it is older than ``starting_deadline_s`` (then skipped too).

A firing obeys the schedule's ``concurrency``: ``forbid`` skips it (recorded) while a run of
the schedule still runs, ``replace`` aborts the running ones, waits for them to end, and starts
the new one, ``allow`` starts it beside them. ``run now`` (:meth:`Scheduler.run_now`) fires at
once, paused or not, with the same policy (under ``forbid`` a running run makes it a 409).

Resuming a paused schedule waits for its next firing from then on (what fell in the pause is
not "missed"). Stopping the controller stops the loop, aborts the schedules' running runs (they
end ``aborted``) and waits for them: a restarted controller finds every run ended, and its
first pass applies the missed-firing policy. Deleting a schedule lets its running runs finish.

Time comes from a :class:`Clock` (a fake one in tests), runs from a :class:`Launcher`.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import Awaitable
from typing import Protocol

from tickrun.functions.errors import ConflictError, NotFoundError, TickrunError
from tickrun.functions.runs.plugins import JobRequest

from . import cron
from .launcher import KILL_AFTER_S, Launcher, RunningJob
from .model import ScheduleRequest, firing_request, template
from .rows import ScheduleRow
from .store import ScheduleStore

logger = logging.getLogger(__name__)

ON_TIME_S = 5.0
MAX_SLEEP_S = 60.0  # the store is read again at least this often
MAX_COUNTED = 1000  # missed firings counted one by one up to this many
TERMINAL = {"completed", "error", "aborted"}


class Clock(Protocol):
    def now(self) -> float:
        """Epoch seconds."""

    def sleep(self, seconds: float) -> Awaitable[None]: ...


class WallClock:
    def now(self) -> float:
        return time.time()

    def sleep(self, seconds: float) -> Awaitable[None]:
        return asyncio.sleep(seconds)


class Scheduler:
    """Constructor does no I/O: :meth:`start` reads the store and starts the loop."""

    def __init__(
        self,
        schedules: ScheduleStore,
        launcher: Launcher,
        *,
        clock: Clock | None = None,
        on_time_s: float = ON_TIME_S,
    ) -> None:
        self.schedules = schedules
        self.launcher = launcher
        self.clock: Clock = clock or WallClock()
        self.on_time_s = on_time_s
        self._active: dict[str, dict[str, RunningJob]] = {}
        self._watchers: dict[str, asyncio.Task[None]] = {}
        self._firing: set[asyncio.Task[str | None]] = set()
        self._locks: dict[str, asyncio.Lock] = {}
        self._wake: asyncio.Event | None = None
        self._task: asyncio.Task[None] | None = None

    # -- lifecycle ---------------------------------------------------------------------------

    async def start(self) -> None:
        # Runs the last controller left (it aborted them when it stopped): their final state.
        for row in self.schedules.list():
            if row.last_run_state == "running" and row.last_run_uid:
                state = await self.launcher.run_state(row.last_run_uid)
                if state in TERMINAL or state is None:
                    self.schedules.record_end(row.name, row.last_run_uid, state or "aborted")
        self._wake = asyncio.Event()
        self._task = asyncio.create_task(self._loop(), name="scheduler")

    async def stop(self, timeout_s: float = KILL_AFTER_S + 5) -> None:
        """Stop firing, abort the running runs and wait for them to end."""
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
            self._task = None
        if self._firing:  # firings being launched (or replacing) finish launching first
            await asyncio.wait(list(self._firing), timeout=timeout_s)
        for jobs in self._active.values():
            for job in jobs.values():
                job.abort()
        if self._watchers:
            await asyncio.wait(list(self._watchers.values()), timeout=timeout_s)
        self.launcher.close()

    def wake(self) -> None:
        if self._wake is not None:
            self._wake.set()

    def active(self, name: str) -> list[str]:
        """The uids of the schedule's runs that still run."""
        return list(self._active.get(name, {}))

    async def _loop(self) -> None:
        assert self._wake is not None
        while True:
            self._wake.clear()
            try:
                delay = await self.tick(wait=False)
            except Exception:  # the loop outlives any one bad pass (the store down, a bug)
                logger.exception("scheduler pass failed; trying again")
                delay = ON_TIME_S
            sleeper = asyncio.ensure_future(self.clock.sleep(delay))
            waker = asyncio.ensure_future(self._wake.wait())
            try:
                await asyncio.wait({sleeper, waker}, return_when=asyncio.FIRST_COMPLETED)
            finally:
                sleeper.cancel()
                waker.cancel()

    # -- the schedules -----------------------------------------------------------------------

    def create(self, req: ScheduleRequest, job: JobRequest) -> ScheduleRow:
        row = ScheduleRow(
            name=req.name,
            cron=req.cron,
            timezone=req.timezone,
            job=template(job),
            concurrency=req.concurrency,
            missed=req.missed,
            starting_deadline_s=req.starting_deadline_s,
            paused=req.paused,
            next_at=cron.next_after(req.cron, req.timezone, self.clock.now()),
            runs=0,
            skipped=0,
            missed_firings=0,
        )
        row = self.schedules.add(row)
        self.wake()
        return row

    def pause(self, name: str) -> ScheduleRow:
        return self.schedules.update(name, paused=True)

    def resume(self, name: str) -> ScheduleRow:
        row = self.schedules.get(name)
        nxt = cron.next_after(row.cron, row.timezone, self.clock.now())
        row = self.schedules.update(name, paused=False, next_at=nxt)
        self.wake()
        return row

    def delete(self, name: str) -> None:
        self.schedules.delete(name)

    async def run_now(self, name: str) -> str:
        """Fire ``name`` now (paused or not); the new run's uid."""
        row = self.schedules.get(name)
        uid = await self._fire(row, self.clock.now(), manual=True)
        if uid is None:
            raise ConflictError(
                f"schedule {name!r} forbids concurrent runs and run "
                f"{', '.join(self.active(name))} still runs"
            )
        return uid

    # -- one pass ----------------------------------------------------------------------------

    async def tick(self, *, wait: bool = True) -> float:
        """Fire what is due; the seconds until the next firing (at most MAX_SLEEP_S).

        Each firing launches in a task of its own (a ``replace`` waits for the run it aborts
        without holding up other schedules); ``wait`` waits for them to have launched."""
        now = self.clock.now()
        fired: list[asyncio.Task[str | None]] = []
        soonest = now + MAX_SLEEP_S
        for row in self.schedules.list():
            if row.paused or row.next_at is None:
                continue
            nxt = row.next_at
            if nxt <= now:
                try:
                    nxt = self._due(row, now, fired)
                except NotFoundError:  # deleted meanwhile
                    continue
            soonest = min(soonest, nxt)
        if wait and fired:
            await asyncio.wait(fired)
        return max(0.0, soonest - self.clock.now())

    def _due(self, row: ScheduleRow, now: float, fired: list[asyncio.Task[str | None]]) -> float:
        """Handle the schedule's due firings at ``now`` (a run to start goes into ``fired``);
        its next firing time."""
        assert row.next_at is not None
        newest, older = row.next_at, 0
        while True:
            after = cron.next_after(row.cron, row.timezone, newest)
            if after > now:
                break
            newest, older = after, older + 1
            if older >= MAX_COUNTED:  # far behind: jump to the newest, without counting them
                newest = _newest_due(row, now, newest)
                after = cron.next_after(row.cron, row.timezone, newest)
                break
        # Moved on before anything runs: a crash while launching never fires twice.
        self.schedules.update(row.name, next_at=after)
        late = now - newest
        fire = late <= self.on_time_s or (
            row.missed == "run-once"
            and (row.starting_deadline_s is None or late <= row.starting_deadline_s)
        )
        missed = older + (0 if fire else 1)
        if missed:
            more = "+" if older >= MAX_COUNTED else ""
            span = f"before {cron.iso(newest)}, which ran" if fire else f"up to {cron.iso(newest)}"
            why = (
                f"missed {missed}{more} firing(s) {span} "
                f"({late:.0f} s late; missed policy {row.missed}"
                + (
                    f", starting deadline {row.starting_deadline_s:g} s)"
                    if row.starting_deadline_s is not None
                    else ")"
                )
            )
            self.schedules.count_skip(row.name, now, why, missed=missed)
            logger.warning("schedule missed firings", extra={"schedule": row.name, "why": why})
        if fire:
            task = asyncio.create_task(self._fire_logged(row, newest), name=f"fire {row.name}")
            self._firing.add(task)
            task.add_done_callback(self._firing.discard)
            fired.append(task)
        return after

    async def _fire_logged(self, row: ScheduleRow, scheduled: float) -> str | None:
        try:
            return await self._fire(row, scheduled)
        except Exception:  # a task of its own: nobody else would see it
            logger.exception("scheduled firing failed", extra={"schedule": row.name})
            return None

    async def _fire(
        self, row: ScheduleRow, scheduled: float, *, manual: bool = False
    ) -> str | None:
        """Start one run of ``row`` under its concurrency policy; its uid, None if skipped."""
        lock = self._locks.setdefault(row.name, asyncio.Lock())
        async with lock:
            running = self._active.get(row.name, {})
            if running and row.concurrency == "forbid":
                if not manual:
                    why = f"forbid: run {', '.join(running)} still running"
                    self.schedules.count_skip(row.name, self.clock.now(), why)
                    logger.info("firing skipped", extra={"schedule": row.name, "why": why})
                return None
            if running and row.concurrency == "replace":
                await self._replace(row.name, running)
            request = firing_request(row, scheduled, manual=manual)
            try:
                job = await self.launcher.start(row.name, request)
            except (TickrunError, OSError) as exc:
                logger.error(
                    "scheduled job did not start", extra={"schedule": row.name, "error": str(exc)}
                )
                self.schedules.record_start(row.name, scheduled, request.uid)
                self.schedules.record_end(row.name, request.uid, "not-started")
                return request.uid
            self.schedules.record_start(row.name, scheduled, job.uid)
            self._active.setdefault(row.name, {})[job.uid] = job
            self._watchers[job.uid] = asyncio.create_task(self._watch(row.name, job))
            logger.info(
                "scheduled job started",
                extra={"schedule": row.name, "uid": job.uid, "scheduled": cron.iso(scheduled)},
            )
            return job.uid

    async def _replace(self, name: str, running: dict[str, RunningJob]) -> None:
        ending = [self._watchers[uid] for uid in running if uid in self._watchers]
        for job in list(running.values()):
            job.abort()
        logger.info("replacing running runs", extra={"schedule": name, "uids": list(running)})
        if ending:
            await asyncio.wait(ending, timeout=KILL_AFTER_S + 5)

    async def _watch(self, name: str, job: RunningJob) -> None:
        try:
            code = await job.wait()
            state = await self.launcher.run_state(job.uid)
            if state is None:
                state = "not-started"
            elif state not in TERMINAL:  # the launcher was killed before settling it
                state = "aborted"
            self.schedules.record_end(name, job.uid, state)
            logger.info(
                "scheduled job ended",
                extra={"schedule": name, "uid": job.uid, "state": state, "exit": code},
            )
        except (TickrunError, OSError):
            logger.exception("scheduled job's end not recorded", extra={"uid": job.uid})
        finally:
            self._active.get(name, {}).pop(job.uid, None)
            self._watchers.pop(job.uid, None)

    async def settle(self) -> None:
        """Wait for every firing to have launched and every run started so far to end."""
        while self._watchers or self._firing:
            await asyncio.wait([*self._watchers.values(), *self._firing])


def _newest_due(row: ScheduleRow, now: float, floor: float) -> float:
    """The newest firing at or before ``now`` (croniter backwards), never before ``floor``."""
    back = cron.previous_at_or_before(row.cron, row.timezone, now)
    return max(back, floor)
