"""``/api/schedules`` in the real app (aiohttp test server; the scheduler's launcher replaced by
its fake) and the CLI against it: validation at the edge (4xx with the reason), auth, the
verbs, ``tickrun run … --schedule``."""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest
from aiohttp.test_utils import TestClient, TestServer

from tests.support.schedule_fakes import FakeLauncher
from tickrun.cli import main
from tickrun.controller.app import create_app
from tickrun.controller.schedules.api import SCHEDULER
from tickrun.controller.settings import Settings

AUTH = {"Authorization": "Bearer sekret"}
JOB = {"target": "job.py:train", "params": {"lr": 0.1}}


@pytest.fixture
async def app_client(tmp_path: Path) -> AsyncIterator[tuple[TestClient, FakeLauncher]]:
    settings = Settings(state_dir=tmp_path / "state", cache_dir=tmp_path / "cache", token="sekret")
    app = create_app(settings)
    launcher = FakeLauncher()
    app[SCHEDULER].launcher = launcher
    async with TestClient(TestServer(app)) as c:
        yield c, launcher
        for job in launcher.started:  # let the drain on shutdown end quickly
            launcher.end(job.uid)


async def _post(c: TestClient, body: Any) -> tuple[int, dict[str, Any]]:
    resp = await c.post("/api/schedules", json=body, headers=AUTH)
    return resp.status, await resp.json()


@pytest.mark.parametrize(
    ("body", "status", "says"),
    [
        ({"name": "a", "cron": "61 * * * *", "job": JOB}, 400, "is not valid cron syntax"),
        ({"name": "a", "cron": "every hour", "job": JOB}, 400, "5 fields"),
        ({"name": "a", "cron": "0 * * * *", "timezone": "Mars/Base", "job": JOB}, 400, "Mars"),
        ({"name": "A_b", "cron": "0 * * * *", "job": JOB}, 400, "lowercase letters"),
        ({"name": "a", "cron": "0 * * * *", "job": {**JOB, "runner": "local"}}, 400, "outside"),
        ({"name": "a", "cron": "0 * * * *", "job": {"params": {}}}, 400, "job: target"),
        ({"name": "a", "cron": "0 * * * *", "job": {**JOB, "uid": "x"}}, 400, "own run uid"),
        ({"name": "a", "cron": "0 * * * *", "job": JOB, "when": 1}, 400, "when: unknown"),
        ({"name": "a", "cron": "0 * * * *", "job": JOB, "concurrency": "queue"}, 400, "forbid"),
        (
            {"name": "a", "cron": "0 * * * *", "job": JOB, "starting_deadline_s": 60},
            400,
            "run-once only",
        ),
    ],
)
async def test_bad_schedules_are_400s_that_say_why(
    app_client: tuple[TestClient, FakeLauncher], body: dict[str, Any], status: int, says: str
) -> None:
    c, _ = app_client
    got, payload = await _post(c, body)
    assert got == status and payload["error"] == "BadRequestError"
    assert says in payload["detail"], payload
    resp = await c.post("/api/schedules", data=b"{nope", headers=AUTH)
    assert resp.status == 400 and (await resp.json())["detail"] == "request body is not valid JSON"
    assert (await c.get("/api/schedules", headers=AUTH)).status == 200
    assert (await (await c.get("/api/schedules", headers=AUTH)).json())["schedules"] == []


async def test_the_verbs_need_the_token_and_do_what_they_say(
    app_client: tuple[TestClient, FakeLauncher],
) -> None:
    c, launcher = app_client
    assert (await c.get("/api/schedules")).status == 401
    assert (await c.post("/api/schedules/x/run")).status == 401
    before = time.time()
    status, row = await _post(c, {"name": "hourly", "cron": "0 * * * *", "job": JOB})
    assert status == 201 and row["name"] == "hourly" and row["job"]["runner"] == "subprocess"
    assert before < row["next_at"] <= before + 3600 and row["next_at"] % 3600 == 0
    assert (await _post(c, {"name": "hourly", "cron": "0 * * * *", "job": JOB}))[0] == 409
    for path in ("/api/schedules/ghost", "/api/schedules/ghost/pause"):
        method = c.get if path.endswith("ghost") else c.post
        resp = await method(path, headers=AUTH)
        assert resp.status == 404 and "schedule 'ghost' not found" in (await resp.json())["detail"]
    paused = await (await c.post("/api/schedules/hourly/pause", headers=AUTH)).json()
    assert paused["paused"] is True and paused["next_at"] is None
    resp = await c.post("/api/schedules/hourly/run", headers=AUTH)
    assert resp.status == 202
    started = await resp.json()
    [job] = launcher.started
    assert started["run_uid"] == job.uid and started["schedule"]["active_runs"] == [job.uid]
    assert job.request.labels["tickrun.schedule-trigger"] == "manual"
    again = await c.post("/api/schedules/hourly/run", headers=AUTH)  # forbid: one at a time
    assert again.status == 409 and job.uid in (await again.json())["detail"]
    resumed = await (await c.post("/api/schedules/hourly/resume", headers=AUTH)).json()
    assert resumed["paused"] is False and resumed["next_at"] is not None
    listing = await (await c.get("/api/schedules", headers=AUTH)).json()
    assert [s["name"] for s in listing["schedules"]] == ["hourly"]
    assert listing["schedules"][0]["last_run_uid"] == job.uid
    assert (await c.delete("/api/schedules/hourly", headers=AUTH)).status == 200
    assert (await c.get("/api/schedules/hourly", headers=AUTH)).status == 404


