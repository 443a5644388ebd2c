"""The scheduler's policies on a fake clock and a fake launcher (its own seams), with the real
store (SQLite): firing on time, labels, concurrency (forbid / replace / allow), missed firings
after a restart (skip / run-once / starting deadline), pause/resume, run now, drain on stop."""

from __future__ import annotations

import asyncio
import datetime as dt
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from tests.support.schedule_fakes import T0, FakeClock, FakeLauncher
from tickrun.controller.schedules.model import parse_request
from tickrun.controller.schedules.rows import ScheduleRow
from tickrun.controller.schedules.scheduler import MAX_SLEEP_S, Scheduler
from tickrun.controller.schedules.store import ScheduleStore
from tickrun.controller.store import Store
from tickrun.functions.errors import ConflictError, PlatformError

HOUR = 3600


def iso(ts: float) -> str:
    return dt.datetime.fromtimestamp(ts, dt.UTC).isoformat().replace("+00:00", "Z")


@pytest.fixture
def schedules(tmp_path: Path) -> Iterator[ScheduleStore]:
    store = Store(f"sqlite:///{tmp_path / 'state' / 'tickrun.db'}")
    store.open()
    try:
        yield ScheduleStore(store)
    finally:
        store.close()


@pytest.fixture
def clock() -> FakeClock:
    return FakeClock()


@pytest.fixture
def launcher() -> FakeLauncher:
    return FakeLauncher()


@pytest.fixture
def sched(schedules: ScheduleStore, launcher: FakeLauncher, clock: FakeClock) -> Scheduler:
    return Scheduler(schedules, launcher, clock=clock)


def make(sched: Scheduler, name: str = "hourly", cron: str = "0 * * * *", **kw: Any) -> ScheduleRow:
    req, job = parse_request(
        {
            "name": name,
            "cron": cron,
            "job": {"target": "job.py:train", "params": {"lr": 0.1}, "labels": {"team": "q"}},
            **kw,
        }
    )
    return sched.create(req, job)


async def test_a_firing_on_time_starts_a_labelled_run_and_records_it(
    sched: Scheduler, launcher: FakeLauncher, clock: FakeClock
) -> None:
    row = make(sched)
    assert row.next_at == T0 + HOUR  # the clock is 10 s past T0
    # Nothing due: it sleeps until then, re-reading the store at least every MAX_SLEEP_S.
    assert await sched.tick() == MAX_SLEEP_S
    clock.t = T0 + HOUR - 20
    assert await sched.tick() == pytest.approx(20)
    assert launcher.started == []
    clock.t = T0 + HOUR + 0.3  # a little late is on time
    assert await sched.tick() == MAX_SLEEP_S
    [job] = launcher.started
    req = job.request
    assert req.runner == "subprocess" and req.target == "job.py:train"
    assert req.params == {"lr": 0.1} and req.name == "hourly"
    assert req.labels == {
        "team": "q",
        "tickrun.schedule": "hourly",
        "tickrun.scheduled-time": iso(T0 + HOUR),
        "tickrun.schedule-trigger": "cron",
    }
    got = sched.schedules.get("hourly")
    assert (got.last_run_uid, got.last_run_state, got.runs) == (req.uid, "running", 1)
    assert got.last_fired_at == T0 + HOUR and got.next_at == T0 + 2 * HOUR
    assert sched.active("hourly") == [req.uid]
    launcher.end(req.uid, "completed")
    await sched.settle()
    got = sched.schedules.get("hourly")
    assert got.last_run_state == "completed" and sched.active("hourly") == []
    # The next hour: a new run with a new uid.
    clock.t = T0 + 2 * HOUR
    await sched.tick()
    assert len(launcher.started) == 2 and launcher.started[1].uid != req.uid


async def test_forbid_skips_a_firing_while_the_previous_run_runs(
    sched: Scheduler, launcher: FakeLauncher, clock: FakeClock
) -> None:
    make(sched, "five", "*/5 * * * *")
    clock.t = T0 + 300
    await sched.tick()
    [first] = launcher.started
    clock.t = T0 + 600
    await sched.tick()
    assert len(launcher.started) == 1
    row = sched.schedules.get("five")
    assert row.skipped == 1 and row.last_skipped_at == T0 + 600
    assert row.last_skip_reason == f"forbid: run {first.uid} still running"
    assert row.runs == 1 and row.last_run_uid == first.uid
    launcher.end(first.uid)
    await sched.settle()
    clock.t = T0 + 900
    await sched.tick()
    assert len(launcher.started) == 2


