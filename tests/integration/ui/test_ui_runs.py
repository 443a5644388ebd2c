"""The runs pages in a real browser against a real controller with real runs: hub://market_features
on the shipped hourly BTCUSDT bars, a hub://auto_trainer grid sweep over C (three iterations) and a
plain auto_trainer run, all tracked in the controller's database.

Flows: log in, search/filter/sort the runs table and compare two runs; a sweep's page with its
iterations (best marked) and its interactive chart; compare a sweep's iterations (parallel
coordinates); a dataset's preview (schema, statistics, first rows) and a model's lineage.
Assertions are on what the page shows (numbers and keys from the runs themselves); the page_for
fixture fails a test on any console error. Screenshots go to build/ui-screenshots/.
"""

from __future__ import annotations

import json
import os
import threading
import time
import urllib.request
import uuid
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pandas as pd
import pytest
from playwright.sync_api import Page

import tickrun
from tests.integration.test_controller_harness import TOKEN, ControllerProc, cleanup
from tests.integration.ui.conftest import wait_js
from tickrun.functions.runs import run_function
from tickrun.hub.sampledata import market_data

pytestmark = [pytest.mark.slow, pytest.mark.timeout(240)]

GRID = [0.01, 0.1, 1.0]
LOGREG = "sklearn.linear_model.LogisticRegression"


@dataclass
class Data:
    url: str
    features: Any
    sweep: Any
    plain: Any


def js_num(v: float) -> str:
    """What the page's fmt.num shows for a number of ordinary size: integers with thousands
    separators, others with 6 significant digits (JS's shortest repr, as Python's)."""
    if float(v).is_integer():
        return f"{int(v):,}"
    return repr(float(f"{v:.6g}"))


@pytest.fixture(scope="module")
def data(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Data]:
    tmp = tmp_path_factory.mktemp("ui-runs")
    home = tmp / "home"
    env = dict(os.environ)
    for var in ("TICKRUN_DB_URL", "TICKRUN_CONTROLLER_URL", "TICKRUN_ARTIFACT_PATH"):
        env.pop(var, None)
    env["TICKRUN_HOME"] = str(home)  # the controller reads the artifacts this process writes
    ctl = ControllerProc(tmp / "state", env).start()
    try:
        with pytest.MonkeyPatch.context() as mp:
            # This process's runs track in the controller.
            mp.setenv("TICKRUN_HOME", str(home))
            mp.setenv("TICKRUN_CONTROLLER_URL", ctl.url)
            mp.setenv("TICKRUN_TOKEN", TOKEN)
            for var in ("TICKRUN_DB_URL", "TICKRUN_ARTIFACT_PATH"):
                mp.delenv(var, raising=False)
            bars = tmp / "bars.csv"
            pd.read_csv(market_data()).iloc[-5000:].to_csv(bars, index=False)
            features = tickrun.import_function("hub://market_features:1").run(
                params={"windows": "6,24"}, inputs={"dataset": str(bars)}, project="btc"
            )
            assert features.state == "completed", features.error
            trainer = tickrun.import_function("hub://auto_trainer:1")
            dataset = {"dataset": features.outputs["features"]}
            sweep = trainer.run(
                "train",
                params={"model_class": LOGREG, "scale": True},
                hyperparams={"CLASS_C": GRID},
                selector="max.accuracy",
                inputs=dataset,
                project="btc",
            )
            assert sweep.state == "completed", sweep.error
            plain = trainer.run(
                "train",
                params={"model_class": LOGREG, "scale": False, "CLASS_C": 5.0},
                inputs=dataset,
                project="btc",
            )
            assert plain.state == "completed", plain.error
            yield Data(ctl.url, features, sweep, plain)
    finally:
        cleanup(ctl)


def api(data: Data, path: str) -> Any:
    req = urllib.request.Request(data.url + path, headers={"Authorization": f"Bearer {TOKEN}"})
    with urllib.request.urlopen(req, timeout=30) as resp:
        return json.loads(resp.read())


def rows(page: Page, table: str) -> list[Any]:
    return page.locator(f"{table} tbody tr").all()


