"""Step caching: a completed run with the same key (code, params, input digests, requirements)
is reused; a change to any of them runs the step again."""

from __future__ import annotations

import asyncio
import shutil
from collections.abc import AsyncIterator
from pathlib import Path

import pandas as pd
import pytest
from aiohttp import web
from aiohttp.test_utils import TestServer
from pydantic import SecretStr

from tickrun import Pipeline
from tickrun.functions.errors import BadRequestError
from tickrun.functions.runs import HttpRunDB, SqlRunDB, TrackingSettings
from tickrun.functions.runs.api import add_routes
from tickrun.hub.sampledata import market_data

from .conftest import JOBS, job

STEP_LABEL = "tickrun.pipeline-step"


def pipeline(market: str, rows: int = 40, horizon: int = 1, jobs: Path = JOBS) -> Pipeline:
    p = Pipeline("cached", project="cache")
    bars = p.step("bars", f"{jobs}:bars", inputs={"market": market}, params={"rows": rows})
    p.step(
        "returns",
        f"{jobs}:returns",
        inputs={"bars": bars.output("bars")},
        params={"horizon": horizon},
    )
    return p


def states(run: object) -> dict[str, str]:
    return {n: s.state for n, s in run.steps.items()}  # type: ignore[attr-defined]


def step_runs(db: SqlRunDB, step: str) -> int:
    return len(db.list_runs("cache", label=f"{STEP_LABEL}={step}", limit=1000))


def test_an_unchanged_pipeline_reuses_every_step(db: SqlRunDB) -> None:
    market = str(market_data())
    first = pipeline(market).run()
    assert states(first) == {"bars": "completed", "returns": "completed"}
    second = pipeline(market).run()
    assert second.state == "completed"
    assert states(second) == {"bars": "cached", "returns": "cached"}
    for name in ("bars", "returns"):
        old, new = first.steps[name], second.steps[name]
        assert new.cached and new.attempts == 0
        assert new.run_uid == old.run_uid  # the earlier run, its outputs and results
        assert new.outputs == old.outputs and new.results == old.results
        assert step_runs(db, name) == 1  # nothing ran again
    node = {n["name"]: n for n in second.graph["nodes"]}["returns"]
    assert node["state"] == "cached" and node["cached"] is True
    # cache=False runs everything, and the runs still carry their key for later.
    third = pipeline(market).run(cache=False)
    assert states(third) == {"bars": "completed", "returns": "completed"}
    assert step_runs(db, "bars") == 2
    assert (
        db.get_run(third.steps["bars"].run_uid or "").labels["tickrun.pipeline.cache-key"]
        == db.get_run(first.steps["bars"].run_uid or "").labels["tickrun.pipeline.cache-key"]
    )


def test_a_param_change_reruns_that_step_and_what_its_output_changes(db: SqlRunDB) -> None:
    market = str(market_data())
    pipeline(market, rows=40, horizon=1).run()
    # Downstream param: bars is reused, returns runs.
    run = pipeline(market, rows=40, horizon=3).run()
    assert states(run) == {"bars": "cached", "returns": "completed"}
    # Upstream param: new bars (other content), so returns' input digest changes too.
    run = pipeline(market, rows=41, horizon=3).run()
    assert states(run) == {"bars": "completed", "returns": "completed"}
    assert run.steps["returns"].results["bars_rows"] == 41


def test_an_input_files_content_not_its_timestamp_decides(tmp_path: Path, db: SqlRunDB) -> None:
    market = tmp_path / "btc.csv"
    full = pd.read_csv(market_data())
    full.head(100).to_csv(market, index=False)
    assert states(pipeline(str(market)).run())["bars"] == "completed"
    full.head(100).to_csv(market, index=False)  # rewritten, same bytes
    assert states(pipeline(str(market)).run())["bars"] == "cached"
    full.head(101).to_csv(market, index=False)  # one more bar
    run = pipeline(str(market)).run()
    assert states(run)["bars"] == "completed"
    # The last 40 of 101 bars differ from the last 40 of 100: returns reruns on new content.
    assert states(run)["returns"] == "completed"


def test_a_code_change_reruns_the_step(tmp_path: Path, db: SqlRunDB) -> None:
    jobs = tmp_path / "steps.py"
    shutil.copy(JOBS, jobs)
    market = str(market_data())
    assert states(pipeline(market, jobs=jobs).run()) == {
        "bars": "completed",
        "returns": "completed",
    }
    assert states(pipeline(market, jobs=jobs).run()) == {"bars": "cached", "returns": "cached"}
    jobs.write_text(jobs.read_text() + "\n# a changed line\n")
    assert states(pipeline(market, jobs=jobs).run()) == {
        "bars": "completed",
        "returns": "completed",
    }


def test_a_step_can_opt_out_and_failed_runs_are_never_reused(db: SqlRunDB) -> None:
    def build() -> Pipeline:
        p = Pipeline("opt-out", project="cache")
        p.step("always", job("sleep_step"), params={"seconds": 0}, cache=False)
        p.step("never-ok", job("fail"))
        p.step("cached", job("sleep_step"), params={"seconds": 0.01})
        return p

    build().run()
    run = build().run()
    assert states(run) == {"always": "completed", "never-ok": "error", "cached": "cached"}
    assert step_runs(db, "never-ok") == 2


@pytest.fixture
async def server(tmp_path: Path, home: Path) -> AsyncIterator[tuple[str, SqlRunDB]]:
    db = SqlRunDB(f"sqlite:///{tmp_path / 'server.db'}")
    app = web.Application()
    add_routes(app, db)
    srv = TestServer(app, host="127.0.0.1")
    await srv.start_server()
    try:
        yield str(srv.make_url("")).rstrip("/"), db
    finally:
        await srv.close()
        db.close()


async def test_the_cache_works_through_the_controllers_run_api(
    server: tuple[str, SqlRunDB], settings: TrackingSettings
) -> None:
    url, server_db = server
    remote = settings.model_copy(update={"controller_url": url, "token": SecretStr("t")})
    market = str(market_data())
    first = await asyncio.to_thread(pipeline(market).run, settings=remote)
    second = await asyncio.to_thread(pipeline(market).run, settings=remote)
    assert states(first) == {"bars": "completed", "returns": "completed"}
    assert states(second) == {"bars": "cached", "returns": "cached"}
    assert server_db.get_run(second.uid).labels["tickrun.pipeline"] == "cached"
    client = HttpRunDB(url, "t")
    found = await asyncio.to_thread(client.list_runs, "cache", label=f"{STEP_LABEL}=bars")
    assert [r.uid for r in found] == [first.steps["bars"].run_uid]
    with pytest.raises(BadRequestError, match="key=value"):
        await asyncio.to_thread(client.list_runs, "cache", label="no-equals-sign")


def test_a_closure_is_never_cached(db: SqlRunDB) -> None:
    def build(scale: float) -> Pipeline:
        def scaled(context: object) -> None:
            context.log_result("value", scale)  # type: ignore[attr-defined]

        p = Pipeline("closures", project="cache")
        p.step("scaled", scaled)
        return p

    first = build(1.0).run()
    second = build(2.0).run()
    # Same file, same (no) params: only the captured value differs, so no key at all.
    assert states(first) == states(second) == {"scaled": "completed"}
    assert second.steps["scaled"].results == {"value": 2.0}
    labels = db.get_run(second.steps["scaled"].run_uid or "").labels
    assert "tickrun.pipeline.cache-key" not in labels
