"""CPU time and context switches per event of a Kafka trigger replica, mid-stream.

On a shared 2-core host the events/s of ``python -m bench.kafka`` move by ±30% between rounds
with the other load; the CPU a replica spends per event, and how often its threads block or
are preempted, move far less, so they show what a change to the trigger did::

    python -m bench.kafka.cpu --bootstrap HOST:PORT [--messages 1000000] [--num-workers 4]
        [--pool-only] [--window 4]

A topic of ``--messages`` klines is produced once (4 partitions); a ``tickrun serve`` replica
(1 worker process, the no-op handler) consumes it, and once a tenth is done the replica's
processes are read from ``/proc`` at the start and the end of a ``--window``-second stretch:
user and system CPU per event (all its processes) and voluntary / involuntary context switches
per 1,000 events. ``--raw`` reads the same of a raw kafka-python loop (this process);
``--client confluent-kafka`` runs the replica's trigger on confluent-kafka and
``--raw-confluent`` reads a raw confluent-kafka loop (:mod:`bench.kafka.confluent_raw`).
"""

from __future__ import annotations

import argparse
import os
import sys
import tempfile
import threading
import time
import uuid
from pathlib import Path

from tests.support.processes import ServedFunction

from .__main__ import (
    _processed,
    load_klines,
    noop,
    produce,
    raw_confluent,
    raw_loop,
    write_function,
)

TICK = os.sysconf("SC_CLK_TCK")


def _tree(pid: int) -> list[int]:
    """``pid`` and its descendants."""
    out = [pid]
    for children in Path(f"/proc/{pid}/task").glob("*/children"):
        for child in children.read_text().split():
            out += _tree(int(child))
    return out


def _sample(pids: list[int]) -> tuple[float, float, int, int]:
    """(user s, system s, voluntary, involuntary context switches) of ``pids``' threads."""
    user = system = vol = invol = 0
    for pid in pids:
        try:
            fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
            user += int(fields[11])
            system += int(fields[12])
            for status in Path(f"/proc/{pid}/task").glob("*/status"):
                for line in status.read_text().splitlines():
                    if line.startswith("voluntary_ctxt_switches"):
                        vol += int(line.split()[1])
                    elif line.startswith("nonvoluntary_ctxt_switches"):
                        invol += int(line.split()[1])
        except OSError:
            continue  # a process or thread that ended meanwhile
    return user / TICK, system / TICK, vol, invol


def _report(label: str, events: int, seconds: float, a: tuple, b: tuple) -> None:
    user, system = (b[0] - a[0]) / events * 1e6, (b[1] - a[1]) / events * 1e6
    vol, invol = (b[2] - a[2]) / events * 1000, (b[3] - a[3]) / events * 1000
    print(
        f"{label:<28} {events / seconds:>9,.0f} events/s  CPU/event user {user:5.2f} us "
        f"sys {system:4.2f} us  switches/1k events: voluntary {vol:5.1f} "
        f"involuntary {invol:5.1f}  (load {os.getloadavg()[0]:.1f})",
        flush=True,
    )


def replica(
    bootstrap: str,
    topic: str,
    n: int,
    workers: int,
    pool_only: bool,
    window: float,
    client: str = "kafka-python",
) -> None:
    root = Path(tempfile.mkdtemp(prefix="bench-kafka-cpu-"))
    attrs: dict[str, object] = {"inlineFastHandler": False} if pool_only else {}
    if client != "kafka-python":
        attrs["client"] = client
    fn = ServedFunction(write_function(root, bootstrap, topic, "noop", workers, attrs)).start()
    try:
        while _processed(fn.url) < n * 0.1:
            time.sleep(0.2)
        assert fn.proc is not None
        pids = _tree(fn.proc.pid)
        t0, c0, s0 = time.perf_counter(), _processed(fn.url), _sample(pids)
        time.sleep(window)
        t1, c1, s1 = time.perf_counter(), _processed(fn.url), _sample(pids)
        if c1 >= n:
            print("the window reached the end of the topic: use more --messages", flush=True)
        label = f"numWorkers={workers}" + (" pool only" if pool_only else "")
        if client != "kafka-python":
            label += f" [{client}]"
        _report(label, c1 - c0, t1 - t0, s0, s1)
    finally:
        fn.terminate()


def raw(bootstrap: str, topic: str, n: int, window: float, confluent: bool = False) -> None:
    """The raw loop in this process; sampled from a thread after the first tenth."""
    seen: list[tuple[float, int, tuple]] = []

    def sampler() -> None:
        time.sleep(window / 2)  # past the group join and the first fetches
        seen.append((time.perf_counter(), 0, _sample([os.getpid()])))
        time.sleep(window)
        seen.append((time.perf_counter(), 0, _sample([os.getpid()])))

    thread = threading.Thread(target=sampler, daemon=True)
    thread.start()
    result = (raw_confluent if confluent else raw_loop)(bootstrap, topic, n, noop)
    thread.join()
    (t0, _, s0), (t1, _, s1) = seen
    # The raw loop's own rate over the whole run stands for the window's (it is steady).
    label = "raw confluent-kafka loop" if confluent else "raw kafka-python loop"
    _report(label, round(result.rate * (t1 - t0)), t1 - t0, s0, s1)


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="python -m bench.kafka.cpu", description=__doc__)
    ap.add_argument("--bootstrap", required=True, help="a running broker")
    ap.add_argument("--messages", type=int, default=1_000_000)
    ap.add_argument("--num-workers", type=int, default=4)
    ap.add_argument(
        "--pool-only", action="store_true", help="inlineFastHandler: false (every event pooled)"
    )
    ap.add_argument("--raw", action="store_true", help="also the raw kafka-python loop")
    ap.add_argument("--raw-confluent", action="store_true", help="also a raw confluent loop")
    ap.add_argument("--client", choices=["kafka-python", "confluent-kafka"], default="kafka-python")
    ap.add_argument("--window", type=float, default=4.0, help="seconds measured")
    args = ap.parse_args(argv)
    topic = f"bench-cpu-{uuid.uuid4().hex[:6]}"
    produce(args.bootstrap, topic, load_klines(args.messages), 4)
    replica(
        args.bootstrap,
        topic,
        args.messages,
        args.num_workers,
        args.pool_only,
        args.window,
        args.client,
    )
    if args.raw:
        raw(args.bootstrap, topic, args.messages, args.window)
    if args.raw_confluent:
        raw(args.bootstrap, topic, args.messages, args.window, confluent=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
