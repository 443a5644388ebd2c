"""The kubernetes platform against a real control plane (etcd, kube-apiserver, controller-manager,
scheduler; kwok plays the nodes, so pods turn Ready without running anything).

Two views: the controller process end to end (podman builds the image, the API deploys it,
kill -9 and re-adoption, delete), and the cluster reconciler in-process (the endpoint table gets
the pods' addresses, an unrecorded function's objects are removed on adoption).
"""

from __future__ import annotations

import base64
import time
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from kubernetes import client as k8s

from tests.integration.test_controller_harness import (
    ControllerProc,
    cleanup,
    spec_of,
    wait_for,
    write_function,
)
from tests.peers.k8s import KubeControlPlane
from tests.support.k8s_controller import deployment, in_process_controller, kube_namespace, until
from tickrun.controller.platforms.base import Workload
from tickrun.controller.platforms.kubernetes.platform import KubernetesPlatform
from tickrun.controller.reconciler import Reconciler
from tickrun.functions.settings import K8S_NAMESPACE, KUBECONFIG
from tickrun.functions.spec import parse_spec

pytestmark = [pytest.mark.k8s, pytest.mark.slow]

FN = "scorer"
SELECT = "tickrun.io/function={}"


@pytest.fixture
def namespace(kube: KubeControlPlane) -> Iterator[str]:
    with kube_namespace(kube, "tickrun") as name:
        yield name


def objects_of(kube: KubeControlPlane, ns: str, function: str) -> dict[str, list[str]]:
    """Every object kind tickrun creates (or the cluster makes from them), by name."""
    sel = SELECT.format(function)
    with kube.admin_client() as api:
        apps, core = k8s.AppsV1Api(api), k8s.CoreV1Api(api)
        hpa = k8s.AutoscalingV2Api(api)
        found = {
            "deployments": apps.list_namespaced_deployment(ns, label_selector=sel).items,
            "replicasets": apps.list_namespaced_replica_set(ns, label_selector=sel).items,
            "pods": core.list_namespaced_pod(ns, label_selector=sel).items,
            "services": core.list_namespaced_service(ns, label_selector=sel).items,
            "secrets": core.list_namespaced_secret(ns, label_selector=sel).items,
            "hpas": hpa.list_namespaced_horizontal_pod_autoscaler(ns, label_selector=sel).items,
        }
    return {kind: sorted(o.metadata.name for o in items) for kind, items in found.items()}


def event_time(events: list[dict[str, Any]], kind: str) -> float:
    return float(next(e["time"] for e in reversed(events) if e["kind"] == kind))


