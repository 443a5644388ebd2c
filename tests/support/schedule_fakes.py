"""Fakes of the scheduler's own seams (controller/schedules/scheduler.py): its clock and its
launcher. Jobs end when a test says so."""

from __future__ import annotations

import asyncio

from tickrun.functions.runs.plugins import JobRequest

# 2023-11-14T22:00:00Z: on the hour, so hourly and per-minute crons land on round times.
T0 = 1_700_000_000 - 1_700_000_000 % 3600


class FakeClock:
    def __init__(self, t: float = T0 + 10) -> None:
        self.t = float(t)
        self.sleeps: list[float] = []
        self._changed: asyncio.Event | None = None

    def now(self) -> float:
        return self.t

    async def sleep(self, seconds: float) -> None:
        self.sleeps.append(seconds)
        until = self.t + seconds
        while self.t < until:
            if self._changed is None:
                self._changed = asyncio.Event()
            await self._changed.wait()

    def advance(self, seconds: float) -> None:
        self.t += seconds
        if self._changed is not None:
            self._changed.set()
            self._changed = None


class FakeJob:
    def __init__(self, launcher: FakeLauncher, request: JobRequest) -> None:
        self.uid = request.uid
        self.request = request
        self.launcher = launcher
        self.done: asyncio.Future[int] = asyncio.get_running_loop().create_future()
        self.aborted = False

    async def wait(self) -> int:
        return await self.done

    def abort(self) -> None:
        self.aborted = True
        self.launcher.events.append(("abort", self.uid))
        self.launcher.end(self.uid, "aborted")


class FakeLauncher:
    def __init__(self) -> None:
        self.started: list[FakeJob] = []
        self.states: dict[str, str] = {}
        self.closed = False
        self.fail: Exception | None = None
        self.events: list[tuple[str, str]] = []

    async def start(self, schedule: str, request: JobRequest) -> FakeJob:
        if self.fail is not None:
            raise self.fail
        job = FakeJob(self, request)
        self.started.append(job)
        self.events.append(("start", request.uid))
        self.states[request.uid] = "running"
        return job

    async def run_state(self, uid: str) -> str | None:
        return self.states.get(uid)

    def end(self, uid: str, state: str = "completed") -> None:
        self.states[uid] = state
        job = next(j for j in self.started if j.uid == uid)
        if not job.done.done():
            job.done.set_result(0 if state == "completed" else 1)

    def close(self) -> None:
        self.closed = True