async def test_replace_aborts_the_running_run_before_starting_the_new_one(
    sched: Scheduler, launcher: FakeLauncher, clock: FakeClock
) -> None:
    make(sched, "five", "*/5 * * * *", concurrency="replace")
    clock.t = T0 + 300
    await sched.tick()
    clock.t = T0 + 600
    await sched.tick()
    first, second = launcher.started
    assert first.aborted and not second.aborted
    assert launcher.events == [("start", first.uid), ("abort", first.uid), ("start", second.uid)]
    assert launcher.states[first.uid] == "aborted"
    row = sched.schedules.get("five")
    assert (row.last_run_uid, row.last_run_state, row.runs, row.skipped) == (
        second.uid,
        "running",
        2,
        0,
    )
    assert sched.active("five") == [second.uid]


async def test_allow_runs_both(sched: Scheduler, launcher: FakeLauncher, clock: FakeClock) -> None:
    make(sched, "five", "*/5 * * * *", concurrency="allow")
    for k in (1, 2):
        clock.t = T0 + 300 * k
        await sched.tick()
    first, second = launcher.started
    assert not first.aborted and sched.active("five") == [first.uid, second.uid]
    # The older run ending later does not overwrite the newer run's state.
    launcher.end(second.uid, "completed")
    await asyncio.sleep(0)
    launcher.end(first.uid, "error")
    await sched.settle()
    row = sched.schedules.get("five")
    assert (row.last_run_uid, row.last_run_state, row.runs) == (second.uid, "completed", 2)


def restarted(schedules: ScheduleStore, clock: FakeClock) -> tuple[Scheduler, FakeLauncher]:
    launcher = FakeLauncher()
    return Scheduler(schedules, launcher, clock=clock), launcher


async def test_missed_skip_records_the_firings_missed_while_down_and_runs_none(
    sched: Scheduler, schedules: ScheduleStore, clock: FakeClock
) -> None:
    make(sched)
    clock.t = T0 + 3 * HOUR + 600  # down from T0+10 until 10 min past the third hour
    again, launcher = restarted(schedules, clock)
    await again.tick()
    assert launcher.started == []
    row = schedules.get("hourly")
    assert (row.missed_firings, row.skipped, row.runs) == (3, 0, 0)
    assert row.last_skip_reason is not None
    assert row.last_skip_reason.startswith(f"missed 3 firing(s) up to {iso(T0 + 3 * HOUR)}")
    assert "missed policy skip" in row.last_skip_reason
    assert row.next_at == T0 + 4 * HOUR


async def test_missed_run_once_catches_up_once_for_the_newest_firing(
    sched: Scheduler, schedules: ScheduleStore, clock: FakeClock
) -> None:
    make(sched, missed="run-once")
    clock.t = T0 + 3 * HOUR + 600
    again, launcher = restarted(schedules, clock)
    await again.tick()
    [job] = launcher.started
    assert job.request.labels["tickrun.scheduled-time"] == iso(T0 + 3 * HOUR)
    row = schedules.get("hourly")
    assert row.runs == 1 and row.last_fired_at == T0 + 3 * HOUR
    assert (row.missed_firings, row.skipped) == (2, 0)
    assert (row.last_skip_reason or "").startswith(
        f"missed 2 firing(s) before {iso(T0 + 3 * HOUR)}"
    )
    assert row.next_at == T0 + 4 * HOUR
    await again.tick()  # caught up: nothing more until the next firing
    assert len(launcher.started) == 1


async def test_run_once_past_its_starting_deadline_is_skipped(
    sched: Scheduler, schedules: ScheduleStore, clock: FakeClock
) -> None:
    make(sched, missed="run-once", starting_deadline_s=300)
    clock.t = T0 + 3 * HOUR + 600  # the newest missed firing is 600 s old > 300
    again, launcher = restarted(schedules, clock)
    await again.tick()
    assert launcher.started == []
    row = schedules.get("hourly")
    assert (row.last_skip_reason or "").startswith("missed 3 firing(s)")
    assert "starting deadline 300 s" in (row.last_skip_reason or "")
    # Within the deadline it does catch up.
    make(sched, "late", missed="run-once", starting_deadline_s=900)
    clock.t = T0 + 4 * HOUR + 600
    await again.tick()
    assert [j.request.labels["tickrun.schedule"] for j in launcher.started] == ["late"]


