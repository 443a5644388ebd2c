"""HTTP throughput and latency: tickrun's processor vs a bare aiohttp app calling it inline.

Every row serves the same no-op handler (``noop.py``) with the same number of worker processes
on one SO_REUSEPORT port as a bare aiohttp app that calls it inline on its event loop (what
Nuclio's Python runtime does with a sync handler). The same load generator (wrk) drives each in
turn, alternating, in the same run; each row has its own baseline, measured beside it.

Rows (``--rows``, any of):

- ``sync1``: ``def handler``, a plain Nuclio ``function.yaml`` (no triggers section: the default
  HTTP trigger, one slot);
- ``sync64``: the same with ``maxWorkers: 64``;
- ``async1`` / ``async64``: ``async def handler``, likewise.

``--event-timeout-s`` gives each row's ``function.yaml`` an ``eventTimeout`` (not a row of the
issue's table: what a timeout costs an event, the baseline has none).

    python -m bench.http [--rows sync1,sync64,async1,async64] [--workers 1,2]
                         [--duration-s 3] [--rounds 6] [--connections 32]
                         [--event-timeout-s S]
"""

from __future__ import annotations

import argparse
import os
import shutil
import signal
import statistics
import subprocess
import sys
import tempfile
import time
import urllib.request
from dataclasses import dataclass, replace
from pathlib import Path

from bench.rounds import in_turn
from bench.wrk import Sample, median, wrk
from tests.support.processes import ServedFunction, free_port

HERE = Path(__file__).resolve().parent


@dataclass(frozen=True)
class Row:
    name: str
    handler: str  # noop.py's entry point
    kind: str  # the baseline's: sync or async
    max_workers: int | None  # None: no triggers section at all
    min_rps_ratio: float
    max_p99_ratio: float | None
    event_timeout_s: float | None = None  # --event-timeout-s: the spec's eventTimeout

    def spec(self) -> str:
        text = f"metadata: {{name: noop}}\nspec:\n  handler: noop:{self.handler}\n"
        if self.event_timeout_s is not None:
            text += f"  eventTimeout: {self.event_timeout_s:g}s\n"
        if self.max_workers is not None:
            text += f"  triggers: {{http: {{kind: http, maxWorkers: {self.max_workers}}}}}\n"
        return text


ROWS = {
    "sync1": Row("sync, plain function.yaml (1 slot)", "sync_handler", "sync", None, 0.85, 1.2),
    "sync64": Row("sync, maxWorkers: 64", "sync_handler", "sync", 64, 0.85, 1.2),
    "async1": Row("async, plain function.yaml (1 slot)", "handler", "async", None, 0.95, None),
    "async64": Row("async, maxWorkers: 64", "handler", "async", 64, 0.95, None),
}


def wait_http(url: str, timeout_s: float = 30) -> None:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        try:
            with urllib.request.urlopen(url, timeout=1):
                return
        except OSError:
            time.sleep(0.05)
    raise RuntimeError(f"{url} did not answer")


def start_baseline(workers: int, kind: str) -> tuple[list[subprocess.Popen[bytes]], str]:
    port = free_port()
    procs = [
        subprocess.Popen(
            [sys.executable, str(HERE / "baseline_app.py"), str(port), kind],
            stdout=subprocess.DEVNULL,
        )
        for _ in range(workers)
    ]
    url = f"http://127.0.0.1:{port}/"
    wait_http(url)
    time.sleep(0.5)
    return procs, url


def function_dir(row: Row, root: Path) -> Path:
    """A copy of ``noop/`` with the row's ``function.yaml`` (the repo is left untouched)."""
    path = root / row.handler / str(row.max_workers)
    shutil.copytree(HERE / "noop", path, ignore=shutil.ignore_patterns("__pycache__"))
    (path / "function.yaml").write_text(row.spec())
    return path


@dataclass(frozen=True)
class Figures:
    tickrun: Sample  # medians over rounds
    aiohttp: Sample
    rps_ratio: float  # median of each round's ratio (the two ran back to back)
    p99_ratio: float
    cpu_us: tuple[float, float]  # median CPU µs per request: tickrun's processes, aiohttp's


def _tree(pid: int) -> list[int]:
    """``pid`` and its descendants (a replica's supervisor and its workers)."""
    pids, i = [pid], 0
    while i < len(pids):
        for task in Path(f"/proc/{pids[i]}/task").glob("*/children"):
            try:
                pids += [int(c) for c in task.read_text().split()]
            except OSError:
                continue
        i += 1
    return pids


def cpu_s(pids: list[int]) -> float:
    """User and system CPU seconds spent so far by ``pids`` (each process's every thread).

    Beside req/s: CPU per request hardly moves with a neighbour's load, req/s does (issue 17).
    """
    ticks = 0
    for pid in pids:
        try:
            fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
        except OSError:
            continue  # gone (a worker replaced mid-run): its share is lost, not guessed
        ticks += int(fields[11]) + int(fields[12])
    return ticks / os.sysconf("SC_CLK_TCK")