def test_controller_deploys_scales_rolls_readopts_and_deletes(
    kube: KubeControlPlane, namespace: str, podman_env: dict[str, str], tmp_path: Path
) -> None:
    env = {
        **podman_env,
        KUBECONFIG.name: str(kube.kubeconfig_path),
        K8S_NAMESPACE.name: namespace,
    }
    state = tmp_path / "state"
    ctl = ControllerProc(state, env).start()
    try:
        api_client = ctl.client
        assert "kubernetes" in api_client._request("GET", "/api/version")["platforms"]
        api_client._request("PUT", "/api/secrets/db", {"data": {"pw": "s3cret"}})
        extra = {
            "env": [
                {"name": "FLAVOUR", "value": "vanilla"},
                {"name": "DB_PASSWORD", "valueFrom": {"secretKeyRef": {"name": "db", "key": "pw"}}},
            ],
            "resources": {
                "requests": {"cpu": "100m", "memory": "64Mi"},
                "limits": {"cpu": "500m", "memory": "256Mi"},
            },
            "drainTimeout": "20s",
        }
        folder = write_function(tmp_path / "src", FN, replicas=2, extra_spec=extra)
        spec = spec_of(folder)
        spec["metadata"]["labels"] = {"team": "risk"}

        # --- deploy: Deployment, Service, Secret; pods Ready → the function is ready ----------
        t0 = time.monotonic()
        result = api_client.deploy(spec, folder, platform="kubernetes")
        # kwok never pulls, so the local image does; a real node could not (no registry set)
        [warning] = result["warnings"]
        assert warning.startswith("no registry is set (TICKRUN_REGISTRY)"), warning
        fn = api_client.wait_ready(FN, timeout_s=900)
        deploy_s = time.monotonic() - t0
        assert fn["platform"] == "kubernetes"
        events = api_client.events(FN)
        apply_to_ready_s = event_time(events, "ready") - event_time(events, "applied")
        build = api_client.get_build(result["build"]["id"])
        print(
            f"\nkubernetes: deploy → ready {deploy_s:.2f} s (build {build['duration_s']} s, "
            f"cached {build['cached']}); applied → 2 pods ready {apply_to_ready_s:.2f} s"
        )

        dep = deployment(kube, namespace, FN)
        assert dep.spec.replicas == 2
        assert dep.status.available_replicas == 2
        assert dep.metadata.labels["team"] == "risk"
        assert dep.metadata.labels["tickrun.io/function"] == FN
        assert dep.metadata.labels["app.kubernetes.io/managed-by"] == "tickrun"
        assert dep.spec.template.metadata.annotations["tickrun.io/revision"] == fn["revision"]
        assert dep.spec.strategy.type == "RollingUpdate"
        pod_spec = dep.spec.template.spec
        assert pod_spec.termination_grace_period_seconds == 25  # drainTimeout 20 s + margin
        [c] = pod_spec.containers
        assert c.image == fn["image"]
        assert c.resources.limits == {"cpu": "500m", "memory": "256Mi"}
        assert c.resources.requests == {"cpu": "100m", "memory": "64Mi"}
        assert c.readiness_probe.http_get.path == "/readyz"
        assert c.liveness_probe.http_get.path == "/healthz"
        assert c.security_context.run_as_non_root is True
        assert c.security_context.capabilities.drop == ["ALL"]
        env_by_name = {e.name: e for e in c.env}
        assert env_by_name["FLAVOUR"].value == "vanilla"
        ref = env_by_name["DB_PASSWORD"].value_from.secret_key_ref
        assert (ref.name, ref.key) == (f"{FN}-secrets", "DB_PASSWORD")
        with kube.admin_client() as api:
            core = k8s.CoreV1Api(api)
            svc = core.read_namespaced_service(FN, namespace)
            secret = core.read_namespaced_secret(f"{FN}-secrets", namespace)
            pods = core.list_namespaced_pod(namespace, label_selector=SELECT.format(FN)).items
        assert svc.spec.selector == {"tickrun.io/function": FN}
        assert base64.b64decode(secret.data["DB_PASSWORD"]) == b"s3cret"
        for owned in (svc, secret):
            [owner] = owned.metadata.owner_references
            assert (owner.kind, owner.name, owner.uid) == ("Deployment", FN, dep.metadata.uid)

        # the API shows the pods as the function's replicas
        items = fn["replicas"]["items"]
        assert sorted(r["id"] for r in items) == sorted(p.metadata.name for p in pods)
        assert {r["state"] for r in items} == {"ready"} and fn["replicas"]["ready"] == 2
        logs = api_client.logs(FN)
        assert sorted(entry["replica"] for entry in logs) == sorted(r["id"] for r in items)
        # kwok runs no container: pods/log answers an error per pod, reported, not raised
        assert all(entry["lines"] or entry.get("error") for entry in logs)

        # --- scale: a spec-only update moves spec.replicas, no new revision -------------------
        revision = fn["revision"]
        spec["spec"]["replicas"] = 3
        t0 = time.monotonic()
        api_client.deploy(spec, None)
        wait_for(lambda: deployment(kube, namespace, FN).spec.replicas == 3, 60, "replicas 3")
        scale_s = time.monotonic() - t0
        wait_for(lambda: api_client.get_function(FN)["replicas"]["ready"] == 3, 60, "3 ready")
        print(
            f"kubernetes: spec update → spec.replicas 3 in {scale_s:.2f} s, "
            f"3 ready in {time.monotonic() - t0:.2f} s"
        )
        assert api_client.get_function(FN)["revision"] == revision
        assert len(objects_of(kube, namespace, FN)["replicasets"]) == 1

        # --- a code change rolls out a new ReplicaSet -----------------------------------------
        write_function(tmp_path / "src", FN, version="2", replicas=3, extra_spec=extra)
        spec2 = spec_of(folder)
        spec2["metadata"]["labels"] = {"team": "risk"}
        changed = api_client.deploy(spec2, folder)
        fn = api_client.wait_ready(FN, version=changed["function"]["version"], timeout_s=600)
        assert fn["revision"] != revision
        with kube.admin_client() as api:
            sets = (
                k8s.AppsV1Api(api)
                .list_namespaced_replica_set(namespace, label_selector=SELECT.format(FN))
                .items
            )
        by_revision = {s.metadata.annotations["tickrun.io/revision"]: s for s in sets}
        assert set(by_revision) == {revision, fn["revision"]}
        assert by_revision[fn["revision"]].spec.replicas == 3
        wait_for(
            lambda: (
                deployment(kube, namespace, FN).status.updated_replicas == 3
                and {r["revision"] for r in api_client.get_function(FN)["replicas"]["items"]}
                == {fn["revision"]}
            ),
            60,
            "old pods gone",
        )

        # --- CPU autoscaling asks for an HPA; the GPU goes to the pods ------------------------
        gpu_folder = write_function(
            tmp_path / "src",
            "gpu-scorer",
            extra_spec={
                "minReplicas": 1,
                "maxReplicas": 4,
                "targetCPU": 60,
                "resources": {"limits": {"nvidia.com/gpu": 1, "cpu": "1"}},
            },
        )
        gpu = api_client.deploy(spec_of(gpu_folder), gpu_folder, platform="kubernetes")
        # this cluster has no metrics API: the HPA is made but cannot act on targetCPU
        assert any("targetCPU" in w for w in gpu["warnings"]), gpu["warnings"]
        assert not any("nvidia.com/gpu" in w for w in gpu["warnings"])
        wait_for(lambda: objects_of(kube, namespace, "gpu-scorer")["hpas"], 600, "the HPA")
        with kube.admin_client() as api:
            hpa = k8s.AutoscalingV2Api(api).read_namespaced_horizontal_pod_autoscaler(
                "gpu-scorer", namespace
            )
        assert (hpa.spec.min_replicas, hpa.spec.max_replicas) == (1, 4)
        assert hpa.spec.scale_target_ref.name == "gpu-scorer"
        assert hpa.spec.metrics[0].resource.target.average_utilization == 60
        assert hpa.metadata.owner_references[0].name == "gpu-scorer"
        [gc] = deployment(kube, namespace, "gpu-scorer").spec.template.spec.containers
        assert gc.resources.limits["nvidia.com/gpu"] == "1"
        api_client.delete_function("gpu-scorer")
        wait_for(
            lambda: not any(objects_of(kube, namespace, "gpu-scorer").values()),
            60,
            "gpu-scorer gone",
        )

        # --- controller kill -9 → re-adopted, never duplicated --------------------------------
        before = deployment(kube, namespace, FN)
        pods_before = objects_of(kube, namespace, FN)["pods"]
        ctl.kill9()
        ctl = ControllerProc(state, env).start()
        api_client = ctl.client
        wait_for(lambda: api_client.get_function(FN)["replicas"]["ready"] == 3, 60, "re-adopted")
        after = deployment(kube, namespace, FN)
        assert after.metadata.uid == before.metadata.uid
        assert after.metadata.generation == before.metadata.generation  # nothing re-applied
        found = objects_of(kube, namespace, FN)
        assert found["deployments"] == [FN]
        assert found["pods"] == pods_before
        assert any(e["kind"] == "adopted" for e in api_client.events(FN))

        # --- delete leaves nothing ------------------------------------------------------------
        api_client.delete_function(FN)
        wait_for(lambda: not any(objects_of(kube, namespace, FN).values()), 60, "all gone")
    finally:
        cleanup(ctl)


