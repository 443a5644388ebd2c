"""The lag-burst row of ``python -m bench.deploy``: a burst produced into a 4-partition topic
consumed by a Kafka-triggered function on the process platform, autoscaled on lag (min 1,
max 4), beside the same burst consumed by a fixed single replica.

Figures: burst → the autoscaler asks for more replicas, → all 4 consumers in the group,
→ lag 0 (from the broker's committed offsets); the fixed replica's time to lag 0 is the
baseline.
"""

from __future__ import annotations

import time
import uuid
from collections.abc import Callable
from pathlib import Path
from typing import Any

from kafka import KafkaAdminClient

from tests.peers import KafkaBroker
from tests.support.kafka_functions import produce
from tests.support.lag_functions import (
    LAG_HANDLER,
    group_lag,
    lag_spec,
    members,
    spec_of,
    write_function,
)
from tickrun.controller.client import ControllerClient

PARTITIONS = 4
SLEEP_S = 0.01  # per record: one consumer drains ~100 records/s


def _until(cond: Callable[[], Any], timeout_s: float, what: str) -> float:
    t0 = time.monotonic()
    while not cond():
        if time.monotonic() - t0 > timeout_s:
            raise RuntimeError(f"timed out waiting for {what}")
        time.sleep(0.05)
    return time.monotonic()


def _run(
    client: ControllerClient, broker: KafkaBroker, work: Path, burst: int, fixed: bool
) -> dict[str, float]:
    brokers = broker.bootstrap_servers
    tag = uuid.uuid4().hex[:6]
    name, topic, group = f"bench-lag-{tag}", f"bench-lag-{tag}", f"bench-lag-{tag}"
    broker.create_topic(topic, partitions=PARTITIONS)
    scaling = {"replicas": 1} if fixed else {"minReplicas": 1, "maxReplicas": PARTITIONS}
    spec = lag_spec(brokers, topic, group, sleep_s=SLEEP_S, targetLag=50, lagWindow="5s", **scaling)
    folder = write_function(work, name, LAG_HANDLER, spec)
    client.deploy(spec_of(folder), folder, platform="process")
    client.wait_ready(name, timeout_s=300)
    admin = KafkaAdminClient(bootstrap_servers=brokers)
    try:
        _until(lambda: members(admin, group) == 1, 60, "the first consumer")
        t0 = time.monotonic()
        produce(brokers, topic, ({"i": i} for i in range(burst)), partition_of=lambda i: i % 4)
        out: dict[str, float] = {}
        if not fixed:
            wanted = client.get_function
            out["desired"] = (
                _until(lambda: wanted(name)["replicas"]["desired"] > 1, 60, "a scale-up") - t0
            )
            out["joined"] = (
                _until(lambda: members(admin, group) == PARTITIONS, 120, "all consumers") - t0
            )
        drained = _until(lambda: group_lag(brokers, group, topic, PARTITIONS) == 0, 600, "lag 0")
        out["drained"] = drained - t0
    finally:
        admin.close()
        client.delete_function(name)
    return out


def lag_burst_rows(
    client: ControllerClient, work: Path, burst: int, row: Callable[..., None]
) -> None:
    """Print the lag-burst rows (``row`` is bench.deploy's table printer)."""
    broker = KafkaBroker()
    broker.start()
    try:
        auto = _run(client, broker, work, burst, fixed=False)
        base = _run(client, broker, work, burst, fixed=True)
    finally:
        broker.stop()
    one = burst * SLEEP_S
    row(
        f"lag burst {burst} → scale-up (process)",
        f"{auto['desired']:.2f} s",
        "-",
        "-",
        f"desired > 1; {PARTITIONS} consumers in the group at {auto['joined']:.2f} s",
    )
    row(
        f"lag burst {burst} → lag 0 (process)",
        f"{auto['drained']:.2f} s",
        f"{base['drained']:.2f} s",
        f"{auto['drained'] / base['drained']:.2f}x",
        f"< 1x (baseline: 1 fixed replica; handler work {one:.0f} s on one consumer)",
    )


def main() -> int:
    """``python -m bench.deploy.lagburst [--burst N]``: only the lag-burst rows."""
    import argparse
    import os
    import shutil
    import tempfile

    from tests.integration.test_controller_harness import ControllerProc, cleanup

    ap = argparse.ArgumentParser(prog="python -m bench.deploy.lagburst")
    ap.add_argument("--burst", type=int, default=3000, help="records")
    args = ap.parse_args()
    work = Path(tempfile.mkdtemp(prefix="tickrun-bench-lag-"))
    ctl = ControllerProc(work / "state", dict(os.environ)).start()
    try:
        print(f"{'':<38} {'tickrun':>10} {'baseline':>12} {'ratio':>7}   goal")
        lag_burst_rows(ctl.client, work / "lag", args.burst, _row)
    finally:
        cleanup(ctl)
        shutil.rmtree(work, ignore_errors=True)
    return 0


def _row(label: str, tickrun: str, baseline: str, ratio: str, goal: str) -> None:
    print(f"{label:<38} {tickrun:>10} {baseline:>12} {ratio:>7}   {goal}")


if __name__ == "__main__":
    raise SystemExit(main())