async def test_a_day_down_on_a_per_second_cron_catches_up_once_without_counting_all(
    sched: Scheduler, schedules: ScheduleStore, clock: FakeClock
) -> None:
    make(sched, "every-second", "* * * * * *", missed="run-once")
    clock.t = T0 + 86_400 + 0.5
    again, launcher = restarted(schedules, clock)
    await again.tick()
    [job] = launcher.started
    assert job.request.labels["tickrun.scheduled-time"] == iso(T0 + 86_400)
    row = schedules.get("every-second")
    assert (row.last_skip_reason or "").startswith("missed 1000+ firing(s)")
    assert row.next_at == T0 + 86_401


async def test_pause_stops_firing_and_resume_waits_for_the_next_time(
    sched: Scheduler, launcher: FakeLauncher, clock: FakeClock
) -> None:
    make(sched)
    assert sched.pause("hourly").paused
    clock.t = T0 + 3 * HOUR + 5
    await sched.tick()
    assert launcher.started == []
    row = sched.resume("hourly")
    assert not row.paused and row.next_at == T0 + 4 * HOUR
    await sched.tick()
    row = sched.schedules.get("hourly")
    assert launcher.started == [] and (row.skipped, row.missed_firings) == (0, 0)
    clock.t = T0 + 4 * HOUR
    await sched.tick()
    assert len(launcher.started) == 1


async def test_run_now_fires_even_when_paused_and_obeys_forbid(
    sched: Scheduler, launcher: FakeLauncher
) -> None:
    make(sched, paused=True)
    uid = await sched.run_now("hourly")
    [job] = launcher.started
    assert job.uid == uid and job.request.labels["tickrun.schedule-trigger"] == "manual"
    with pytest.raises(ConflictError, match=f"forbids concurrent runs and run {uid} still"):
        await sched.run_now("hourly")
    launcher.end(uid)
    await sched.settle()
    assert sched.schedules.get("hourly").last_run_state == "completed"
    assert await sched.run_now("hourly") != uid


async def test_a_job_that_cannot_start_is_recorded_not_started(
    sched: Scheduler, launcher: FakeLauncher, clock: FakeClock
) -> None:
    make(sched)
    launcher.fail = PlatformError("no container engine found")
    clock.t = T0 + HOUR
    await sched.tick()
    row = sched.schedules.get("hourly")
    assert (row.runs, row.last_run_state) == (1, "not-started")
    assert row.next_at == T0 + 2 * HOUR and sched.active("hourly") == []


async def test_a_deleted_schedules_run_ends_quietly(
    sched: Scheduler, launcher: FakeLauncher
) -> None:
    make(sched)
    uid = await sched.run_now("hourly")
    sched.delete("hourly")
    launcher.end(uid)
    await sched.settle()
    assert sched.schedules.find("hourly") is None and sched.active("hourly") == []


async def test_the_loop_sleeps_on_its_clock_fires_and_stop_drains_the_runs(
    sched: Scheduler, launcher: FakeLauncher, clock: FakeClock
) -> None:
    await sched.start()
    try:
        make(sched, "minutely", "* * * * *")  # wakes the loop: it sleeps until T0+60
        for _ in range(100):
            if clock.sleeps and clock.sleeps[-1] == pytest.approx(50):
                break
            await asyncio.sleep(0.01)
        assert clock.sleeps[-1] == pytest.approx(50)
        assert launcher.started == []
        clock.advance(50)
        for _ in range(100):
            if launcher.started:
                break
            await asyncio.sleep(0.01)
        [job] = launcher.started
        assert job.request.labels["tickrun.scheduled-time"] == iso(T0 + 60)
    finally:
        await sched.stop()
    # Stopping aborted the running run and recorded it.
    assert job.aborted and launcher.closed
    row = sched.schedules.get("minutely")
    assert (row.last_run_uid, row.last_run_state) == (job.uid, "aborted")


async def test_start_settles_the_runs_the_last_controller_left(
    sched: Scheduler, schedules: ScheduleStore, clock: FakeClock
) -> None:
    make(sched)
    make(sched, "other")
    schedules.record_start("hourly", T0, "u-done")
    schedules.record_start("other", T0, "u-gone")
    again, launcher = restarted(schedules, clock)
    launcher.states["u-done"] = "completed"  # "u-gone" was never recorded by its job
    await again.start()
    await again.stop()
    assert schedules.get("hourly").last_run_state == "completed"
    assert schedules.get("other").last_run_state == "aborted"
