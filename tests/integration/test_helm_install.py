"""The Helm chart installed into the real API server (kwok makes the controller's pod Ready):
`helm install --wait` and `helm uninstall`, the chart's ServiceAccount token allowed in its
namespace and refused outside it and for cluster-scoped reads, and the kubernetes platform itself
running on that token.
"""

from __future__ import annotations

import asyncio
import base64
import time
from collections.abc import Callable

import pytest
from kubernetes import client
from kubernetes.client.exceptions import ApiException

from tests.integration.helmchart import (
    CHART,
    RELEASE,
    VARIANTS,
    Helm,
    helm,
    is_ready,
    namespace,
    new_namespace,
    raw,
    release_objects,
)
from tests.peers.k8s import KubeControlPlane, api_client
from tests.support.k8s_controller import eventually
from tickrun.controller.platforms.base import Workload
from tickrun.controller.platforms.kubernetes.platform import KubernetesPlatform
from tickrun.functions.errors import PlatformError
from tickrun.functions.spec import parse_spec

pytestmark = [pytest.mark.k8s, pytest.mark.timeout(300)]


__all__ = ["helm", "namespace"]  # the fixtures, re-exported so pytest finds them here


def _static_volume(core: client.CoreV1Api, namespace: str) -> str:
    """A PersistentVolume the release's PVC binds to: the test cluster has no provisioner."""
    name = f"pv-{namespace}"
    core.create_persistent_volume(
        client.V1PersistentVolume(
            metadata=client.V1ObjectMeta(name=name),
            spec=client.V1PersistentVolumeSpec(
                capacity={"storage": "2Gi"},
                access_modes=["ReadWriteOnce"],
                storage_class_name="",
                host_path=client.V1HostPathVolumeSource(path=f"/tmp/{name}"),
                claim_ref=client.V1ObjectReference(
                    namespace=namespace, name=f"{RELEASE}-tickrun-state"
                ),
            ),
        )
    )
    return name


def _deployment(name: str, image: str = "tickrun/fn:1") -> client.V1Deployment:
    labels = {"app": name}
    return client.V1Deployment(
        metadata=client.V1ObjectMeta(name=name, labels=labels),
        spec=client.V1DeploymentSpec(
            replicas=1,
            selector=client.V1LabelSelector(match_labels=labels),
            template=client.V1PodTemplateSpec(
                metadata=client.V1ObjectMeta(labels=labels),
                spec=client.V1PodSpec(containers=[client.V1Container(name="fn", image=image)]),
            ),
        ),
    )


def _job(name: str) -> client.V1Job:
    return client.V1Job(
        metadata=client.V1ObjectMeta(name=name),
        spec=client.V1JobSpec(
            completion_mode="Indexed",
            completions=2,
            parallelism=2,
            template=client.V1PodTemplateSpec(
                spec=client.V1PodSpec(
                    restart_policy="Never",
                    containers=[client.V1Container(name="run", image="tickrun/run:1")],
                )
            ),
        ),
    )


def _refused(call: Callable[[], object]) -> int:
    with pytest.raises(ApiException) as info:
        call()
    return int(info.value.status)


