"""A Kafka-triggered function for lag-autoscaling tests and the lag-burst bench: it sleeps a
fixed time per record (``SLEEP_S``), so one consumer drains a known rate; helpers read the
group's lag and membership from the broker (not from the controller)."""

from __future__ import annotations

import textwrap
from pathlib import Path
from typing import Any

import yaml
from kafka import KafkaAdminClient

from tests.support.kafka_functions import committed, end_offsets

LAG_HANDLER = """
import os, time


def handler(context, event):
    time.sleep(float(os.environ["SLEEP_S"]))
"""


def write_function(root: Path, name: str, handler: str, spec: dict[str, Any]) -> Path:
    """A function folder: ``main.py`` with ``handler`` and a function.yaml with ``spec``."""
    folder = root / name
    folder.mkdir(parents=True)
    (folder / "main.py").write_text(textwrap.dedent(handler))
    doc = {"metadata": {"name": name}, "spec": {"handler": "main:handler", **spec}}
    (folder / "function.yaml").write_text(yaml.safe_dump(doc))
    return folder


def spec_of(folder: Path) -> dict[str, Any]:
    data: dict[str, Any] = yaml.safe_load((folder / "function.yaml").read_text())
    return data


def lag_spec(
    brokers: str, topic: str, group: str, *, sleep_s: float, **scaling: Any
) -> dict[str, Any]:
    """The spec of a ``LAG_HANDLER`` function consuming ``topic``; ``scaling``: minReplicas,
    targetLag, … as in function.yaml."""
    return {
        **scaling,
        "env": [{"name": "SLEEP_S", "value": str(sleep_s)}],
        "triggers": {
            "burst": {
                "kind": "kafka-cluster",
                "attributes": {
                    "brokers": brokers,
                    "topics": [topic],
                    "consumerGroup": group,
                    "sessionTimeout": "6s",
                    "heartbeatInterval": "1s",
                    "commitInterval": "200ms",
                },
            }
        },
    }


def group_lag(brokers: str, group: str, topic: str, partitions: int) -> int:
    """Records of ``topic`` the group has not committed yet."""
    ends = end_offsets(brokers, topic, partitions)
    done = committed(brokers, group, topic)
    return sum(end - done.get(p, 0) for p, end in ends.items())


def members(admin: KafkaAdminClient, group: str) -> int:
    """Consumers in ``group`` now."""
    described = admin.describe_groups([group]).get(group) or {}
    return len(described.get("members") or [])
