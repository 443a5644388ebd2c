"""The browser half of ``python -m bench.ui``: first paint of the UI's pages on the filled store.

Serves the real UI (``tickrun.controller.ui``, local mode: no login) and the runs API over the
bench's DB, and drives Debian's Chromium (Playwright, headless, a fresh context per load so
nothing is cached) to:

- the runs page (first 50 of all runs, newest first) and sorted by a result;
- one run's page; compare of 2 runs; compare of 200 runs with parallel coordinates drawn.

For each: first contentful paint (the shell) and the paint with the page's data (the app marks
``tickrun:painted:<page>`` one frame after a page has drawn; for compare-200, when the parallel
chart has its lines). Baseline in the same run: the same 50 runs as one server-rendered HTML
table (no JS), its first contentful paint — what a page with the same data costs the browser
without the app. Median of ``repeat`` loads.
"""

from __future__ import annotations

import html
import statistics
from pathlib import Path
from typing import Any

CHROMIUM = "/usr/bin/chromium"
ARGS = [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--no-first-run",
]
COLUMNS = ("params.lr", "params.depth", "results.accuracy", "results.sharpe", "results.pnl")


def available() -> bool:
    try:
        import playwright  # noqa: F401
    except ImportError:
        return False
    return Path(CHROMIUM).exists()


def static_table(runs: list[dict[str, Any]]) -> str:
    """The baseline: the runs page's first 50 rows as plain server-rendered HTML."""
    head = "".join(f"<th>{html.escape(c)}</th>" for c in ("name", "state", "start", *COLUMNS))
    body = []
    for r in runs:
        cells = [r["name"], r["state"], f"{r['created_at']:.0f}"]
        for c in COLUMNS:
            group, key = c.split(".", 1)
            cells.append(str(r[group].get(key, "")))
        body.append("<tr>" + "".join(f"<td>{html.escape(str(x))}</td>" for x in cells) + "</tr>")
    return (
        "<!doctype html><html><head><meta charset=utf-8><title>runs</title>"
        '<link rel="stylesheet" href="/ui/static/style.css"></head><body><main class="page">'
        f"<h1>Runs</h1><table class=grid><thead><tr>{head}</tr></thead>"
        f"<tbody>{''.join(body)}</tbody></table></main></body></html>"
    )


async def _load(browser: Any, url: str, mark: str | None, ready: str | None) -> tuple[float, float]:
    """(first contentful paint, data painted) in ms since navigation start, one cold load."""
    ctx = await browser.new_context(viewport={"width": 1440, "height": 900})
    page = await ctx.new_page()
    errors: list[str] = []
    page.on("pageerror", lambda e: errors.append(e.message))
    try:
        await page.goto(url, wait_until="load")
        if ready:
            await page.wait_for_selector(ready, timeout=60_000)
            done = float(await page.evaluate("performance.now()"))
        elif mark:
            await page.wait_for_selector("main.page h1", timeout=60_000)
            done = 0.0
            for _ in range(600):
                got = await page.evaluate(
                    "m => performance.getEntriesByName(m).map(e => e.startTime)[0] ?? null", mark
                )
                if got is not None:
                    done = float(got)
                    break
                await page.wait_for_timeout(50)
            else:
                raise RuntimeError(f"{url}: no {mark} mark")
        else:
            done = 0.0
        fcp = 0.0
        for _ in range(200):  # the paint entry lands a frame or two after load
            fcp = await page.evaluate(
                "performance.getEntriesByName('first-contentful-paint')"
                ".map(e => e.startTime)[0] ?? 0"
            )
            if fcp:
                break
            await page.wait_for_timeout(25)
        if errors:
            raise RuntimeError(f"{url}: page errors {errors}")
        return float(fcp), done or float(fcp)
    finally:
        await ctx.close()


async def measure(
    base: str, first_runs: list[dict[str, Any]], uids: list[str], repeat: int
) -> list[tuple[str, float, float, float | None]]:
    """Rows (page, fcp ms, data painted ms, baseline ms or None)."""
    from playwright.async_api import async_playwright

    pages = [
        ("runs page (first 50)", "/#/runs", "tickrun:painted:runs", None),
        (
            "runs page sorted by results.sharpe",
            "/#/runs?sort=results.sharpe",
            "tickrun:painted:runs",
            None,
        ),
        ("run page", f"/#/runs/{uids[0]}", "tickrun:painted:run", None),
        (
            "compare 2 runs",
            f"/#/compare?uids={','.join(uids[:2])}",
            "tickrun:painted:compare",
            None,
        ),
        (
            f"compare {min(200, len(uids))} runs + parallel coords",
            f"/#/compare?uids={','.join(uids[:200])}",
            None,
            "#compare-parallel[data-lines]",
        ),
    ]
    out: list[tuple[str, float, float, float | None]] = []
    async with async_playwright() as pw:
        browser = await pw.chromium.launch(executable_path=CHROMIUM, args=ARGS, headless=True)
        try:
            # Warm the OS file cache and the server once (not measured).
            await _load(browser, base + "/#/runs", "tickrun:painted:runs", None)
            base_fcp = statistics.median(
                [
                    (await _load(browser, base + "/bench/static-runs.html", None, None))[0]
                    for _ in range(repeat)
                ]
            )
            for name, path, mark, ready in pages:
                loads = [await _load(browser, base + path, mark, ready) for _ in range(repeat)]
                fcp = statistics.median(x[0] for x in loads)
                painted = statistics.median(x[1] for x in loads)
                out.append(
                    (name, fcp, painted, base_fcp if name.startswith("runs page (") else None)
                )
        finally:
            await browser.close()
    return out


async def run(db: Any, repeat: int) -> list[tuple[str, float, float, float | None]]:
    from aiohttp import web
    from aiohttp.test_utils import TestServer

    from tickrun.controller.ui.routes import UiConfig, mount
    from tickrun.functions.artifacts.targets import ArtifactRoots
    from tickrun.functions.runs.api import add_routes

    app = web.Application()
    add_routes(app, db, ArtifactRoots.of([]))
    mount(app, UiConfig("local"))
    baseline = {"html": ""}  # filled once the server can answer the first page

    async def static(_: web.Request) -> web.Response:
        return web.Response(text=baseline["html"], content_type="text/html")

    app.router.add_get("/bench/static-runs.html", static)
    server = TestServer(app, host="127.0.0.1")
    await server.start_server()
    try:
        base = str(server.make_url("")).rstrip("/")
        import aiohttp

        async with aiohttp.ClientSession() as http:
            async with http.get(f"{base}/api/runs?limit=50") as resp:
                runs = (await resp.json())["runs"]
            async with http.get(f"{base}/api/runs?limit=200&sort=results.sharpe") as resp:
                uids = [r["uid"] for r in (await resp.json())["runs"]]
        baseline["html"] = static_table(runs)
        return await measure(base, runs, uids, repeat)
    finally:
        await server.close()


def report(rows: list[tuple[str, float, float, float | None]], repeat: int) -> None:
    print(f"\nbrowser first paint (Chromium headless, cold context, median of {repeat})")
    print(f"{'page':40} {'FCP ms':>8} {'data painted ms':>16} {'static HTML ms':>15} {'ratio':>7}")
    for name, fcp, painted, base in rows:
        b = f"{base:15.0f}" if base is not None else f"{'-':>15}"
        ratio = f"{painted / base:6.1f}x" if base else f"{'-':>7}"
        print(f"{name:40} {fcp:8.0f} {painted:16.0f} {b} {ratio}")
    print("data painted: the page drawn with its data; ratio = that / the static table's FCP")