def cell_texts(page: Page, table: str, key: str) -> list[str]:
    """The texts of column ``key`` (a th data-key) in ``table``, top to bottom."""
    idx = page.eval_on_selector(
        f"{table} thead tr",
        "(tr, key) => [...tr.children].findIndex((th) => th.dataset.key === key)",
        key,
    )
    assert idx >= 0, f"no column {key} in {table}"
    texts: list[str] = page.eval_on_selector_all(
        f"{table} tbody tr", "(trs, i) => trs.map((tr) => tr.children[i].textContent.trim())", idx
    )
    return texts


def wait_table(page: Page, n: int) -> None:
    wait_js(
        page,
        "n => document.querySelectorAll('#runs-table tbody tr').length === n"
        " && document.querySelector('#runs-status').textContent.includes('run')",
        n,
    )


def test_runs_table_search_filter_sort_and_compare_two(
    data: Data, page_for: Callable[..., Page], shot: Callable[[Page, str], Path]
) -> None:
    page = page_for(data.url + "/#/runs")
    page.wait_for_selector("h1:text('Runs')")
    wait_table(page, 3)
    assert page.inner_text("#runs-status").startswith("3 runs")
    names = cell_texts(page, "#runs-table", "name")
    # Newest first; the sweep is marked as one.
    assert names == [
        data.plain.record.name,
        f"{data.sweep.record.name} sweep",
        data.features.record.name,
    ]
    shot(page, "runs")

    # Column chooser: hide a result column; the choice survives a reload (localStorage).
    assert page.locator("#runs-table th[data-key='results.auc']").count() == 1
    page.click(".chooser-btn")
    page.fill(".chooser-filter", "results.auc")
    page.locator(".chooser-item", has_text="results.auc").locator("input").uncheck()
    page.wait_for_selector("#runs-table th[data-key='results.auc']", state="detached")
    page.reload()
    wait_table(page, 3)
    assert page.locator("#runs-table th[data-key='results.accuracy']").count() == 1
    assert page.locator("#runs-table th[data-key='results.auc']").count() == 0

    # Server-side pages: one run a page, newest first, walked with the pager.
    page.goto(data.url + "/#/runs?limit=1")
    wait_table(page, 1)
    assert page.inner_text(".pager-info >> nth=0") == "1–1 of 3"
    assert cell_texts(page, "#runs-table", "uid") == [data.plain.uid[:10]]
    page.click(".pager-btn[title='next page'] >> nth=0")
    page.wait_for_selector(".pager-info:text('2–2 of 3')")
    wait_table(page, 1)
    assert cell_texts(page, "#runs-table", "uid") == [data.sweep.uid[:10]]
    page.goto(data.url + "/#/runs")
    wait_table(page, 3)

    # Only the trainer runs report accuracy; sorting on it puts the better one first.
    page.fill("#runs-filter", "results.accuracy>0")
    page.press("#runs-filter", "Enter")
    wait_table(page, 2)
    assert page.inner_text("#runs-filters").startswith("results.accuracy>0")
    page.click("#runs-table th[data-key='results.accuracy']")  # desc
    page.wait_for_selector("#runs-table th.desc[data-key='results.accuracy']")
    wait_table(page, 2)
    accs = sorted([data.sweep.results["accuracy"], data.plain.results["accuracy"]], reverse=True)
    assert cell_texts(page, "#runs-table", "results.accuracy") == [js_num(a) for a in accs]
    assert "sort=results.accuracy" in page.url  # the view is in the hash (bookmarkable)

    # Text search narrows to nothing, then back.
    page.fill("#runs-q", "no-such-run")
    page.wait_for_selector("#runs-table .empty")
    page.fill("#runs-q", "trainer")
    wait_table(page, 2)

    # Select both and compare.
    for cb in page.locator("#runs-table tbody input.sel").all():
        cb.check()
    assert page.inner_text("#runs-compare") == "Compare 2"
    shot(page, "runs-filtered")
    asked: list[str] = []
    page.on("request", lambda req: asked.append(req.url) if "/api/runs" in req.url else None)
    page.click("#runs-compare")
    page.wait_for_selector("h1:text('Compare 2 runs')")
    page.wait_for_selector("#compare-table table")
    # Both runs in one call (GET /api/runs?uids=a,b), none one by one.
    assert len(asked) == 1, asked
    assert "uids=" in asked[0]
    assert {data.sweep.uid, data.plain.uid} <= set(
        asked[0].split("uids=")[1].split("&")[0].replace("%2C", ",").split(",")
    )
    # scale differs (True vs False) and is highlighted; model_class is the same.
    scale = page.locator("#compare-table tr[data-field='params.scale']")
    assert "differs" in (scale.get_attribute("class") or "")
    assert sorted(t.strip() for t in scale.locator("td").all_inner_texts()) == ["false", "true"]
    same = page.locator("#compare-table tr[data-field='params.model_class']")
    assert "differs" not in (same.get_attribute("class") or "")
    acc_row = page.locator("#compare-table tr[data-field='results.accuracy'] td")
    shown = acc_row.all_inner_texts()
    assert sorted(shown) == sorted(js_num(a) for a in accs)
    if accs[0] != accs[1]:  # the higher accuracy is the best: bold
        assert page.inner_text(
            "#compare-table tr[data-field='results.accuracy'] td.best-val"
        ) == js_num(accs[0])
    # A loss: the lower is the best, and the legend says so.
    losses = sorted([data.sweep.results["log_loss"], data.plain.results["log_loss"]])
    assert losses[0] != losses[1]
    best_loss = page.locator("#compare-table tr[data-field='results.log_loss'] td.best-val")
    assert best_loss.inner_text() == js_num(losses[0])
    assert best_loss.get_attribute("title") == "best (lowest)"
    worst = page.inner_text("#compare-table tr[data-field='results.log_loss'] td.worst-val")
    assert worst == js_num(losses[1])
    assert "lowest for losses and errors" in page.inner_text("section.card:has(#compare-table)")
    wait_js(page, "() => document.querySelector('#compare-chart')?.dataset.points === '2'")
    shot(page, "compare-two")