def measure(row: Row, workers: int, args: argparse.Namespace, root: Path) -> Figures:
    env = {"TICKRUN_LOG_LEVEL": "WARNING"}
    path = function_dir(row, root / f"w{workers}")
    tickrun = ServedFunction(path, "--workers", str(workers), env=env).start()
    base_procs, base_url = start_baseline(workers, row.kind)
    results: dict[str, list[Sample]] = {"tickrun": [], "aiohttp": []}
    cpu: dict[str, list[float]] = {"tickrun": [], "aiohttp": []}
    try:
        if tickrun.proc is None:  # pragma: no cover - start() sets it
            raise RuntimeError("tickrun did not start")
        pids = {"tickrun": _tree(tickrun.proc.pid), "aiohttp": [p.pid for p in base_procs]}
        wrk(tickrun.url + "/", 2, args.connections)  # warm-up both
        wrk(base_url, 2, args.connections)
        for r in range(args.rounds):
            for name, url in in_turn(r, ("tickrun", tickrun.url + "/"), ("aiohttp", base_url)):
                before = cpu_s(pids[name])
                sample = wrk(url, args.duration_s, args.connections)
                spent = cpu_s(pids[name]) - before
                results[name].append(sample)
                cpu[name].append(spent / max(sample.rps * args.duration_s, 1.0) * 1e6)
            print(
                f"  {row.name}, {workers} worker(s), round {r + 1}/{args.rounds}: "
                f"tickrun {results['tickrun'][-1].rps:,.0f} req/s "
                f"(p99 {results['tickrun'][-1].p99_ms:.2f} ms), "
                f"aiohttp {results['aiohttp'][-1].rps:,.0f} req/s "
                f"(p99 {results['aiohttp'][-1].p99_ms:.2f} ms); CPU per request "
                f"{cpu['tickrun'][-1]:.1f} / {cpu['aiohttp'][-1]:.1f} µs",
                flush=True,
            )
    finally:
        tickrun.terminate()
        for p in base_procs:
            p.send_signal(signal.SIGINT)
            p.wait(timeout=10)
    # On a shared machine load drifts between rounds: each round's pair ran back to back, so
    # the median of the per-round ratios is steadier than the ratio of the medians.
    pairs = list(zip(results["tickrun"], results["aiohttp"], strict=True))
    return Figures(
        median(results["tickrun"]),
        median(results["aiohttp"]),
        statistics.median(t.rps / b.rps for t, b in pairs),
        statistics.median(t.p99_ms / b.p99_ms for t, b in pairs),
        (statistics.median(cpu["tickrun"]), statistics.median(cpu["aiohttp"])),
    )


def verdict(row: Row, f: Figures) -> str:
    ok = f.rps_ratio >= row.min_rps_ratio
    goal = f">= {row.min_rps_ratio:.2f}x req/s"
    if row.max_p99_ratio is not None:
        ok = ok and f.p99_ratio <= row.max_p99_ratio
        goal += f", p99 <= {row.max_p99_ratio:.1f}x"
    return f"{goal}: {'met' if ok else 'NOT met'}"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rows", default=",".join(ROWS), help=f"any of {','.join(ROWS)}")
    parser.add_argument("--workers", default="1,2", help="worker process counts, e.g. 1,2")
    parser.add_argument("--duration-s", type=int, default=3)
    parser.add_argument("--connections", type=int, default=32)
    parser.add_argument("--rounds", type=int, default=6)
    parser.add_argument(
        "--event-timeout-s",
        type=float,
        help="give every row's function.yaml this eventTimeout (the baseline has none)",
    )
    args = parser.parse_args()
    rows = [replace(ROWS[r], event_timeout_s=args.event_timeout_s) for r in args.rows.split(",")]
    worker_counts = [int(w) for w in args.workers.split(",")]

    table: list[tuple[Row, int, Figures]] = []
    with tempfile.TemporaryDirectory(prefix="bench-http-") as tmp:
        for workers in worker_counts:
            for row in rows:
                table.append((row, workers, measure(row, workers, args, Path(tmp))))

    print()
    print(
        "CPU µs/req: user+system CPU of tickrun's processes (supervisor and workers) and of "
        "the baseline's over each run, per request (median of rounds; steadier than req/s "
        "on a shared machine)"
    )
    print(
        f"bench/http  connections={args.connections} duration={args.duration_s}s "
        f"x{args.rounds} rounds (medians; wrk -t1; cores={os.cpu_count()}); baseline: bare "
        "aiohttp calling the same handler inline, same worker count; ratios: median of the "
        "rounds' ratios"
    )
    head = f"{'row':<38}{'wk':>3}{'tickrun r/s':>13}{'aiohttp r/s':>13}{'ratio':>7}"
    print(head + f"{'p99 t/b ms':>15}{'p99 x':>7}{'CPU µs/req t/b':>17}  goal")
    for row, workers, f in table:
        t, b = f.tickrun, f.aiohttp
        print(
            f"{row.name:<38}{workers:>3}{t.rps:>13,.0f}{b.rps:>13,.0f}{f.rps_ratio:>6.2f}x"
            f"{t.p99_ms:>8.2f}/{b.p99_ms:<6.2f}{f.p99_ratio:>6.2f}x"
            f"{f.cpu_us[0]:>10.1f}/{f.cpu_us[1]:<6.1f}  {verdict(row, f)}"
        )


if __name__ == "__main__":
    main()
