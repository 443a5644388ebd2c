"""Kafka-lag autoscaling on the kubernetes platform: the controller's reconciler in-process
against the real control plane (kwok nodes) and a real Kafka broker.

kwok's pods turn Ready without running, so nothing consumes: a burst's lag stays until the test
commits the group's offsets itself (what consumers would do), which is what lets it check both
directions of the count on the Deployment's scale subresource.
"""

from __future__ import annotations

import time
import uuid
from pathlib import Path

import pytest
from kafka import KafkaAdminClient
from kafka.structs import OffsetAndMetadata, TopicPartition

from tests.integration.test_k8s_platform import namespace
from tests.peers import KafkaBroker
from tests.peers.k8s import KubeControlPlane
from tests.support.k8s_controller import (
    deployment,
    in_process_controller,
    until,
)
from tests.support.kafka_functions import end_offsets, produce
from tickrun.controller.platforms.kubernetes.platform import KubernetesPlatform
from tickrun.functions.spec import FunctionSpec, parse_spec

pytestmark = [pytest.mark.k8s, pytest.mark.kafka, pytest.mark.slow]

__all__ = ["namespace"]  # the fixture, re-exported so pytest finds it here

PARTITIONS = 4


def _spec(brokers: str, topic: str, group: str, min_replicas: int) -> FunctionSpec:
    attrs = {"brokers": brokers, "topics": [topic], "consumerGroup": group}
    return parse_spec(
        {
            "metadata": {"name": "lagged"},
            "spec": {
                "minReplicas": min_replicas,
                "maxReplicas": 6,
                "targetLag": 10,
                "lagWindow": "3s",
                "scaleToZeroIdleTime": "2s",
                "triggers": {"in": {"kind": "kafka-cluster", "attributes": attrs}},
            },
        }
    )


def _commit_all(brokers: str, group: str, topic: str) -> None:
    """Commit the group to the end of every partition, as consumers that caught up would."""
    ends = end_offsets(brokers, topic, PARTITIONS)
    admin = KafkaAdminClient(bootstrap_servers=brokers)
    try:
        admin.alter_group_offsets(
            group,
            {TopicPartition(topic, p): OffsetAndMetadata(end, "", -1) for p, end in ends.items()},
        )
    finally:
        admin.close()


async def test_lag_drives_the_deployments_scale_subresource(
    kube: KubeControlPlane, namespace: str, kafka_broker: KafkaBroker, tmp_path: Path
) -> None:
    brokers = kafka_broker.bootstrap_servers
    topic, group = f"k8s-lag-{uuid.uuid4().hex[:6]}", "k8s-lag-g"
    kafka_broker.create_topic(topic, partitions=PARTITIONS)
    platform = KubernetesPlatform(namespace, kube.kubeconfig_path)
    async with in_process_controller(
        tmp_path,
        platform,
        "cid-lag",
        kubeconfig=kube.kubeconfig_path,
        k8s_namespace=namespace,
        lag_interval_s=0.3,
    ) as ctl:
        store, service, reconciler = ctl.store, ctl.service, ctl.reconciler
        ctl.save_deploying("lagged", _spec(brokers, topic, group, 1))

        def replicas() -> int:
            return int(deployment(kube, namespace, "lagged").spec.replicas)

        reconciler.lag.start()
        await until(reconciler, lambda: store.get_function("lagged").state == "ready", "ready")
        assert replicas() == 1

        # A burst: 200 behind / targetLag 10 = 20 wanted, capped at the 4 partitions.
        produce(brokers, topic, ({"i": i} for i in range(200)), partition_of=lambda i: i % 4)
        up_s = await until(reconciler, lambda: replicas() == 4, "spec.replicas 4")
        scale = reconciler.autoscaler.explain("lagged")
        assert scale is not None and scale["lag"] == 200 and scale["partitions"] == 4
        assert "capped at 4 partitions" in scale["reason"]

        # Drained: down to minReplicas once the 3 s window holds only low samples.
        _commit_all(brokers, group, topic)
        t_drained = time.monotonic()
        down_s = await until(reconciler, lambda: replicas() == 1, "spec.replicas back to 1")
        assert time.monotonic() - t_drained >= 2.5  # not before the window passed

        # minReplicas 0: idle → 0; new lag wakes it to 1.
        store.update_function("lagged", spec=_spec(brokers, topic, group, 0))
        await until(reconciler, lambda: replicas() == 0, "spec.replicas 0")
        produce(brokers, topic, ({"i": i} for i in range(3)), partition_of=lambda i: i % 4)
        wake_s = await until(reconciler, lambda: replicas() == 1, "woken to 1 by lag")
        print(
            f"\nkubernetes: burst → 4 in {up_s:.1f} s, drained → 1 in {down_s:.1f} s, "
            f"lag at 0 → 1 in {wake_s:.1f} s"
        )
        await service.delete("lagged")
        await until(reconciler, lambda: not store.find_function("lagged"), "deleted")
