"""The cron trigger in a real ``tickrun serve`` with two worker processes: fires on schedule,
from one worker only, with the configured event, and never overlaps itself by default."""

from __future__ import annotations

import datetime as dt
import json
import time
from pathlib import Path

import pytest
import yaml

from tests.support.processes import ServedFunction

pytestmark = [pytest.mark.slow, pytest.mark.timeout(120)]

HANDLER = """
import json, os, time

def handler(context, event):
    started = time.time()
    if event.trigger.name == "slow":
        time.sleep(1.2)
    body = event.body.decode() if isinstance(event.body, bytes) else event.body
    line = {"trigger": event.trigger.name, "pid": os.getpid(), "body": body,
            "headers": dict(event.headers), "scheduled": event.timestamp.isoformat(),
            "started": started, "ended": time.time()}
    with open(os.path.join(os.environ["RESULTS_DIR"], "fires.jsonl"), "a") as fh:
        fh.write(json.dumps(line) + "\\n")
"""


def _serve(tmp_path: Path) -> ServedFunction:
    fn_dir = tmp_path / "cronfn"
    fn_dir.mkdir()
    (fn_dir / "main.py").write_text(HANDLER)
    spec = {
        "metadata": {"name": "cronfn"},
        "spec": {
            "handler": "main:handler",
            "env": [{"name": "RESULTS_DIR", "value": str(tmp_path)}],
            "triggers": {
                "every2s": {
                    "kind": "cron",
                    "attributes": {
                        "schedule": "*/2 * * * * *",
                        "event": {"body": {"job": "rebalance"}, "headers": {"X-Job": "rb"}},
                    },
                },
                "slow": {"kind": "cron", "maxWorkers": 4, "attributes": {"interval": "300ms"}},
            },
        },
    }
    (fn_dir / "function.yaml").write_text(yaml.safe_dump(spec))
    return ServedFunction(fn_dir, "--workers", "2").start()


def test_cron_fires_on_schedule_once_per_replica_without_overlap(tmp_path: Path) -> None:
    fn = _serve(tmp_path)
    try:
        time.sleep(7.0)
    finally:
        assert fn.terminate() == 0
    fires = [json.loads(ln) for ln in (tmp_path / "fires.jsonl").read_text().splitlines()]
    scheduled = [f for f in fires if f["trigger"] == "every2s"]
    slow = [f for f in fires if f["trigger"] == "slow"]

    assert 2 <= len(scheduled) <= 4, scheduled
    assert len({f["pid"] for f in fires}) == 1, "only worker 0 of the replica fires"
    for f in scheduled:
        when = dt.datetime.fromisoformat(f["scheduled"])
        assert when.second % 2 == 0 and when.microsecond == 0, when
        assert abs(f["started"] - when.timestamp()) < 1.0, "fired on time"
        assert f["body"] == {"job": "rebalance"}
        assert f["headers"] == {"X-Job": "rb"}

    # Ticks every 0.3 s, runs of 1.2 s, Forbid: runs never overlap and most ticks are skipped.
    assert 3 <= len(slow) <= 6, len(slow)
    runs = sorted((f["started"], f["ended"]) for f in slow)
    for (_, end), (start, _) in zip(runs, runs[1:], strict=False):
        assert start >= end - 0.01, "overlapping runs of the same cron trigger"