def published(reconciler: Reconciler, name: str) -> dict[str, str]:
    """What the gateways would route ``name`` to: replica id → URL."""
    table = reconciler.endpoints.get(name)
    return {e.replica_id: e.url for e in table.endpoints} if table is not None else {}


async def test_cluster_reconciler_publishes_pod_addresses_and_adopts(
    kube: KubeControlPlane, namespace: str, tmp_path: Path
) -> None:
    platform = KubernetesPlatform(namespace, kube.kubeconfig_path)
    async with in_process_controller(
        tmp_path, platform, "cid-1", kubeconfig=kube.kubeconfig_path, k8s_namespace=namespace
    ) as ctl:
        settings, store, service, reconciler = ctl.settings, ctl.store, ctl.service, ctl.reconciler
        ctl.save_deploying(
            "echo", parse_spec({"metadata": {"name": "echo"}, "spec": {"replicas": 2}})
        )
        await until(reconciler, lambda: store.get_function("echo").state == "ready", "ready", 30)
        with kube.admin_client() as api:
            pods = (
                k8s.CoreV1Api(api)
                .list_namespaced_pod(namespace, label_selector=SELECT.format("echo"))
                .items
            )
        assert published(reconciler, "echo") == {
            p.metadata.name: f"http://{p.status.pod_ip}:8080" for p in pods
        }
        assert all(p.status.pod_ip for p in pods)

        # the autoscaler's count reaches the scale subresource
        store.update_function(
            "echo", spec=parse_spec({"metadata": {"name": "echo"}, "spec": {"replicas": 3}})
        )
        await until(reconciler, lambda: len(published(reconciler, "echo")) == 3, "3 pods", 30)
        assert deployment(kube, namespace, "echo").spec.replicas == 3

        # an unrecorded function of this controller is removed on adoption; a recorded one stays
        ghost = Workload(
            function="ghost",
            revision="g1",
            replicas=1,
            spec=parse_spec({"metadata": {"name": "ghost"}}),
            image="localhost/tickrun/ghost:1",
            env={},
            secret_env={},
            controller_id="cid-1",
        )
        await platform.apply(ghost)
        assert await platform.adopt("cid-1") == {"echo", "ghost"}
        generation = deployment(kube, namespace, "echo").metadata.generation
        again = Reconciler(settings, store, service, {}, "cid-1")
        await again.adopt()
        await until(again, lambda: len(published(again, "echo")) == 3, "re-adopted", 30)
        assert await platform.adopt("cid-1") == {"echo"}
        assert deployment(kube, namespace, "echo").metadata.generation == generation

        await service.delete("echo")
        await until(
            again, lambda: not any(objects_of(kube, namespace, "echo").values()), "gone", 30
        )
        wait_for(lambda: not any(objects_of(kube, namespace, "ghost").values()), 30, "ghost gone")


async def test_a_cluster_refusal_puts_the_function_in_error_with_its_reason(
    kube: KubeControlPlane, tmp_path: Path
) -> None:
    missing = f"absent-{uuid.uuid4().hex[:6]}"
    platform = KubernetesPlatform(missing, kube.kubeconfig_path)
    async with in_process_controller(tmp_path, platform, "cid-2") as ctl:
        store, reconciler = ctl.store, ctl.reconciler
        ctl.save_deploying("lost", parse_spec({"metadata": {"name": "lost"}}))
        await until(reconciler, lambda: store.get_function("lost").state == "error", "error", 30)
        message = store.get_function("lost").message
        assert f"the namespace {missing!r} does not exist" in message
        assert "TICKRUN_K8S_NAMESPACE" in message
        assert "Traceback" not in message
        # said once, not on every pass
        await reconciler.tick()
        errors = [e for e in store.list_events("lost") if e.kind == "error"]
        assert len(errors) == 1
