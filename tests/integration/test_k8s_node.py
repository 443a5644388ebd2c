"""The HTTP data path through real pods: a control plane without kwok and one real node (kubelet,
containerd, runc, CNI bridge: tests/peers/k8snode.py), the tickrun controller deploying to it.

First, a node with a pod on it stops and leaves the host as it was. Then the function's image is
built by the controller's builder (podman) and reaches the node two ways: copied into containerd
(no registry set) or pushed to the registry peer and pulled by digest with the namespace's pull
Secret. Its pod really runs the processor, passes /readyz, answers HTTP on its pod IP and through
the controller's gateway, logs to the kubelet (``tickrun logs``), and is gone after delete.
"""

from __future__ import annotations

import ipaddress
import json
import os
import subprocess
import sys
import textwrap
import time
import urllib.request
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
from kubernetes import client as k8s

from tests.integration.test_controller_harness import (
    TOKEN,
    ControllerProc,
    cleanup,
    spec_of,
    wait_for,
    write_function,
)
from tests.peers import hoststate
from tests.peers.k8s import KubeControlPlane
from tests.peers.k8snode import PAUSE_IMAGE, KubeNode
from tests.peers.registry import RegistryServer
from tickrun.functions.settings import (
    K8S_NAMESPACE,
    KUBECONFIG,
    REGISTRY_PASSWORD,
    REGISTRY_TLS_VERIFY,
    REGISTRY_URL,
    REGISTRY_USERNAME,
)

pytestmark = [pytest.mark.k8s_node, pytest.mark.podman, pytest.mark.registry, pytest.mark.slow]

FN = "nodefn"
SELECT = f"tickrun.io/function={FN}"
# The pod may land on the node only once its image is in containerd (there is no registry to
# pull from): the spec selects this label, which the test puts on the node after loading.
GATE = "tickrun.io/test-image-loaded"
# Direct to the pod: never through a proxy from the environment.
_DIRECT = urllib.request.build_opener(urllib.request.ProxyHandler({}))

NODE_HANDLER = textwrap.dedent("""
    import os


    def init_context(context):
        with open(os.path.join(os.environ["TICKRUN_BUILD_DIR"], "marker.txt")) as f:
            context.user_data.marker = f.read().strip()


    def handler(context, event):
        request_id = {k.lower(): v for k, v in event.headers.items()}.get("x-request-id")
        context.logger.info_with("served on a real node", request=request_id)
        return {
            "pod": os.environ.get("TICKRUN_REPLICA_ID"),
            "marker": context.user_data.marker,
            "flavour": os.environ.get("FLAVOUR"),
            "request": request_id,
            "uid": os.getuid(),
        }
""")


@dataclass
class RealCluster:
    plane: KubeControlPlane
    node: KubeNode
    registry: RegistryServer


@pytest.fixture(scope="module")
def real_cluster(registry: RegistryServer) -> Iterator[RealCluster]:
    """A control plane without kwok and one real node, which may pull from ``registry``."""
    plane = KubeControlPlane(nodes=0, real_nodes=True)
    node = KubeNode(plane, registries=[registry.host])
    try:
        plane.start()
        node.start()
        print(
            f"\nreal node: control plane {plane.startup_seconds:.1f} s, "
            f"node Ready {node.startup_seconds:.1f} s"
        )
        yield RealCluster(plane, node, registry)
    finally:
        node.stop()
        plane.stop()


def new_namespace(cluster: RealCluster) -> str:
    ns = f"tickrun-{uuid.uuid4().hex[:8]}"
    with cluster.plane.admin_client() as api:
        core = k8s.CoreV1Api(api)
        core.create_namespace(k8s.V1Namespace(metadata=k8s.V1ObjectMeta(name=ns)))
        wait_for(lambda: core.list_namespaced_service_account(ns).items, 30, "default SA")
    return ns


def pods(cluster: RealCluster, ns: str) -> list[Any]:
    with cluster.plane.admin_client() as api:
        items: list[Any] = k8s.CoreV1Api(api).list_namespaced_pod(ns, label_selector=SELECT).items
    return items


def get_json(url: str, request_id: str) -> dict[str, object]:
    req = urllib.request.Request(url, headers={"X-Request-Id": request_id})
    with _DIRECT.open(req, timeout=10) as resp:
        assert resp.status == 200
        body: dict[str, object] = json.loads(resp.read())
    return body