def _check_service_account_rights(kube: KubeControlPlane, namespace: str, other: str) -> None:
    """What the controller may do with the chart's ServiceAccount token, and what it may not."""
    sa_kubeconfig = kube.service_account_kubeconfig(namespace, f"{RELEASE}-tickrun")
    with api_client(sa_kubeconfig) as sa:
        apps, core, batch = client.AppsV1Api(sa), client.CoreV1Api(sa), client.BatchV1Api(sa)
        # In its namespace: the kubernetes platform's verbs.
        apps.create_namespaced_deployment(namespace, _deployment("fn-a"))
        apps.patch_namespaced_deployment(
            "fn-a", namespace, {"spec": {"template": {"metadata": {"labels": {"rev": "2"}}}}}
        )
        apps.patch_namespaced_deployment_scale("fn-a", namespace, {"spec": {"replicas": 3}})
        assert raw(apps.read_namespaced_deployment_scale("fn-a", namespace))["spec"] == {
            "replicas": 3
        }
        core.create_namespaced_secret(
            namespace,
            client.V1Secret(metadata=client.V1ObjectMeta(name="fn-a-env"), string_data={"k": "v"}),
        )
        batch.create_namespaced_job(namespace, _job("sweep-a"))
        assert [p for p in core.list_namespaced_pod(namespace).items if p.metadata]
        assert apps.list_namespaced_replica_set(namespace).items is not None
        apps.delete_namespaced_deployment("fn-a", namespace)
        # Elsewhere: refused.
        assert (
            _refused(lambda: apps.create_namespaced_deployment(other, _deployment("fn-b"))) == 403
        )
        assert _refused(lambda: core.list_namespaced_secret(other)) == 403
        assert _refused(lambda: batch.create_namespaced_job(other, _job("sweep-b"))) == 403
        assert _refused(lambda: core.list_node()) == 403
        assert _refused(lambda: core.list_namespace()) == 403
        assert _refused(lambda: apps.list_deployment_for_all_namespaces()) == 403
        # Least privilege inside its namespace too: no pod exec/create, no RBAC edits.
        assert _refused(lambda: core.create_namespaced_pod(namespace, client.V1Pod(
            metadata=client.V1ObjectMeta(name="p"),
            spec=client.V1PodSpec(containers=[client.V1Container(name="c", image="x")]),
        ))) == 403  # fmt: skip
        assert (
            _refused(lambda: client.RbacAuthorizationV1Api(sa).list_namespaced_role(namespace))
            == 403
        )


def test_helm_install_rbac_and_uninstall(
    kube: KubeControlPlane, helm: Helm, namespace: str
) -> None:
    with kube.admin_client() as api:
        core, apps = client.CoreV1Api(api), client.AppsV1Api(api)
        other = new_namespace(core, "other")
        pv = _static_volume(core, namespace)
        try:
            t0 = time.monotonic()
            helm("install", RELEASE, str(CHART), "--namespace", namespace,
                 "--set", "store.sqlite.storageClass=-", "--wait", "--timeout", "120s")  # fmt: skip
            install_s = time.monotonic() - t0
            # --wait returned: the controller's pod is Ready (kwok) and its PVC is bound.
            name = f"{RELEASE}-tickrun"
            dep = raw(apps.read_namespaced_deployment_status(name, namespace))
            assert dep["status"]["availableReplicas"] == 1, dep["status"]
            pods = raw(
                core.list_namespaced_pod(
                    namespace, label_selector=f"app.kubernetes.io/instance={RELEASE}"
                )
            )["items"]
            assert len(pods) == 1 and pods[0]["spec"]["serviceAccountName"] == name
            assert is_ready(pods[0])
            pvc = raw(core.read_namespaced_persistent_volume_claim(f"{name}-state", namespace))
            assert pvc["status"]["phase"] == "Bound" and pvc["spec"]["volumeName"] == pv
            svc = raw(core.read_namespaced_service(name, namespace))
            assert [p["port"] for p in svc["spec"]["ports"]] == [8070]
            token = raw(core.read_namespaced_secret(f"{name}-token", namespace))
            assert len(base64.b64decode(token["data"]["token"])) == 40
            status = helm("status", RELEASE, "--namespace", namespace).stdout
            assert "STATUS: deployed" in status, status
            print(f"helm install --wait: {install_s:.1f}s")

            # An upgrade keeps the generated token (clients hold it), so the pod is not rolled.
            template = dep["spec"]["template"]
            helm("upgrade", RELEASE, str(CHART), "--namespace", namespace, "--reuse-values",
                 "--wait", "--timeout", "120s")  # fmt: skip
            again = raw(core.read_namespaced_secret(f"{name}-token", namespace))
            assert again["data"]["token"] == token["data"]["token"]
            upgraded = raw(apps.read_namespaced_deployment(name, namespace))
            assert upgraded["spec"]["template"] == template

            _check_service_account_rights(kube, namespace, other)
            # Not the release's: what the ServiceAccount made above.
            client.BatchV1Api(api).delete_namespaced_job(
                "sweep-a", namespace, propagation_policy="Background"
            )
            core.delete_namespaced_secret("fn-a-env", namespace)

            helm("uninstall", RELEASE, "--namespace", namespace, "--wait", "--timeout", "120s")
            eventually(
                lambda: True if not release_objects(api, namespace) else None,
                "the release's objects to go",
            )
            assert release_objects(api, namespace) == []
        finally:
            core.delete_namespace(other)
            core.delete_persistent_volume(pv)