def test_sweep_page_iterations_and_interactive_plot(
    data: Data, page_for: Callable[..., Page], shot: Callable[[Page, str], Path]
) -> None:
    sweep = data.sweep
    page = page_for(f"{data.url}/#/runs/{sweep.uid}")
    page.wait_for_selector(f"h1:has-text('{sweep.record.name}')")
    page.wait_for_selector("#iterations-table tbody tr")
    its = rows(page, "#iterations-table")
    assert len(its) == len(GRID)
    best = sweep.record.best_iteration
    assert best in (1, 2, 3)
    best_row = page.locator("#iterations-table tbody tr.best")
    assert best_row.count() == 1 and best_row.locator(".best-mark").count() == 1
    assert cell_texts(page, "#iterations-table", "iteration")[best - 1].endswith(str(best))
    c_shown = cell_texts(page, "#iterations-table", "params.CLASS_C")
    assert c_shown == [js_num(c) for c in GRID]
    accs = {i.iteration: i.results["accuracy"] for i in sweep.iterations}
    assert cell_texts(page, "#iterations-table", "results.accuracy") == [
        js_num(accs[i]) for i in (1, 2, 3)
    ]
    # Results and inputs cards show the run's own values; the input links to its artifact.
    results_text = page.inner_text("section.card:has(h2:text('Results'))")
    assert js_num(sweep.results["accuracy"]) in results_text
    assert page.locator(f"a:has-text('{data.features.outputs['features']}')").count() == 1

    # The chart: one point per iteration; hovering shows the iteration's values.
    wait_js(page, "() => document.querySelector('#iterations-chart')?.dataset.points === '3'")
    tip = page.evaluate(
        """() => {
            const inst = echarts.getInstanceByDom(document.querySelector('#iterations-chart'));
            const series = inst.getOption().series;
            inst.dispatchAction({type: 'showTip', seriesIndex: 0, dataIndex: 0});
            return {points: series.map((s) => s.data.length), zoom: inst.getOption().dataZoom.length};
        }"""
    )
    assert sum(tip["points"]) == 3 and tip["zoom"] >= 1
    wait_js(
        page,
        "() => [...document.querySelectorAll('#iterations-chart div')].some(d => d.textContent.includes('CLASS_C ='))",
    )
    # The run's plots inline: every plot artifact's image decoded by the browser.
    plots = [
        a["key"]
        for a in api(data, f"/api/artifacts?uid={sweep.uid}&iteration=0")["artifacts"]
        if a["kind"] == "plot"
    ]
    page.wait_for_selector(".gallery img")
    loaded = wait_js(
        page,
        "() => { const imgs = [...document.querySelectorAll('.gallery img')];"
        " return imgs.every((i) => i.complete && i.naturalWidth > 0) && imgs.map((i) => i.alt); }",
    )
    assert "iteration_plot" in loaded and "roc-curves" in loaded
    assert sorted(loaded) == sorted(plots)
    shot(page, "run-sweep")

    # A plot opens on its own page, full size.
    page.click(".gallery a:has(img[alt='iteration_plot'])")
    page.wait_for_selector("h1:has-text('iteration_plot')")
    width = wait_js(
        page,
        "() => { const i = document.querySelector('#artifact-image'); return i && i.complete && i.naturalWidth; }",
    )
    assert width > 100
    shot(page, "artifact-plot")
    page.go_back()
    page.wait_for_selector("#iterations-table tbody tr")

    # An iteration's page: marked in the same table.
    other = next(i for i in (1, 2, 3) if i != best)
    page.click(f"#iterations-table a[href='#/runs/{sweep.uid}?iteration={other}']")
    page.wait_for_selector(f"h1:has-text('iteration {other}')")
    page.wait_for_selector("#iterations-table tbody tr.selected")
    sel = cell_texts(page, "#iterations-table", "iteration")
    marked = page.eval_on_selector_all(
        "#iterations-table tbody tr", "trs => trs.map(tr => tr.classList.contains('selected'))"
    )
    assert [s for s, m in zip(sel, marked, strict=True) if m][0].endswith(str(other))
    shot(page, "run-iteration")