def test_the_node_leaves_the_host_as_it_was() -> None:
    """Start a node, run a pod on it (bridge, veth, network namespace, cgroups, mounts, kubelet's
    iptables chains), stop it, and compare with what the host had before. First in the module:
    the other tests' node (module scope) does not exist yet."""
    before = hoststate.capture()
    plane = KubeControlPlane(nodes=0, real_nodes=True)
    node = KubeNode(plane)
    pod: Any = {
        "apiVersion": "v1",
        "kind": "Pod",
        "metadata": {"name": "idle"},
        "spec": {
            # the sandbox image is in containerd already; it idles until killed
            "containers": [{"name": "idle", "image": PAUSE_IMAGE, "imagePullPolicy": "Never"}],
            "automountServiceAccountToken": False,
            "terminationGracePeriodSeconds": 1,
        },
    }
    try:
        plane.start()
        node.start()
        workdir = node.workdir
        assert workdir is not None
        with plane.admin_client() as api:
            core = k8s.CoreV1Api(api)
            core.create_namespaced_pod("default", pod)

            def running() -> Any:
                p: Any = core.read_namespaced_pod("idle", "default")
                return p.status.phase == "Running" and p

        started: Any = wait_for(running, 60, "the pod running")
        assert node.subnet is not None
        assert ipaddress.ip_address(started.status.pod_ip) in node.subnet
        assert len(node.running_tasks()) == 2  # sandbox + container
        during = hoststate.capture()
        our_links = during.links - before.links
        assert any(" trnode" in rule for rule in during.chains["iptables/mangle"])  # the DROP
        assert node.bridge in our_links
        assert any(link.startswith("veth") for link in our_links)  # the pod's, on our bridge
        # kubelet puts the pods under the node's own cgroup root
        assert f"cpu/{workdir.name}" in during.cgroups
        assert list(Path(f"/sys/fs/cgroup/cpu/{workdir.name}/kubepods").glob("*/pod*"))
    finally:
        node.stop()
        plane.stop()
    after = hoststate.capture()
    assert after.sysctls == before.sysctls
    assert after.chains == before.chains
    assert after.paths == before.paths
    assert after.links == before.links
    assert after.cgroups == before.cgroups
    assert not our_links & after.links  # the bridge and the pod's veth are gone
    with open("/proc/self/mounts", encoding="utf-8") as fh:
        assert str(workdir) not in fh.read()
    assert not workdir.exists()


def test_a_function_serves_http_from_a_real_pod(
    real_cluster: RealCluster, podman_env: dict[str, str], tmp_path: Path
) -> None:
    t_start = time.monotonic()
    plane, node = real_cluster.plane, real_cluster.node
    ns = new_namespace(real_cluster)
    with plane.admin_client() as api:
        nodes: list[Any] = k8s.CoreV1Api(api).list_node().items
    [real] = nodes
    assert real.metadata.name == node.name
    assert real.status.node_info.kubelet_version == "v1.37.2"
    assert real.status.node_info.container_runtime_version.startswith("containerd://1.6")
    assert {(a.type, a.address) for a in real.status.addresses} >= {("InternalIP", node.ip)}

    env = {**podman_env, KUBECONFIG.name: str(plane.kubeconfig_path), K8S_NAMESPACE.name: ns}
    state = tmp_path / "state"
    ctl = ControllerProc(state, env).start()
    try:
        api_client = ctl.client
        folder = write_function(
            tmp_path / "src",
            FN,
            extra_spec={
                "nodeSelector": {GATE: "yes"},
                "resources": {"requests": {"cpu": "50m", "memory": "64Mi"}},
                "drainTimeout": "2s",
            },
        )
        (folder / "app.py").write_text(NODE_HANDLER)
        result = api_client.deploy(spec_of(folder), folder, platform="kubernetes")
        # nodeSelector is acted on; the one warning is that no registry is set (the test
        # copies the image into the node's containerd instead)
        [warning] = result["warnings"]
        assert "TICKRUN_REGISTRY" in warning

        # --- the controller's podman build → the node's containerd ----------------------------
        build_id = result["build"]["id"]
        build = wait_for(
            lambda: (b := api_client.get_build(build_id))["state"] != "running" and b,
            240,
            "the build",
        )
        assert build["state"] == "succeeded", build
        image = api_client.get_function(FN)["image"]
        wait_for(lambda: pods(real_cluster, ns), 60, "a pending pod")
        [pending] = pods(real_cluster, ns)
        assert pending.spec.node_name is None  # held back by the gate, not failed
        load_s = node.load_image(image, podman_env)
        with plane.admin_client() as api:
            k8s.CoreV1Api(api).patch_node(node.name, {"metadata": {"labels": {GATE: "yes"}}})

        # --- scheduled on the real node, ready through /readyz --------------------------------
        t0 = time.monotonic()
        fn = api_client.wait_ready(FN, timeout_s=120)
        ready_s = time.monotonic() - t0
        [pod] = pods(real_cluster, ns)
        assert pod.spec.node_name == node.name
        [status] = pod.status.container_statuses
        assert status.ready and status.started and status.restart_count == 0
        assert status.image_id  # containerd ran it: a real image digest, not kwok's blank
        assert node.subnet is not None and ipaddress.ip_address(pod.status.pod_ip) in node.subnet
        assert fn["replicas"]["ready"] == 1
        assert [r["id"] for r in fn["replicas"]["items"]] == [pod.metadata.name]
        [container] = pod.spec.containers
        assert container.readiness_probe.http_get.path == "/readyz"
        assert container.image == image

        # --- HTTP: the pod IP, then the controller's gateway (which routes to that IP) ---------
        direct = get_json(f"http://{pod.status.pod_ip}:8080/", "direct-1")
        assert direct == {
            "pod": pod.metadata.name,
            "marker": "built-by-commands",
            "flavour": "vanilla",
            "request": "direct-1",
            "uid": 65534,
        }
        via = api_client.invoke(FN, headers={"X-Request-Id": "gateway-1"})
        assert via.status == 200, via.body
        assert json.loads(via.body)["pod"] == pod.metadata.name
        assert json.loads(via.body)["request"] == "gateway-1"

        # --- pods/log through the API server and kubelet: `tickrun logs` ---------------------
        cli_env = dict(os.environ, TICKRUN_CONTROLLER_URL=ctl.url, TICKRUN_TOKEN=TOKEN)

        def logged() -> str:
            out = subprocess.run(
                [sys.executable, "-m", "tickrun", "logs", FN],
                env=cli_env,
                capture_output=True,
                text=True,
                timeout=60,
            )
            assert out.returncode == 0, out.stderr
            return out.stdout if "gateway-1" in out.stdout else ""

        logs = wait_for(logged, 30, "the request in the pod's log")
        lines = [line for line in logs.splitlines() if "served on a real node" in line]
        assert any("direct-1" in line for line in lines), logs
        assert all(line.startswith(f"[{pod.metadata.name}] ") for line in logs.splitlines())

        # --- delete: the pod and its containers are gone -------------------------------------
        running_before = node.running_tasks()
        assert len(running_before) == 2  # the sandbox (pause) and the function
        api_client.delete_function(FN)
        wait_for(lambda: not pods(real_cluster, ns), 60, "the pod gone")
        wait_for(lambda: not node.running_tasks(), 60, "its containers stopped")
        print(
            f"real node: build {build['duration_s']} s (cached {build['cached']}), "
            f"image into containerd {load_s:.1f} s, gated pod → function ready "
            f"{ready_s:.1f} s, test body {time.monotonic() - t_start:.1f} s"
        )
    finally:
        cleanup(ctl)


