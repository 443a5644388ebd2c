"""The controller with TICKRUN_REGISTRY deploys on the real control plane (kwok nodes) by digest:
podman builds, the builder pushes to a real registry with htpasswd auth, and the Deployment's
image is ``<registry>/<function>@sha256:<the registry's digest>``. Deploying the unchanged
function again builds and pushes nothing and rolls nothing; the pods pull with the registry's
credentials (an image pull Secret); the password shows nowhere else (build log, events, API
answers, the Deployment, the controller's own log)."""

from __future__ import annotations

import base64
import json
import time
from collections.abc import Iterator
from pathlib import Path

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
from tests.peers.registry import RegistryServer
from tests.support.k8s_controller import deployment, kube_namespace
from tickrun.functions.settings import (
    K8S_NAMESPACE,
    KUBECONFIG,
    REGISTRY_PASSWORD,
    REGISTRY_TLS_VERIFY,
    REGISTRY_URL,
    REGISTRY_USERNAME,
)

pytestmark = [pytest.mark.k8s, pytest.mark.podman, pytest.mark.registry, pytest.mark.slow]

FN = "pulled-scorer"


@pytest.fixture
def namespace(kube: KubeControlPlane) -> Iterator[str]:
    with kube_namespace(kube, "tickrun-reg") as name:
        yield name


def test_controller_deploys_by_registry_digest_and_never_pushes_twice(
    kube: KubeControlPlane,
    namespace: str,
    podman_env: dict[str, str],
    registry: RegistryServer,
    tmp_path: Path,
) -> None:
    env = {
        **podman_env,
        KUBECONFIG.name: str(kube.kubeconfig_path),
        K8S_NAMESPACE.name: namespace,
        REGISTRY_URL.name: f"{registry.host}/tickrun",
        REGISTRY_USERNAME.name: registry.username,
        REGISTRY_PASSWORD.name: registry.password,
        REGISTRY_TLS_VERIFY.name: "false",  # the test registry is plain http on loopback
    }
    ctl = ControllerProc(tmp_path / "state", env).start()
    try:
        api = ctl.client
        folder = write_function(tmp_path / "src", FN, replicas=2)
        t0 = time.monotonic()
        first = api.deploy(spec_of(folder), folder, platform="kubernetes")
        assert first["warnings"] == []  # a registry is set: nothing to warn about
        fn = api.wait_ready(FN, timeout_s=600)
        deploy_s = time.monotonic() - t0
        build = api.get_build(first["build"]["id"])
        tag = build["content_hash"][:16]
        served = registry.manifest_digest(f"tickrun/{FN}", tag)
        assert served is not None
        pulled = f"{registry.host}/tickrun/{FN}@{served}"

        dep = deployment(kube, namespace, FN)
        [container] = dep.spec.template.spec.containers
        assert container.image == pulled
        assert dep.status.available_replicas == 2
        assert fn["image"] == f"{registry.host}/tickrun/{FN}:{tag}"
        # the nodes pull with the registry's credentials: the namespace's pull Secret
        assert [s.name for s in dep.spec.template.spec.image_pull_secrets] == ["tickrun-registry"]
        with kube.admin_client() as api_:
            pull = k8s.CoreV1Api(api_).read_namespaced_secret("tickrun-registry", namespace)
        assert pull.type == "kubernetes.io/dockerconfigjson"
        auths = json.loads(base64.b64decode(pull.data[".dockerconfigjson"]))["auths"]
        assert base64.b64decode(auths[registry.host]["auth"]).decode() == (
            f"{registry.username}:{registry.password}"
        )
        log = list(api.follow_build(first["build"]["id"]))
        assert f"pushed {registry.host}/tickrun/{FN}:{tag} ({served})" in log
        print(f"\nkubernetes + registry: deploy (build, push) → 2 pods ready {deploy_s:.2f} s")

        # --- the unchanged function again: no build, no push, nothing rolled ------------------
        manifests = registry.requests("PUT", "/manifests/")
        uploads = registry.requests("POST", "/blobs/uploads/")
        generation = dep.metadata.generation
        t0 = time.monotonic()
        again = api.deploy(spec_of(folder), folder)
        fn2 = api.wait_ready(FN, version=again["function"]["version"], timeout_s=300)
        again_s = time.monotonic() - t0
        log2 = list(api.follow_build(again["build"]["id"]))
        assert any(
            line.startswith(f"{registry.host}/tickrun/{FN}:{tag} is already in the registry")
            for line in log2
        ), log2
        assert not any(line.startswith(("podman build", "podman push")) for line in log2)
        assert api.get_build(again["build"]["id"])["cached"] is True
        assert registry.requests("PUT", "/manifests/") == manifests
        assert registry.requests("POST", "/blobs/uploads/") == uploads
        assert fn2["revision"] == fn["revision"]
        dep2 = deployment(kube, namespace, FN)
        assert dep2.metadata.generation == generation
        assert dep2.spec.template.spec.containers[0].image == pulled
        print(f"kubernetes + registry: unchanged redeploy → ready {again_s:.2f} s (no push)")

        # --- the password shows nowhere --------------------------------------------------------
        shown = [
            "\n".join(log + log2),
            json.dumps(api.events(FN)),
            json.dumps(api.get_function(FN)),
            json.dumps(api.list_functions()),
            json.dumps(api.export(FN)),
            json.dumps(api.get_build(first["build"]["id"])),
            ctl.log_path.read_text(errors="replace"),
            json.dumps(k8s.ApiClient().sanitize_for_serialization(dep2)),
        ]
        for text in shown:
            assert registry.password not in text

        api.delete_function(FN)
        wait_for(lambda: not deployment_exists(kube, namespace, FN), 60, "the Deployment is gone")
        # the pull Secret is the namespace's, not the function's: it stays for the others
        with kube.admin_client() as api_:
            assert k8s.CoreV1Api(api_).read_namespaced_secret("tickrun-registry", namespace)
    finally:
        cleanup(ctl)


def deployment_exists(kube: KubeControlPlane, ns: str, name: str) -> bool:
    with kube.admin_client() as api:
        items = k8s.AppsV1Api(api).list_namespaced_deployment(ns).items
    return any(d.metadata.name == name for d in items)