def test_helm_wait_waits_for_the_controller_pod(
    kube: KubeControlPlane, helm: Helm, namespace: str
) -> None:
    """--wait is real here: with no volume for the SQLite PVC the pod cannot be scheduled, so
    the install times out instead of reporting success (kwok readies only scheduled pods)."""
    done = helm("install", RELEASE, str(CHART), "--namespace", namespace,
                "--set", "store.sqlite.storageClass=-", "--wait", "--timeout", "6s",
                check=False)  # fmt: skip
    assert done.returncode != 0, done.stdout
    # helm's watcher names what it waited for
    assert "Deployment/" in done.stderr and "Available: 0/1" in done.stderr, done.stderr
    with kube.admin_client() as api:
        pods = raw(client.CoreV1Api(api).list_namespaced_pod(namespace))["items"]
        assert pods and not any(is_ready(p) for p in pods)
        helm("uninstall", RELEASE, "--namespace", namespace, "--wait", "--timeout", "60s")
        eventually(
            lambda: True if not release_objects(api, namespace) else None,
            "the failed release's objects to go",
        )


def _workload(function: str) -> Workload:
    spec = {"metadata": {"name": function}, "spec": {"maxReplicas": 3, "targetCPU": 70}}
    return Workload(
        function=function,
        revision="r1",
        replicas=1,
        spec=parse_spec(spec),
        image="localhost/tickrun/chart-check:1",
        env={"FLAVOUR": "plain"},
        secret_env={"DB_PASSWORD": "s3cret"},  # → a Secret and a secretKeyRef
        controller_id="chart-test",
    )


async def test_kubernetes_platform_runs_on_the_charts_service_account(
    kube: KubeControlPlane, helm: Helm, namespace: str
) -> None:
    """The kubernetes platform itself with the installed chart's token (PostgreSQL variant: no
    volume): every call it makes is inside the Role; the same token is refused elsewhere."""
    helm("install", RELEASE, str(CHART), "--namespace", namespace, *VARIANTS["postgres"],
         "--wait", "--timeout", "120s")  # fmt: skip
    token_kubeconfig = kube.service_account_kubeconfig(namespace, f"{RELEASE}-tickrun")
    platform = KubernetesPlatform(namespace, token_kubeconfig)
    try:
        # server-side apply of a Deployment, Service, Secret and HPA
        await platform.apply(_workload("chartfn"))
        status = await platform.status("chartfn")
        assert status is not None and status.desired == 1
        await platform.scale("chartfn", 2)

        async def two_ready() -> bool:
            st = await platform.status("chartfn")
            return st is not None and st.ready == 2

        deadline = time.monotonic() + 60
        while not await two_ready():
            assert time.monotonic() < deadline, "2 ready pods"
            await asyncio.sleep(0.25)
        logs = await platform.logs("chartfn", 10)
        # kwok serves no logs; what matters is that pods/log is not forbidden
        assert len(logs) == 2 and not any("forbidden" in p.error.lower() for p in logs)
        assert await platform.adopt("chartfn-controller-absent") == set()
        assert await platform.adopt("chart-test") == {"chartfn"}
        await platform.remove("chartfn")
        assert await platform.status("chartfn") is None
    finally:
        await platform.close()

    with kube.admin_client() as api:
        other = new_namespace(client.CoreV1Api(api), "other")
        elsewhere = KubernetesPlatform(other, token_kubeconfig)
        try:
            with pytest.raises(PlatformError, match="(?i)forbidden"):
                await elsewhere.apply(_workload("chartfn"))
        finally:
            await elsewhere.close()
            client.CoreV1Api(api).delete_namespace(other)
        helm("uninstall", RELEASE, "--namespace", namespace, "--wait", "--timeout", "60s")
        eventually(
            lambda: True if not release_objects(api, namespace) else None,
            "the release's objects to go",
        )