def test_compare_sweep_iterations_parallel_coordinates(
    data: Data, page_for: Callable[..., Page], shot: Callable[[Page, str], Path]
) -> None:
    page = page_for(f"{data.url}/#/compare?uids={data.sweep.uid}")
    page.wait_for_selector("h1:has-text('Compare iterations')")
    wait_js(page, "() => document.querySelector('#compare-parallel')?.dataset.lines === '3'")
    axes = page.evaluate(
        """() => {
            const inst = echarts.getInstanceByDom(document.querySelector('#compare-parallel'));
            const o = inst.getOption();
            return {names: o.parallelAxis.map((a) => a.name), type: o.series[0].type};
        }"""
    )
    assert axes["type"] == "parallel"
    assert axes["names"][0] == "CLASS_C" and any("accuracy" in n for n in axes["names"])
    # C = 0.01, 0.1, 1 spans two decades: log axes, in parallel coordinates and the scatter.
    types = page.evaluate(
        """() => {
            const par = echarts.getInstanceByDom(document.querySelector('#compare-parallel'));
            const sc = echarts.getInstanceByDom(document.querySelector('#compare-chart'));
            return {par: par.getOption().parallelAxis[0].type, x: sc.getOption().xAxis[0].type};
        }"""
    )
    assert types == {"par": "log", "x": "log"}
    c_row = page.locator("#compare-table tr[data-field='params.CLASS_C'] td").all_inner_texts()
    assert c_row == [js_num(c) for c in GRID]
    shot(page, "compare-sweep")


