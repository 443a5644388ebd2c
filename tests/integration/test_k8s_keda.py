"""TICKRUN_K8S_AUTOSCALER=keda against the real API server with KEDA's own ScaledObject CRD
(vendored from KEDA v2.21.1: tests/integration/data/keda/) and a real Kafka broker.

No KEDA operator runs: the API server validates the ScaledObject against KEDA's structural
schema, and the test plays KEDA's HPA by writing the scale subresource itself. What it checks is
tickrun's side: the ScaledObject's fields, no HPA of tickrun's own, and a replica count tickrun
never touches while its own autoscaler (fed real lag) would want another.
"""

from __future__ import annotations

import asyncio
import time
import uuid
from pathlib import Path
from typing import Any

import pytest
import yaml
from kubernetes import client as k8s
from kubernetes.client.exceptions import ApiException

from tests.integration.helmchart import CHART, RELEASE, VARIANTS, Helm
from tests.integration.test_controller_harness import wait_for
from tests.integration.test_k8s_platform import namespace, objects_of
from tests.peers import KafkaBroker
from tests.peers.k8s import KubeControlPlane
from tests.support.k8s_controller import deployment, in_process_controller, until
from tests.support.kafka_functions import produce
from tickrun.controller.platforms.base import Workload
from tickrun.controller.platforms.kubernetes import keda
from tickrun.controller.platforms.kubernetes import manifests as m
from tickrun.controller.platforms.kubernetes.platform import KubernetesPlatform
from tickrun.controller.reconciler import Reconciler
from tickrun.functions.errors import PlatformError
from tickrun.functions.spec import FunctionSpec, parse_spec

pytestmark = [pytest.mark.k8s, pytest.mark.kafka, pytest.mark.slow]

__all__ = ["namespace"]  # the fixture, re-exported so pytest finds it here

CRD = Path(__file__).parent / "data" / "keda" / "keda.sh_scaledobjects.yaml"
FN = "keda-fn"
PARTITIONS = 4


@pytest.fixture(scope="module")
def keda_crd(kube: KubeControlPlane) -> None:
    """KEDA's ScaledObject CRD, installed once (the control plane is shared: left in place)."""
    body = yaml.safe_load(CRD.read_text())
    with kube.admin_client() as api:
        ext = k8s.ApiextensionsV1Api(api)
        try:
            ext.create_custom_resource_definition(body)
        except ApiException as exc:
            if exc.status != 409:
                raise

        def established() -> bool:
            crd = ext.read_custom_resource_definition(body["metadata"]["name"])
            return any(
                c.type == "Established" and c.status == "True"
                for c in ((crd.status.conditions if crd.status else None) or [])
            )

        wait_for(established, 30, "the ScaledObject CRD established")


def _spec(brokers: str, topic: str, **scaling: Any) -> FunctionSpec:
    kafka = {"brokers": brokers, "topics": [topic], "consumerGroup": f"{topic}-g"}
    cron = {"schedule": "0 9 * * 1-5", "timezone": "Europe/London"}
    return parse_spec(
        {
            "metadata": {"name": FN},
            "spec": {
                **(scaling or {"minReplicas": 1, "maxReplicas": 6}),
                "targetLag": 10,
                "lagWindow": "3s",
                "targetCPU": 60,
                "triggers": {
                    "in": {"kind": "kafka-cluster", "attributes": kafka},
                    "open": {"kind": "cron", "attributes": cron},
                },
            },
        }
    )


def scaled_objects(kube: KubeControlPlane, ns: str) -> list[dict[str, Any]]:
    with kube.admin_client() as api:
        got = k8s.CustomObjectsApi(api).list_namespaced_custom_object(
            keda.GROUP, keda.VERSION, ns, keda.PLURAL
        )
    items: list[dict[str, Any]] = got["items"]  # type: ignore[index]
    return items


def scale_to(kube: KubeControlPlane, ns: str, replicas: int) -> None:
    """What KEDA's HPA does: write the Deployment's scale subresource."""
    with kube.admin_client() as api:
        k8s.AppsV1Api(api).patch_namespaced_deployment_scale(
            FN, ns, {"spec": {"replicas": replicas}}, field_manager="keda-hpa-stand-in"
        )


async def _passes(reconciler: Reconciler, seconds: float) -> None:
    t0 = time.monotonic()
    while time.monotonic() - t0 < seconds:
        await reconciler.tick()
        await asyncio.sleep(0.2)