async def _cli(args: list[str], url: str, capsys: pytest.CaptureFixture[str]) -> tuple[int, str]:
    def call() -> int:
        try:
            main(args)
        except SystemExit as exc:
            return int(exc.code or 0)
        return 0

    code = await asyncio.to_thread(call)
    out = capsys.readouterr()
    return code, out.out + out.err


async def test_tickrun_run_schedule_and_the_schedules_verbs(
    app_client: tuple[TestClient, FakeLauncher],
    capsys: pytest.CaptureFixture[str],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    c, launcher = app_client
    url = str(c.make_url("")).rstrip("/")
    monkeypatch.setenv("TICKRUN_CONTROLLER_URL", url)
    monkeypatch.setenv("TICKRUN_TOKEN", "sekret")
    code, out = await _cli(
        ["run", "src/train.py:fit", "-p", "lr=0.2", "--hyper", "depth=2,3", "--label", "k=v",
         "--schedule", "*/5 * * * *", "--concurrency", "replace", "--missed", "run-once",
         "--starting-deadline", "120"],
        url,
        capsys,
    )  # fmt: skip
    assert code == 0, out
    assert "schedule train-fit created: */5 * * * * (UTC)" in out
    row = await (await c.get("/api/schedules/train-fit", headers=AUTH)).json()
    assert row["job"]["runner"] == "subprocess" and row["job"]["target"] == "src/train.py:fit"
    assert row["job"]["params"] == {"lr": 0.2} and row["job"]["hyperparams"] == {"depth": [2, 3]}
    assert row["job"]["labels"] == {"k": "v"}
    assert (row["concurrency"], row["missed"], row["starting_deadline_s"]) == (
        "replace",
        "run-once",
        120.0,
    )
    code, out = await _cli(
        ["run", "x.py:f", "--runner", "local", "--schedule", "0 * * * *"], url, capsys
    )
    assert code == 2 and "outside the controller's process" in out
    code, out = await _cli(["run", "x.py:f", "--schedule", "0 25 * * *"], url, capsys)
    assert code == 2 and "not valid cron syntax" in out
    code, out = await _cli(["schedules", "run", "train-fit"], url, capsys)
    assert code == 0 and f"run {launcher.started[0].uid} started" in out
    code, out = await _cli(["schedules", "pause", "train-fit"], url, capsys)
    assert code == 0 and "paused: yes" in out
    code, out = await _cli(["schedules", "list"], url, capsys)
    lines = out.splitlines()
    assert lines[0].split() == [
        *("NAME", "CRON", "STATE", "NEXT", "LAST", "RUN", "RUNS", "SKIPPED", "MISSED")
    ]
    assert lines[1].startswith("train-fit") and " paused " in lines[1]
    code, out = await _cli(["schedules", "show", "train-fit"], url, capsys)
    assert f"last run: {launcher.started[0].uid} (running)" in out
    assert "concurrency=replace  missed=run-once  starting deadline 120 s" in out
    # The time-series tutorial's "retrain every hour", as one command.
    code, out = await _cli(
        ["run", "hub://auto_trainer:1#train", "--schedule", "0 * * * *", "--json"], url, capsys
    )
    assert code == 0, out
    hourly = await (await c.get("/api/schedules/auto-trainer", headers=AUTH)).json()
    assert hourly["job"]["target"] == "hub://auto_trainer:1#train" and hourly["cron"] == "0 * * * *"
    code, out = await _cli(["schedules", "delete", "train-fit"], url, capsys)
    assert code == 0
    code, out = await _cli(["schedules", "show", "train-fit"], url, capsys)
    assert code == 2 and "schedule 'train-fit' not found" in out
