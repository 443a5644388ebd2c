"""HTTP throughput and latency: tickrun's processor vs a bare aiohttp app.

Both serve the same no-op handler with the same number of worker processes on one SO_REUSEPORT
port; the same load generator (wrk) drives each in turn, alternating, in the same run.

    python -m bench.http [--workers 1] [--duration-s 8] [--connections 32] [--rounds 3]
"""

from __future__ import annotations

import argparse
import os
import signal
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

from bench.wrk import Sample, median, print_table, wrk
from tests.support.processes import ServedFunction, free_port

HERE = Path(__file__).resolve().parent


def wait_http(url: str, timeout_s: float = 30) -> None:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        try:
            with urllib.request.urlopen(url, timeout=1):
                return
        except OSError:
            time.sleep(0.05)
    raise RuntimeError(f"{url} did not answer")


def start_baseline(workers: int, threaded: bool) -> tuple[list[subprocess.Popen[bytes]], str]:
    port = free_port()
    mode = ["threaded"] if threaded else []
    procs = [
        subprocess.Popen(
            [sys.executable, str(HERE / "baseline_app.py"), str(port), *mode],
            stdout=subprocess.DEVNULL,
        )
        for _ in range(workers)
    ]
    url = f"http://127.0.0.1:{port}/"
    wait_http(url)
    time.sleep(0.5)
    return procs, url


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--workers", type=int, default=1)
    parser.add_argument("--duration-s", type=int, default=8)
    parser.add_argument("--connections", type=int, default=32)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument(
        "--handler", default="noop:handler", help="noop:handler or noop:sync_handler"
    )
    args = parser.parse_args()

    spec = HERE / "noop" / "function.yaml"
    spec.write_text(
        "metadata: {name: noop}\nspec:\n"
        f"  handler: {args.handler}\n"
        "  triggers: {http: {kind: http, maxWorkers: 64}}\n"
    )
    env = {"TICKRUN_LOG_LEVEL": "WARNING"}
    tickrun = ServedFunction(HERE / "noop", "--workers", str(args.workers), env=env).start()
    # A sync handler runs in a thread pool in tickrun (the loop keeps serving health checks);
    # the fair baseline is an aiohttp app that does the same with its blocking code.
    threaded = args.handler.startswith("noop:sync")
    base_procs, base_url = start_baseline(args.workers, threaded)
    results: dict[str, list[Sample]] = {"tickrun": [], "aiohttp": []}
    try:
        wrk(tickrun.url + "/", 2, args.connections)  # warm-up both
        wrk(base_url, 2, args.connections)
        for r in range(args.rounds):
            results["tickrun"].append(wrk(tickrun.url + "/", args.duration_s, args.connections))
            results["aiohttp"].append(wrk(base_url, args.duration_s, args.connections))
            print(
                f"round {r + 1}/{args.rounds}: tickrun {results['tickrun'][-1].rps:,.0f} req/s, "
                f"aiohttp {results['aiohttp'][-1].rps:,.0f} req/s",
                flush=True,
            )
    finally:
        tickrun.terminate()
        for p in base_procs:
            p.send_signal(signal.SIGINT)
            p.wait(timeout=10)
        spec.unlink(missing_ok=True)

    med = {k: median(v) for k, v in results.items()}
    t, b = med["tickrun"], med["aiohttp"]
    print()
    print(
        f"bench/http  handler={args.handler} workers={args.workers} "
        f"connections={args.connections} duration={args.duration_s}s x{args.rounds} "
        f"baseline={'aiohttp+run_in_executor' if threaded else 'aiohttp'} "
        f"(medians; wrk -t1; cores={os.cpu_count()})"
    )
    print_table([("tickrun", t), ("aiohttp", b)], width=18)
    print("goal: throughput >= 0.90x, p99 <= 1.2x")


if __name__ == "__main__":
    main()