async def test_keda_mode_emits_a_scaled_object_and_leaves_the_count_alone(
    kube: KubeControlPlane,
    keda_crd: None,
    namespace: str,
    kafka_broker: KafkaBroker,
    tmp_path: Path,
) -> None:
    brokers = kafka_broker.bootstrap_servers
    topic = f"keda-{uuid.uuid4().hex[:6]}"
    kafka_broker.create_topic(topic, partitions=PARTITIONS)
    platform = KubernetesPlatform(namespace, kube.kubeconfig_path, autoscaler="keda")
    async with in_process_controller(
        tmp_path,
        platform,
        "cid-keda",
        kubeconfig=kube.kubeconfig_path,
        k8s_namespace=namespace,
        k8s_autoscaler="keda",
        lag_interval_s=0.3,
    ) as ctl:
        settings, store, service, reconciler = ctl.settings, ctl.store, ctl.service, ctl.reconciler
        ctl.save_deploying(FN, _spec(brokers, topic))
        reconciler.lag.start()
        await until(reconciler, lambda: store.get_function(FN).state == "ready", "ready")

        # --- the ScaledObject: accepted by KEDA's schema, every field kept --------------------
        [so] = scaled_objects(kube, namespace)
        dep = deployment(kube, namespace, FN)
        assert so["metadata"]["name"] == FN
        assert so["metadata"]["labels"]["tickrun.io/controller"] == "cid-keda"
        [owner] = so["metadata"]["ownerReferences"]
        assert (owner["kind"], owner["name"], owner["uid"]) == ("Deployment", FN, dep.metadata.uid)
        body = so["spec"]
        assert body["scaleTargetRef"] == {"apiVersion": "apps/v1", "kind": "Deployment", "name": FN}
        assert (body["minReplicaCount"], body["maxReplicaCount"]) == (1, 6)
        by_type = {t["type"]: t for t in body["triggers"]}
        assert set(by_type) == {"kafka", "cron", "cpu"}
        assert by_type["kafka"]["metadata"] == {
            "bootstrapServers": brokers,
            "consumerGroup": f"{topic}-g",
            "topic": topic,
            "lagThreshold": "10",
            "offsetResetPolicy": "earliest",
        }
        assert by_type["cron"]["metadata"] == {
            "timezone": "Europe/London",
            "start": "59 8 * * 1-5",
            "end": "1 9 * * 1-5",
            "desiredReplicas": "1",
        }
        assert by_type["cpu"]["metadata"] == {"value": "60"}
        # The server pruned nothing: everything tickrun sent is in KEDA's schema.
        workload = Workload(
            function=FN,
            revision="r1",
            replicas=1,
            spec=_spec(brokers, topic),
            image="localhost/tickrun/keda-fn:1",
            env={},
            secret_env={},
            controller_id="cid-keda",
        )
        owner_ref = m.owner_reference(FN, dep.metadata.uid)
        sent = keda.scaled_object(workload, namespace, owner_ref)["spec"]
        assert {k: body[k] for k in sent} == sent
        with kube.admin_client() as api:
            custom = k8s.CustomObjectsApi(api)
            strict = {**so, "metadata": {"name": "strict-check", "namespace": namespace}}
            custom.create_namespaced_custom_object(
                keda.GROUP, keda.VERSION, namespace, keda.PLURAL, strict,
                dry_run="All", field_validation="Strict",
            )  # fmt: skip
            # ...and the schema is really enforced: a count that is not a number is refused.
            bad = {**strict, "spec": {**so["spec"], "minReplicaCount": "one"}}
            with pytest.raises(ApiException) as refused:
                custom.create_namespaced_custom_object(
                    keda.GROUP, keda.VERSION, namespace, keda.PLURAL, bad, dry_run="All"
                )
            assert refused.value.status == 422

        # --- no HPA of tickrun's (targetCPU is KEDA's cpu trigger), no count in its apply -----
        assert objects_of(kube, namespace, FN)["hpas"] == []
        assert dep.spec.replicas == 1  # the API server's default: tickrun stated none
        owned = [f for f in dep.metadata.managed_fields if f.manager == "tickrun"]
        assert owned and all("f:replicas" not in str(f.fields_v1) for f in owned)

        # --- a real lag burst: tickrun's own rule wants 4, the Deployment stays where it is ---
        produce(brokers, topic, ({"i": i} for i in range(200)), partition_of=lambda i: i % 4)
        await until(
            reconciler,
            lambda: (reconciler.autoscaler.explain(FN) or {}).get("desired") == PARTITIONS,
            "tickrun's autoscaler to read the lag",
        )
        await _passes(reconciler, 2.0)
        assert deployment(kube, namespace, FN).spec.replicas == 1
        assert not [e for e in store.list_events(FN) if e.kind == "scaled"]

        # KEDA's HPA moves the count: tickrun follows it (pods mirrored), never reverts it.
        scale_to(kube, namespace, 3)
        await until(reconciler, lambda: len(store.list_replicas(FN)) == 3, "3 pods mirrored")
        await _passes(reconciler, 2.0)
        assert deployment(kube, namespace, FN).spec.replicas == 3

        # A bounds change reaches the ScaledObject (no new revision, no rebuild).
        store.update_function(FN, spec=_spec(brokers, topic, minReplicas=1, maxReplicas=8))
        await until(
            reconciler,
            lambda: scaled_objects(kube, namespace)[0]["spec"]["maxReplicaCount"] == 8,
            "maxReplicaCount 8",
        )
        assert deployment(kube, namespace, FN).spec.replicas == 3

        # --- a restarted controller re-adopts: one ScaledObject, nothing re-rolled ------------
        so_before = scaled_objects(kube, namespace)[0]["metadata"]
        generation = deployment(kube, namespace, FN).metadata.generation
        await asyncio.to_thread(reconciler.lag.stop)
        again = Reconciler(settings, store, service, {}, "cid-keda")
        await again.adopt()
        await _passes(again, 2.0)
        [so_after] = scaled_objects(kube, namespace)
        assert so_after["metadata"]["uid"] == so_before["uid"]
        assert so_after["metadata"]["generation"] == so_before["generation"]
        after = deployment(kube, namespace, FN)
        assert (after.metadata.generation, after.spec.replicas) == (generation, 3)
        assert any(e.kind == "adopted" for e in store.list_events(FN))

        # --- a fixed count is tickrun's again: the ScaledObject goes, the count is stated -----
        store.update_function(FN, spec=_spec(brokers, topic, replicas=2))
        await until(again, lambda: not scaled_objects(kube, namespace), "ScaledObject removed")
        await until(again, lambda: deployment(kube, namespace, FN).spec.replicas == 2, "2")
        store.update_function(FN, spec=_spec(brokers, topic))
        await until(again, lambda: scaled_objects(kube, namespace), "ScaledObject back")

        # --- delete leaves nothing, the ScaledObject included ---------------------------------
        await service.delete(FN)
        await until(again, lambda: not store.find_function(FN), "deleted")
        wait_for(
            lambda: (
                not any(objects_of(kube, namespace, FN).values())
                and not scaled_objects(kube, namespace)
            ),
            60,
            "every object gone",
        )