def test_the_node_pulls_a_function_image_by_digest_from_the_registry(
    real_cluster: RealCluster, podman_env: dict[str, str], tmp_path: Path
) -> None:
    """The path a real cluster takes: the controller pushes its build to the registry, the
    Deployment names it by digest with the namespace's pull Secret, containerd pulls it; two
    pods, and the gateway reaches both."""
    node, registry = real_cluster.node, real_cluster.registry
    ns = new_namespace(real_cluster)
    env = {
        **podman_env,
        KUBECONFIG.name: str(real_cluster.plane.kubeconfig_path),
        K8S_NAMESPACE.name: ns,
        REGISTRY_URL.name: f"{registry.host}/node",
        REGISTRY_USERNAME.name: registry.username,
        REGISTRY_PASSWORD.name: registry.password,
        REGISTRY_TLS_VERIFY.name: "false",  # the test registry is plain http on loopback
    }
    ctl = ControllerProc(tmp_path / "state", env).start()
    try:
        api_client = ctl.client
        folder = write_function(
            tmp_path / "src",
            FN,
            replicas=2,
            extra_spec={
                "nodeSelector": {"kubernetes.io/hostname": node.name},
                "drainTimeout": "2s",
            },
        )
        (folder / "app.py").write_text(NODE_HANDLER)
        pulls_before = registry.requests("GET", f"/v2/node/{FN}/manifests/sha256:")
        t0 = time.monotonic()
        result = api_client.deploy(spec_of(folder), folder, platform="kubernetes")
        assert result["warnings"] == []
        fn = api_client.wait_ready(FN, timeout_s=240)
        deploy_s = time.monotonic() - t0
        build = api_client.get_build(result["build"]["id"])
        digest = registry.manifest_digest(f"node/{FN}", build["content_hash"][:16])
        assert digest is not None
        running = pods(real_cluster, ns)
        names = sorted(p.metadata.name for p in running)
        assert len(names) == 2 and fn["replicas"]["ready"] == 2
        for pod in running:
            [status] = pod.status.container_statuses
            assert pod.spec.containers[0].image == f"{registry.host}/node/{FN}@{digest}"
            assert status.ready and status.image_id.endswith(digest)
            direct = get_json(f"http://{pod.status.pod_ip}:8080/", "direct-2")
            assert (direct["pod"], direct["marker"]) == (pod.metadata.name, "built-by-commands")
        # containerd fetched the manifest by digest, with the pull Secret's credentials
        assert registry.requests("GET", f"/v2/node/{FN}/manifests/sha256:") > pulls_before

        # the gateway spreads requests over both pods (least in flight, round-robin ties)
        answered = []
        for i in range(4):
            via = api_client.invoke(FN, headers={"X-Request-Id": f"gateway-2-{i}"})
            assert via.status == 200, via.body
            answered.append(json.loads(via.body)["pod"])
        assert sorted(set(answered)) == names

        api_client.delete_function(FN)
        wait_for(lambda: not pods(real_cluster, ns), 60, "the pods gone")
        wait_for(lambda: not node.running_tasks(), 60, "their containers stopped")
        print(
            f"real node, registry: deploy → 2 pods ready {deploy_s:.1f} s "
            "(build, push, pull, probes)"
        )
    finally:
        cleanup(ctl)
