"""What the Helm chart tests share: the chart, its value sets, helm with a private home, and
the release's objects as the API server lists them."""

from __future__ import annotations

import os
import subprocess
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
import yaml
from kubernetes import client

from tests.peers.k8s import KubeControlPlane, helm_binary
from tests.support.k8s_controller import kube_namespace

ROOT = Path(__file__).resolve().parents[2]
CHART = ROOT / "deploy" / "helm" / "tickrun"
RELEASE = "rel"
PG_URL = "postgresql+psycopg://tickrun:pw@db.example:5432/tickrun"
# name → helm flags; "external" names the user's own Secrets for everything.
VARIANTS: dict[str, list[str]] = {
    "sqlite": [],
    "postgres": ["--set", f"store.postgres.url={PG_URL}"],
    "external": [
        *("--set", "store.postgres.existingSecret=my-db", "--set", "token.existingSecret=my-tok"),
        *("--set", "artifacts.path=s3://art/runs", "--set", "artifacts.s3.endpoint=minio:9000"),
        *("--set", "artifacts.s3.secure=false", "--set", "artifacts.s3.existingSecret=my-s3"),
        *("--set", "controller.autoscaler=keda"),
    ],
}


class Helm:
    """helm as ensure.sh built it, with its config/cache in a temp dir (never the user's)."""

    def __init__(self, home: Path, kubeconfig: Path | None) -> None:
        self.env = {
            **os.environ,
            "HELM_CACHE_HOME": str(home / "cache"),
            "HELM_CONFIG_HOME": str(home / "config"),
            "HELM_DATA_HOME": str(home / "data"),
        }
        if kubeconfig is not None:
            self.env["KUBECONFIG"] = str(kubeconfig)

    def __call__(self, *args: str, check: bool = True) -> subprocess.CompletedProcess[str]:
        binary = helm_binary()
        if not os.access(binary, os.X_OK):
            pytest.fail(f"no helm at {binary}: run `deploy/peers/ensure.sh k8s`", pytrace=False)
        done = subprocess.run(
            [str(binary), *args], env=self.env, capture_output=True, text=True, timeout=240
        )
        if check and done.returncode != 0:
            raise AssertionError(f"helm {' '.join(args)} failed:\n{done.stdout}\n{done.stderr}")
        return done

    def render(self, namespace: str, flags: list[str]) -> list[dict[str, Any]]:
        out = self("template", RELEASE, str(CHART), "--namespace", namespace, *flags).stdout
        return [d for d in yaml.safe_load_all(out) if d]


@pytest.fixture(scope="module")
def helm(tmp_path_factory: pytest.TempPathFactory, kube: KubeControlPlane) -> Helm:
    """helm for the shared control plane, one private home per test module."""
    return Helm(tmp_path_factory.mktemp("helm"), kube.kubeconfig_path)


@pytest.fixture
def namespace(kube: KubeControlPlane) -> Iterator[str]:
    """The release's namespace, deleted afterwards."""
    with kube_namespace(kube, "chart") as name:
        yield name


def new_namespace(core: client.CoreV1Api, prefix: str) -> str:
    name = f"{prefix}-{uuid.uuid4().hex[:8]}"
    core.create_namespace(client.V1Namespace(metadata=client.V1ObjectMeta(name=name)))
    return name


def raw(obj: object) -> Any:
    """A client model as the API's JSON (camelCase keys, no Optional attributes to unwrap)."""
    return client.ApiClient().sanitize_for_serialization(obj)  # type: ignore[no-untyped-call]


def is_ready(pod: dict[str, Any]) -> bool:
    conditions = pod.get("status", {}).get("conditions") or []
    return any(c["type"] == "Ready" and c["status"] == "True" for c in conditions)


def release_objects(api: client.ApiClient, namespace: str) -> list[str]:
    """Everything left in the namespace that belongs to the release (its label or helm's)."""
    core, apps, rbac = (
        client.CoreV1Api(api),
        client.AppsV1Api(api),
        client.RbacAuthorizationV1Api(api),
    )
    mine = f"app.kubernetes.io/instance={RELEASE}"
    listers: dict[str, Callable[..., Any]] = {
        "Deployment": apps.list_namespaced_deployment,
        "ReplicaSet": apps.list_namespaced_replica_set,
        "Pod": core.list_namespaced_pod,
        "Service": core.list_namespaced_service,
        "Secret": core.list_namespaced_secret,
        "ServiceAccount": core.list_namespaced_service_account,
        "PersistentVolumeClaim": core.list_namespaced_persistent_volume_claim,
        "Role": rbac.list_namespaced_role,
        "RoleBinding": rbac.list_namespaced_role_binding,
    }
    left = [
        f"{kind}/{raw(item)['metadata']['name']}"
        for kind, lister in listers.items()
        for item in lister(namespace, label_selector=mine).items
    ]
    # helm's own record of the release
    left += [
        f"Secret/{raw(s)['metadata']['name']}"
        for s in core.list_namespaced_secret(
            namespace, label_selector=f"owner=helm,name={RELEASE}"
        ).items
    ]
    return left