async def test_the_charts_role_grants_scaled_objects_only_in_keda_mode(
    kube: KubeControlPlane, keda_crd: None, namespace: str, tmp_path: Path
) -> None:
    """The platform in keda mode on the installed chart's ServiceAccount token: allowed with
    controller.autoscaler=keda, forbidden once an upgrade goes back to tickrun's autoscaler."""
    helm = Helm(tmp_path / "helm", kube.kubeconfig_path)
    helm("install", RELEASE, str(CHART), "--namespace", namespace, *VARIANTS["postgres"],
         "--set", "controller.autoscaler=keda")  # fmt: skip
    token = kube.service_account_kubeconfig(namespace, f"{RELEASE}-tickrun")
    platform = KubernetesPlatform(namespace, token, autoscaler="keda")
    workload = Workload(
        function=FN,
        revision="r1",
        replicas=1,
        spec=_spec("kafka.example:9092", "ticks"),
        image="localhost/tickrun/keda-fn:1",
        env={},
        secret_env={},
        controller_id="chart-keda",
    )
    try:
        await platform.apply(workload)
        assert [o["metadata"]["name"] for o in scaled_objects(kube, namespace)] == [FN]
        await platform.remove(FN)
        assert scaled_objects(kube, namespace) == []

        helm("upgrade", RELEASE, str(CHART), "--namespace", namespace, "--reuse-values",
             "--set", "controller.autoscaler=tickrun")  # fmt: skip
        refused = await _refusal(platform, workload, 30.0)
        assert "forbidden" in refused.lower() and "scaledobjects" in refused
        assert scaled_objects(kube, namespace) == []
    finally:
        await platform.close()
        helm("uninstall", RELEASE, "--namespace", namespace, check=False)


async def _refusal(platform: KubernetesPlatform, workload: Workload, timeout_s: float) -> str:
    """The message of the first apply the API server refuses (RBAC changes apply within
    moments, not at once)."""
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        try:
            await platform.apply(workload)
        except PlatformError as exc:
            return exc.message
        await platform.remove(workload.function)
        await asyncio.sleep(0.5)
    raise AssertionError("the Role still grants scaledobjects")
