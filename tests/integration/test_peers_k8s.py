"""Smoke tests: the Kubernetes peer is a real control plane (controllers, scheduler, RBAC), with
kwok playing the nodes."""

from __future__ import annotations

from collections.abc import Iterator

import pytest
from kubernetes import client
from kubernetes.client.exceptions import ApiException

from tests.peers.k8s import KubeControlPlane, api_client
from tests.support.k8s_controller import eventually, kube_namespace

pytestmark = [pytest.mark.k8s, pytest.mark.timeout(180)]


@pytest.fixture
def namespace(kube: KubeControlPlane) -> Iterator[str]:
    with kube_namespace(kube, "smoke") as name:
        yield name


def test_deployment_becomes_available_on_kwok_nodes(kube: KubeControlPlane, namespace: str) -> None:
    labels = {"app": "smoke"}
    deployment = client.V1Deployment(
        metadata=client.V1ObjectMeta(name="smoke"),
        spec=client.V1DeploymentSpec(
            replicas=2,
            selector=client.V1LabelSelector(match_labels=labels),
            template=client.V1PodTemplateSpec(
                metadata=client.V1ObjectMeta(labels=labels),
                spec=client.V1PodSpec(
                    containers=[client.V1Container(name="app", image="tickrun/smoke:1")]
                ),
            ),
        ),
    )
    with kube.admin_client() as api:
        apps, core = client.AppsV1Api(api), client.CoreV1Api(api)
        apps.create_namespaced_deployment(namespace, deployment)

        def available() -> int | None:
            status = apps.read_namespaced_deployment_status("smoke", namespace).status
            return status.available_replicas if status and status.available_replicas == 2 else None

        assert eventually(available, "2 available replicas", 30, 0.2) == 2
        pods = core.list_namespaced_pod(namespace, label_selector="app=smoke").items
        assert len(pods) == 2
        # Scheduled by kube-scheduler onto the fake nodes, made Running/Ready by kwok.
        nodes = {f"kwok-node-{i}" for i in range(kube.nodes)}
        for pod in pods:
            assert pod.spec is not None and pod.status is not None
            assert pod.spec.node_name in nodes
            assert pod.status.phase == "Running"
            assert any(
                c.type == "Ready" and c.status == "True" for c in pod.status.conditions or []
            )
            assert pod.status.pod_ip


def test_rbac_refuses_a_service_account_until_a_role_is_bound(
    kube: KubeControlPlane, namespace: str
) -> None:
    with kube.admin_client() as admin:
        core, rbac = client.CoreV1Api(admin), client.RbacAuthorizationV1Api(admin)
        core.create_namespaced_service_account(
            namespace, client.V1ServiceAccount(metadata=client.V1ObjectMeta(name="reader"))
        )
        with api_client(kube.service_account_kubeconfig(namespace, "reader")) as sa:
            sa_core = client.CoreV1Api(sa)
            with pytest.raises(ApiException) as refused:
                sa_core.list_namespaced_pod(namespace)
            assert refused.value.status == 403
            assert f"system:serviceaccount:{namespace}:reader" in str(refused.value.body)

            rbac.create_namespaced_role(
                namespace,
                client.V1Role(
                    metadata=client.V1ObjectMeta(name="pod-reader"),
                    rules=[
                        client.V1PolicyRule(api_groups=[""], resources=["pods"], verbs=["list"])
                    ],
                ),
            )
            rbac.create_namespaced_role_binding(
                namespace,
                client.V1RoleBinding(
                    metadata=client.V1ObjectMeta(name="reader-reads-pods"),
                    role_ref=client.V1RoleRef(
                        api_group="rbac.authorization.k8s.io", kind="Role", name="pod-reader"
                    ),
                    subjects=[
                        client.RbacV1Subject(
                            kind="ServiceAccount", name="reader", namespace=namespace
                        )
                    ],
                ),
            )

            def allowed() -> bool | None:
                try:
                    sa_core.list_namespaced_pod(namespace)
                except ApiException as exc:
                    if exc.status != 403:
                        raise
                    return None
                return True

            assert eventually(allowed, "the RoleBinding to take effect", 30, 0.2)
            # The binding grants exactly what it says: listing Secrets stays refused.
            with pytest.raises(ApiException) as still_refused:
                sa_core.list_namespaced_secret(namespace)
            assert still_refused.value.status == 403
