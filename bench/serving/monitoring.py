"""``python -m bench.serving --monitoring``: hub://model_server:1.3 with prediction recording on
(a JSONL directory; a Kafka topic on a real broker from tests.peers) vs off, same model, same
1-row ``/invocations`` request, wrk rounds alternating between the servers in the same run.
Prints req/s and latency per server, the ratio to monitoring off (goal >= 0.9x), and each
server's recorder counters (recorded, dropped, failed), so a fast figure bought by dropping
records shows as such."""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import statistics
import urllib.request
from pathlib import Path
from typing import Any

from bench.wrk import Sample, median, print_table, wrk


def _stats(url: str) -> Any:
    with urllib.request.urlopen(url, timeout=30) as r:
        return json.loads(r.read()).get("monitoring")


_TICK_S = 1.0 / os.sysconf("SC_CLK_TCK")


def _tree(pid: int) -> list[int]:
    """``pid`` and its descendants (the replica's supervisor and its worker processes)."""
    out, todo = [], [pid]
    while todo:
        p = todo.pop()
        out.append(p)
        for task in Path(f"/proc/{p}/task").glob("*/children"):
            todo.extend(int(c) for c in task.read_text().split())
    return out


def _cpu_s(pid: int) -> float:
    """User + system CPU seconds of the process tree, from /proc (Linux)."""
    total = 0
    for p in _tree(pid):
        try:
            fields = Path(f"/proc/{p}/stat").read_text().rsplit(")", 1)[1].split()
        except OSError:
            continue  # exited meanwhile
        total += int(fields[11]) + int(fields[12])  # utime, stime (fields 14 and 15)
    return total * _TICK_S


def _pin(pid: int, cpus: set[int]) -> None:
    """Every thread of the process tree onto ``cpus`` (threads started later inherit it)."""
    for p in _tree(pid):
        for task in Path(f"/proc/{p}/task").iterdir():
            with contextlib.suppress(OSError):  # exited meanwhile
                os.sched_setaffinity(int(task.name), cpus)


def bench_monitoring(
    case: Any,
    model_uri: str,
    features: list[str],
    row: list[float],
    workdir: Path,
    args: argparse.Namespace,
) -> None:
    import tickrun

    casedir = workdir / f"{case.key}-monitoring"
    casedir.mkdir()
    broker = None
    if args.kafka:
        from tests.peers import KafkaBroker

        broker = KafkaBroker()
        broker.start()
        broker.create_topic("predictions")
    variants: dict[str, dict[str, str]] = {
        "monitoring off": {},
        "monitoring JSONL": {"MONITOR_DIR": str(casedir / "predictions")},
    }
    if broker is not None:
        variants["monitoring Kafka"] = {
            "MONITOR_TOPIC": "predictions",
            "MONITOR_BROKERS": broker.bootstrap_servers,
        }
    fn = tickrun.import_function("hub://model_server:1.3")
    servers = {}
    all_cpus = os.sched_getaffinity(0)
    pinned = False
    results: dict[str, list[Sample]] = {name: [] for name in variants}
    # Server CPU per request: on a shared 2-core machine req/s moves with the neighbours' load,
    # the replica's CPU time per request much less; a CPU-bound server's throughput ratio is the
    # inverse ratio of its CPU per request.
    cpu_us: dict[str, list[float]] = {name: [] for name in variants}
    # The broker shares the machine's 2 cores: its CPU per request is a cost of the Kafka sink
    # that the server's own figure does not show.
    broker_pid = broker._proc.pid if broker is not None and broker._proc is not None else None
    broker_us: dict[str, list[float]] = {name: [] for name in variants}
    try:
        for i, (name, extra) in enumerate(variants.items()):
            servers[name] = fn.deploy(
                env={"MODEL_URI": model_uri, **extra},
                workers=args.workers,
                directory=casedir / f"fn{i}",
                controller=False,
            )
        # In production the load and the broker are on other machines. Here the servers get
        # core 0 to themselves and wrk (this process's children), the broker and the rest of
        # this process share core 1, so a variant is not charged for the broker's CPU or for
        # starving the load generator.
        pinned = args.pin and len(os.sched_getaffinity(0)) >= 2
        if pinned:
            for server in servers.values():
                _pin(server.process.pid, {0})
            if broker_pid:
                _pin(broker_pid, {1})
            os.sched_setaffinity(0, {1})
        script = casedir / "post.lua"
        body = {"dataframe_split": {"columns": features, "data": [row]}}
        script.write_text(
            'wrk.method = "POST"\n'
            'wrk.headers["Content-Type"] = "application/json"\n'
            f"wrk.body = {json.dumps(json.dumps(body))}\n"
        )
        for server in servers.values():
            wrk(f"{server.url}/invocations", 2, args.connections, script=script)  # warm-up
        for r in range(args.rounds):
            for name, server in servers.items():
                pid = server.process.pid  # started by deploy()
                before = _cpu_s(pid)
                broker_before = _cpu_s(broker_pid) if broker_pid else 0.0
                sample = wrk(
                    f"{server.url}/invocations", args.duration_s, args.connections, script=script
                )
                used = _cpu_s(pid) - before
                requests = max(1.0, sample.rps * args.duration_s)
                results[name].append(sample)
                cpu_us[name].append(used / requests * 1e6)
                if broker_pid:
                    broker_us[name].append((_cpu_s(broker_pid) - broker_before) / requests * 1e6)
            print(
                f"{case.label} monitoring round {r + 1}/{args.rounds}: "
                + ", ".join(f"{n} {s[-1].rps:,.0f} req/s" for n, s in results.items()),
                flush=True,
            )
        stats = {name: _stats(f"{s.url}/") for name, s in servers.items()}
    finally:
        os.sched_setaffinity(0, all_cpus)
        for server in servers.values():
            server.stop()
        if broker is not None:
            broker.stop()

    rows = [
        (f"model_server 1.3 {n[11:]}", median(results[n]))
        for n in variants
        if n != "monitoring off"
    ]
    off = median(results["monitoring off"])
    print()
    print(
        f"bench/serving --monitoring  {case.label}: 1-row dataframe_split POST /invocations, "
        f"{len(features)} features, workers={args.workers} connections={args.connections} "
        f"duration={args.duration_s}s x{args.rounds} (medians; wrk -t1"
        f"{'; server pinned to core 0, wrk and broker to core 1' if pinned else ''})"
    )
    print_table([*rows, ("model_server 1.3 off", off)], width=28)
    for label, sample in rows:
        ratio = sample.rps / off.rps
        print(
            f"goal {label}: throughput >= 0.9x off: {ratio:.2f}x "
            f"({'met' if ratio >= 0.9 else 'NOT met'})"
        )
    cpu_off = statistics.median(cpu_us["monitoring off"])
    print(f"server CPU per request (median): off {cpu_off:.1f} us")
    for name in variants:
        if name != "monitoring off":
            on = statistics.median(cpu_us[name])
            print(
                f"  {name[11:]}: {on:.1f} us (+{on - cpu_off:.1f} us); CPU-bound throughput "
                f"ratio {cpu_off / on:.2f}x"
            )
    if broker_pid:
        idle = statistics.median(broker_us["monitoring off"])
        busy = statistics.median(broker_us["monitoring Kafka"])
        print(
            f"Kafka broker CPU per request (same machine): {busy:.1f} us while the Kafka sink "
            f"runs, {idle:.1f} us while monitoring is off"
        )
    for name, st in stats.items():
        if st is not None:
            print(f"  {name}: recorder {st}")