def test_dataset_preview_and_model_lineage(
    data: Data, page_for: Callable[..., Page], shot: Callable[[Page, str], Path]
) -> None:
    uri = data.features.outputs["features"]
    df = data.features.artifact("features").as_df()
    page = page_for(f"{data.url}/#/runs/{data.sweep.uid}")
    page.click(f"a:has-text('{uri}')")
    page.wait_for_selector("h1:has-text('features')")
    page.wait_for_selector("#dataset-shape")
    assert page.inner_text("#dataset-shape") == f"{len(df):,} rows × {len(df.columns)} columns"
    names = cell_texts(page, ".schema", "name")
    assert names == list(df.columns)
    row = names.index("rsi_14")
    assert cell_texts(page, ".schema", "dtype")[row] == "float64"
    assert cell_texts(page, ".schema", "mean")[row] == js_num(float(df["rsi_14"].mean()))
    assert cell_texts(page, ".schema", "max")[row] == js_num(float(df["rsi_14"].max()))
    first = cell_texts(page, ".preview-rows", "rsi_14")
    assert len(first) == 20 and first[0] == js_num(float(df["rsi_14"].iloc[0]))
    # Past the stored preview, pages are read from the dataset's file (GET …/rows).
    assert page.inner_text("#dataset-rows-range") == f"rows 1–20 of {len(df):,}"
    page.click("#dataset-rows-next")
    page.wait_for_selector(f"#dataset-rows-range:text-is('rows 21–70 of {len(df):,}')")
    later = cell_texts(page, ".preview-rows", "rsi_14")
    assert later == [js_num(float(v)) for v in df["rsi_14"].iloc[20:70]]
    page.click("#dataset-rows-prev")
    page.wait_for_selector(f"#dataset-rows-range:text-is('rows 1–50 of {len(df):,}')")
    wait_js(page, "() => document.querySelector('#dataset-chart')?.dataset.ready === '1'")
    # Downloadable: the link gives the artifact's bytes.
    href = page.get_attribute("#artifact-download", "href")
    got = page.request.get(data.url + href)
    assert (
        got.status == 200
        and len(got.body()) == data.features.artifact_record("features").size_bytes
    )
    shot(page, "artifact-dataset")

    # The sweep's model: metadata, metrics and lineage back to the run and its dataset.
    best = data.sweep.record.best_iteration
    page.goto(f"{data.url}/#/artifacts/btc/{data.sweep.uid}/0/model")
    page.wait_for_selector("#model-lineage")
    lineage = page.inner_text("#model-lineage")
    assert f"iteration {best}" in lineage and uri in lineage
    assert "sklearn" in page.inner_text("section.card:has(h2:text('Metadata'))")
    shot(page, "artifact-model")


def test_run_page_shows_the_handlers_log(
    data: Data, page_for: Callable[..., Page], shot: Callable[[Page, str], Path]
) -> None:
    """auto_trainer's handler logs through context.logger; the run page shows those lines."""
    plain = data.plain
    req = urllib.request.Request(
        f"{data.url}/api/runs/{plain.uid}/log", headers={"Authorization": f"Bearer {TOKEN}"}
    )
    with urllib.request.urlopen(req, timeout=30) as resp:
        assert resp.headers["Content-Type"].startswith("text/plain")
        stored = resp.read().decode()
    training = [ln for ln in stored.splitlines() if " INFO training " in ln]
    assert len(training) == 1 and f'"model_class": "{LOGREG}"' in training[0]
    page = page_for(f"{data.url}/#/runs/{plain.uid}")
    page.wait_for_selector("#run-log[data-ready='1']")
    shown = page.inner_text("#run-log")
    assert shown.strip() == stored.strip()
    assert training[0] in shown
    # Scrollable, monospace, downloadable.
    style = page.eval_on_selector(
        "#run-log", "e => [getComputedStyle(e).overflowY, getComputedStyle(e).fontFamily]"
    )
    assert style[0] == "auto" and "mono" in style[1].lower()
    href = page.get_attribute("#run-log-download", "href")
    got = page.request.get(data.url + href)
    assert got.status == 200 and got.text() == stored
    assert "attachment" in got.headers["content-disposition"]
    shot(page, "run-log")

    # A sweep's iteration has its own log; the sweep's page shows the best iteration's.
    sweep = data.sweep
    best = sweep.record.best_iteration
    page.goto(f"{data.url}/#/runs/{sweep.uid}")
    page.wait_for_selector("#run-log[data-ready='1']")
    assert f"from the best iteration {best}" in page.inner_text("section.card:has(#run-log)")
    assert " INFO training " in page.inner_text("#run-log")


# A handler that logs in phases, each held until the test lets it go: the page is looked at
# while the run is certainly running, with no timing assumption.
LIVE_PHASES = [threading.Event(), threading.Event()]


def logs_in_phases(context: Any, n: int = 60) -> dict[str, int]:
    for phase, gate in enumerate(LIVE_PHASES):
        for i in range(n):
            context.logger.info(f"phase {phase} line {i}")
            time.sleep(0.02)  # lines over a few seconds, as a training loop writes them
        if not gate.wait(120):
            raise RuntimeError("the test never released the handler")
    context.logger.info("done with both phases")
    return {"lines": 2 * n + 1}


