"""``python -m bench.serving --monitoring``: hub://model_server:1.2 with prediction recording on
(a JSONL directory; a Kafka topic on a real broker from tests.peers) vs off, same model, same
1-row ``/invocations`` request, wrk rounds alternating between the servers in the same run.
Prints req/s and latency per server, the ratio to monitoring off (goal >= 0.9x), and each
server's recorder counters (recorded, dropped, failed), so a fast figure bought by dropping
records shows as such."""

from __future__ import annotations

import argparse
import json
import urllib.request
from pathlib import Path
from typing import Any

from bench.wrk import Sample, median, print_table, wrk


def _stats(url: str) -> Any:
    with urllib.request.urlopen(url, timeout=30) as r:
        return json.loads(r.read()).get("monitoring")


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
    fn = tickrun.import_function("hub://model_server:1.2")
    servers = {}
    results: dict[str, list[Sample]] = {name: [] for name in variants}
    try:
        for i, (name, extra) in enumerate(variants.items()):
            servers[name] = fn.deploy(
                env={"MODEL_URI": model_uri, **extra},
                workers=args.workers,
                directory=casedir / f"fn{i}",
                controller=False,
            )
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
                results[name].append(
                    wrk(
                        f"{server.url}/invocations",
                        args.duration_s,
                        args.connections,
                        script=script,
                    )
                )
            print(
                f"{case.label} monitoring round {r + 1}/{args.rounds}: "
                + ", ".join(f"{n} {s[-1].rps:,.0f} req/s" for n, s in results.items()),
                flush=True,
            )
        stats = {name: _stats(f"{s.url}/") for name, s in servers.items()}
    finally:
        for server in servers.values():
            server.stop()
        if broker is not None:
            broker.stop()

    rows = [
        (f"model_server 1.2 {n[11:]}", median(results[n]))
        for n in variants
        if n != "monitoring off"
    ]
    off = median(results["monitoring off"])
    print()
    print(
        f"bench/serving --monitoring  {case.label}: 1-row dataframe_split POST /invocations, "
        f"{len(features)} features, workers={args.workers} connections={args.connections} "
        f"duration={args.duration_s}s x{args.rounds} (medians; wrk -t1)"
    )
    print_table([*rows, ("model_server 1.2 off", off)], width=28)
    for label, sample in rows:
        ratio = sample.rps / off.rps
        print(
            f"goal {label}: throughput >= 0.9x off: {ratio:.2f}x "
            f"({'met' if ratio >= 0.9 else 'NOT met'})"
        )
    for name, st in stats.items():
        if st is not None:
            print(f"  {name}: recorder {st}")
