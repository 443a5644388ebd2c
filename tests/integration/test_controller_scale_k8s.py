"""``PUT /api/functions/{name}/scale`` on the kubernetes platform (a real control plane with kwok
nodes): the Deployment's count moves, its pod template, the version and the revision do not, and
no build runs."""

from __future__ import annotations

from pathlib import Path

import pytest

from tests.integration.test_controller_harness import (
    ControllerProc,
    cleanup,
    spec_of,
    wait_for,
    write_function,
)
from tests.integration.test_controller_scale_platforms import _builds
from tests.peers.k8s import KubeControlPlane
from tests.support.k8s_controller import deployment, kube_namespace
from tickrun.functions.settings import K8S_NAMESPACE, KUBECONFIG

pytestmark = [pytest.mark.slow]


@pytest.mark.k8s
@pytest.mark.podman
def test_scale_on_the_kubernetes_platform(
    kube: KubeControlPlane, podman_env: dict[str, str], tmp_path: Path
) -> None:
    name = "kscale"
    with kube_namespace(kube, "tickrun") as namespace:
        env = {
            **podman_env,
            KUBECONFIG.name: str(kube.kubeconfig_path),
            K8S_NAMESPACE.name: namespace,
        }
        folder = write_function(tmp_path / "src", name)
        ctl = ControllerProc(tmp_path / "state", env).start()
        try:
            client = ctl.client
            client.deploy(spec_of(folder), folder, platform="kubernetes")
            fn = client.wait_ready(name, timeout_s=900)
            template = deployment(kube, namespace, name).spec.template.metadata.annotations
            builds = _builds(ctl, name)
            client.scale(name, replicas=3)
            wait_for(lambda: deployment(kube, namespace, name).spec.replicas == 3, 60, "3")
            wait_for(lambda: client.get_function(name)["replicas"]["ready"] == 3, 120, "3 ready")
            dep = deployment(kube, namespace, name)
            # Only the count moved: the pod template (revision annotation) is the same.
            assert dep.spec.template.metadata.annotations == template
            after = client.get_function(name)
            assert (after["version"], after["revision"]) == (fn["version"], fn["revision"])
            assert _builds(ctl, name) == builds
            kinds = [e["kind"] for e in client.events(name)]
            assert "scale" in kinds and "scaled" in kinds  # the API's and the cluster's
            client.scale(name, replicas=0)
            wait_for(lambda: deployment(kube, namespace, name).spec.replicas == 0, 60, "0")
        finally:
            cleanup(ctl)