def _log_state(page: Page) -> dict[str, Any]:
    state: dict[str, Any] = page.evaluate(
        """() => {
            const pre = document.querySelector('#run-log');
            return {
                text: pre ? pre.textContent : '',
                mode: pre ? pre.dataset.state || '' : '',
                live: !!document.querySelector('#run-log-live'),
                scrollTop: pre ? pre.scrollTop : -1,
                atBottom: pre ? pre.scrollTop + pre.clientHeight >= pre.scrollHeight - 4 : false,
                overflows: pre ? pre.scrollHeight > pre.clientHeight : false,
            };
        }"""
    )
    return state


def test_run_page_follows_a_running_runs_log(
    data: Data, page_for: Callable[..., Page], shot: Callable[[Page, str], Path]
) -> None:
    """A run that logs over several seconds: its page shows the lines while it runs (a live
    marker, the view kept at the end, not when the reader scrolled up), then the final log."""
    for gate in LIVE_PHASES:
        gate.clear()
    uid = uuid.uuid4().hex
    out: list[Any] = []
    runner = threading.Thread(
        target=lambda: out.append(
            run_function(logs_in_phases, project="btc", name="live-log", uid=uid, progress=False)
        ),
        daemon=True,
    )
    runner.start()
    try:
        # Opened once the run is recorded (before, its page would be a 404).
        deadline = time.monotonic() + 60
        while not api(data, "/api/runs?name=live-log&project=btc")["runs"]:
            assert time.monotonic() < deadline, "the run was never recorded"
            time.sleep(0.1)
        page = page_for(f"{data.url}/#/runs/{uid}")
        # Phase 0's lines arrive while the run waits at its first gate: live, at the end.
        wait_js(
            page,
            "() => (document.querySelector('#run-log')?.textContent || '')"
            ".includes('phase 0 line 59')",
            timeout_s=90,
        )
        state = _log_state(page)
        assert state["live"] and state["mode"] == "live"
        assert "phase 1" not in state["text"] and "done" not in state["text"]
        assert api(data, f"/api/runs/{uid}")["run"]["state"] == "running"
        assert state["overflows"] and state["atBottom"]
        assert "running" in page.inner_text("h1")
        shot(page, "run-log-live")

        # The reader scrolls up; phase 1's lines arrive, the view stays where the reader put it.
        page.eval_on_selector("#run-log", "e => { e.scrollTop = 0; }")
        LIVE_PHASES[0].set()
        wait_js(
            page,
            "() => (document.querySelector('#run-log')?.textContent || '')"
            ".includes('phase 1 line 59')",
            timeout_s=90,
        )
        state = _log_state(page)
        assert state["live"] and state["scrollTop"] == 0 and "done" not in state["text"]

        # The end: the final log, the marker gone, the run's state in the title.
        LIVE_PHASES[1].set()
        wait_js(
            page,
            "() => document.querySelector('#run-log')?.dataset.state === 'final'",
            timeout_s=90,
        )
        runner.join(60)
        assert out and out[0].state == "completed", out and out[0].error
        final = _log_state(page)
        assert not final["live"]
        req = urllib.request.Request(
            f"{data.url}/api/runs/{uid}/log", headers={"Authorization": f"Bearer {TOKEN}"}
        )
        with urllib.request.urlopen(req, timeout=30) as resp:
            assert resp.headers["X-Tickrun-Log"] == "final"
            stored = resp.read().decode()
        assert stored.rstrip().endswith("INFO done with both phases")
        assert final["text"] == stored
        wait_js(page, "() => document.querySelector('h1 .badge')?.textContent === 'completed'")
        shot(page, "run-log-final")
        # Reloaded: the ended run's page, its log among its artifacts.
        page.click("#run-log-reload")
        wait_js(
            page,
            "() => !document.querySelector('#run-log-reload')"
            " && document.querySelector('#run-log')?.dataset.state === 'final'",
        )
        assert page.inner_text("#run-log") == stored
        assert "Artifacts (1)" in page.inner_text("main")
    finally:
        for gate in LIVE_PHASES:
            gate.set()
        runner.join(60)
