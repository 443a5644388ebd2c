"""The Kubernetes rows of ``python -m bench.deploy --k8s`` (alone: ``python -m bench.deploy.k8s``).

A real control plane (etcd, kube-apiserver, controller-manager, scheduler; kwok plays the nodes,
so pods turn Ready without running) and a controller process offering the kubernetes platform.
Each figure sits beside a baseline measured in the same run against the same API server:

1. deploy (cached image) → ready on the controller, and → the Deployment available, beside
   creating the same Deployment (tickrun's manifest, renamed) with the kubernetes client and
   waiting for it to be available;
2. scale 1 → 3 through tickrun (a spec-only deploy: the count the autoscaler hands the
   reconciler) → spec.replicas and → 3 available, beside a direct write of the scale
   subresource (``kubectl scale``);
3. with ``--lag-burst N`` (starts Kafka): a burst into a 4-partition topic → spec.replicas
   rising (tickrun's autoscaler reads the group's lag; kwok's pods consume nothing, so only the
   scale-up is measured).

Every wait polls the API server every 20 ms, for tickrun and the baseline alike.

Measured once (``python -m bench.deploy.k8s --rounds 5 --lag-burst 400``, 2 shared cores, min
of 5; medians in brackets): deploy → available 0.34 s (0.40) vs 0.06 s (0.07) direct; → ready
on the controller 0.35 s (0.59); scale 1→3 → spec.replicas 0.06 s (0.19) vs 0.02 s (0.06),
→ 3 available 0.14 s (0.35) vs 0.12 s (0.17); lag burst → spec.replicas > 1 in 1.37 s. The
deploy gap is the controller's own path (upload, content-hash cache check, a reconcile pass,
server-side apply of Deployment and Service, status polled every 0.25 s until ready).
"""

from __future__ import annotations

import json
import statistics
import time
import uuid
from collections.abc import Callable
from pathlib import Path
from typing import Any

from tests.integration.test_controller_harness import ControllerProc, cleanup
from tickrun.controller.client import ControllerClient
from tickrun.functions.settings import K8S_NAMESPACE, KUBECONFIG

POLL_S = 0.02
HANDLER = 'def handler(context, event):\n    return "ok"\n'
Row = Callable[[str, str, str, str, str], None]


def _until(cond: Callable[[], Any], timeout_s: float, what: str) -> float:
    """The monotonic time at which ``cond`` first held."""
    deadline = time.monotonic() + timeout_s
    while not cond():
        if time.monotonic() > deadline:
            raise RuntimeError(f"timed out waiting for {what}")
        time.sleep(POLL_S)
    return time.monotonic()


def _write(root: Path, name: str, spec: dict[str, Any]) -> tuple[dict[str, Any], Path]:
    folder = root / name
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "main.py").write_text(HANDLER)
    doc = {"metadata": {"name": name}, "spec": {"handler": "main:handler", **spec}}
    (folder / "function.yaml").write_text(json.dumps(doc))
    return doc, folder


class Cluster:
    """The bench's view of the API server (admin client)."""

    def __init__(self, api: Any, namespace: str) -> None:
        from kubernetes import client as k8s

        self.apps = k8s.AppsV1Api(api)
        self.ns = namespace

    def raw(self, name: str) -> dict[str, Any] | None:
        from kubernetes.client.exceptions import ApiException

        try:
            resp = self.apps.read_namespaced_deployment(name, self.ns, _preload_content=False)
        except ApiException as exc:
            if exc.status == 404:
                return None
            raise
        out: dict[str, Any] = json.loads(resp.data)  # type: ignore[attr-defined]
        return out

    def counts(self, name: str) -> tuple[int, int]:
        """(spec.replicas, available replicas of the newest spec); (-1, -1) when absent."""
        d = self.raw(name)
        if d is None:
            return -1, -1
        st = d.get("status", {})
        observed = st.get("observedGeneration", 0) >= d["metadata"].get("generation", 0)
        available = int(st.get("availableReplicas") or 0) if observed else 0
        return int(d["spec"].get("replicas") or 0), available

    def until_spec(self, name: str, replicas: int) -> float:
        return _until(lambda: self.counts(name)[0] == replicas, 60, f"{name} spec.replicas")

    def until_available(self, name: str, replicas: int) -> float:
        want = (replicas, replicas)
        return _until(lambda: self.counts(name) == want, 120, f"{name} {replicas} available")

    def baseline_manifest(self, tickrun_name: str, name: str) -> dict[str, Any]:
        """tickrun's Deployment, renamed and relabelled (so no controller adopts it)."""
        d = self.raw(tickrun_name)
        assert d is not None
        labels = {"bench": name}
        tmpl = d["spec"]["template"]
        tmpl["metadata"] = {"labels": labels}
        spec = {**d["spec"], "selector": {"matchLabels": labels}, "template": tmpl}
        spec["replicas"] = 1
        return {
            "apiVersion": "apps/v1",
            "kind": "Deployment",
            "metadata": {"name": name, "namespace": self.ns, "labels": labels},
            "spec": spec,
        }

    def create(self, manifest: dict[str, Any]) -> None:
        self.apps.create_namespaced_deployment(self.ns, manifest)  # type: ignore[arg-type]

    def scale(self, name: str, replicas: int) -> None:
        self.apps.patch_namespaced_deployment_scale(name, self.ns, {"spec": {"replicas": replicas}})

    def delete(self, name: str) -> None:
        self.apps.delete_namespaced_deployment(name, self.ns, propagation_policy="Foreground")
        _until(lambda: self.raw(name) is None, 60, f"{name} deleted")


def _deploy_rounds(
    client: ControllerClient, cluster: Cluster, work: Path, rounds: int
) -> dict[str, list[float]]:
    name = "bench-k8s"
    doc, folder = _write(work, name, {"replicas": 1})
    print("[kubernetes] warming the cache (first deploy builds the image)…", flush=True)
    client.deploy(doc, folder, platform="kubernetes")
    client.wait_ready(name, timeout_s=900)
    out: dict[str, list[float]] = {k: [] for k in ("ready", "available", "base")}
    for i in range(rounds):
        client.delete_function(name)
        _until(lambda: cluster.raw(name) is None, 60, "the function's Deployment gone")
        t0 = time.monotonic()
        client.deploy(doc, folder, platform="kubernetes")
        t_avail = cluster.until_available(name, 1)
        t_ready = _until(
            lambda: client.get_function(name)["state"] == "ready", 120, "ready on the controller"
        )
        out["available"].append(t_avail - t0)
        out["ready"].append(t_ready - t0)
        base = f"bench-base-{i}"
        manifest = cluster.baseline_manifest(name, base)
        t0 = time.monotonic()
        cluster.create(manifest)
        out["base"].append(cluster.until_available(base, 1) - t0)
        cluster.delete(base)
    return out


def _scale_rounds(
    client: ControllerClient, cluster: Cluster, work: Path, rounds: int
) -> dict[str, list[float]]:
    name = "bench-k8s"
    out: dict[str, list[float]] = {k: [] for k in ("spec", "avail", "base_spec", "base_avail")}
    base = "bench-base-scale"
    cluster.create(cluster.baseline_manifest(name, base))
    cluster.until_available(base, 1)
    for _ in range(rounds):
        for replicas in (1, 3):
            doc, _folder = _write(work, name, {"replicas": replicas})
            t0 = time.monotonic()
            client.deploy(doc, None)
            t_spec = cluster.until_spec(name, replicas)
            t_avail = cluster.until_available(name, replicas)
            if replicas == 3:
                out["spec"].append(t_spec - t0)
                out["avail"].append(t_avail - t0)
            t0 = time.monotonic()
            cluster.scale(base, replicas)
            t_spec = cluster.until_spec(base, replicas)
            t_avail = cluster.until_available(base, replicas)
            if replicas == 3:
                out["base_spec"].append(t_spec - t0)
                out["base_avail"].append(t_avail - t0)
    cluster.delete(base)
    client.delete_function(name)
    return out


def _lag_burst(client: ControllerClient, cluster: Cluster, work: Path, burst: int) -> float:
    from tests.peers import KafkaBroker
    from tests.support.kafka_functions import produce
    from tests.support.lag_functions import lag_spec

    broker = KafkaBroker()
    broker.start()
    try:
        brokers = broker.bootstrap_servers
        tag = uuid.uuid4().hex[:6]
        name = topic = group = f"bench-k8s-lag-{tag}"
        broker.create_topic(topic, partitions=4)
        spec = lag_spec(
            brokers, topic, group, sleep_s=0.01, minReplicas=1, maxReplicas=4,
            targetLag=50, lagWindow="5s",
        )  # fmt: skip
        doc, folder = _write(work, name, spec)
        client.deploy(doc, folder, platform="kubernetes")
        client.wait_ready(name, timeout_s=900)
        t0 = time.monotonic()
        produce(brokers, topic, ({"i": i} for i in range(burst)), partition_of=lambda i: i % 4)
        up = _until(lambda: cluster.counts(name)[0] > 1, 60, "spec.replicas rising") - t0
        client.delete_function(name)
        return up
    finally:
        broker.stop()


def k8s_rows(work: Path, row: Row, *, rounds: int = 3, lag_burst: int = 0) -> None:
    """Start a control plane and a controller on it, print the Kubernetes rows, stop both."""
    from kubernetes import client as k8s

    from tests.peers.k8s import KubeControlPlane
    from tests.peers.podman import require_base_image

    env = require_base_image()  # the kubernetes platform runs the container builder's image
    kube = KubeControlPlane()
    kube.start()
    ns = f"bench-{uuid.uuid4().hex[:6]}"
    try:
        api = kube.admin_client()
        k8s.CoreV1Api(api).create_namespace(k8s.V1Namespace(metadata=k8s.V1ObjectMeta(name=ns)))
        _until(
            lambda: k8s.CoreV1Api(api).list_namespaced_service_account(ns).items, 30, "default SA"
        )
        cluster = Cluster(api, ns)
        env = {**env, KUBECONFIG.name: str(kube.kubeconfig_path), K8S_NAMESPACE.name: ns}
        ctl = ControllerProc(work / "k8s-state", env).start()
        print(f"[kubernetes] control plane {kube.server} up in {kube.startup_seconds:.1f} s")
        try:
            d = _deploy_rounds(ctl.client, cluster, work / "k8s-src", rounds)
            s = _scale_rounds(ctl.client, cluster, work / "k8s-src", rounds)
            up = _lag_burst(ctl.client, cluster, work / "k8s-lag", lag_burst) if lag_burst else None
        finally:
            cleanup(ctl)
            api.close()  # type: ignore[no-untyped-call]
    finally:
        kube.stop()
    base = min(d["base"])
    for key, label in (("available", "Deployment available"), ("ready", "ready on controller")):
        t = min(d[key])
        row(
            f"deploy→{label} (kubernetes)",
            f"{t:.2f} s",
            f"{base:.2f} s",
            f"{t / base:.2f}x",
            f"baseline: the same Deployment created directly; {_medians(d[key], d['base'])}",
        )
    for key, label in (("spec", "spec.replicas"), ("avail", "3 available")):
        t, b = min(s[key]), min(s[f"base_{key}"])
        row(
            f"scale 1→3 → {label} (kubernetes)",
            f"{t:.2f} s",
            f"{b:.2f} s",
            f"{t / b:.2f}x",
            f"baseline: a scale subresource write; {_medians(s[key], s[f'base_{key}'])}",
        )
    if up is not None:
        row(
            f"lag burst {lag_burst} → spec.replicas > 1 (k8s)",
            f"{up:.2f} s",
            "-",
            "-",
            "tickrun's autoscaler on the group's lag → scale subresource",
        )


def _medians(tickrun: list[float], baseline: list[float]) -> str:
    return (
        f"medians {statistics.median(tickrun):.2f} / {statistics.median(baseline):.2f} s "
        f"over {len(tickrun)}"
    )


def main() -> int:
    """``python -m bench.deploy.k8s [--rounds N] [--lag-burst N]``: only the Kubernetes rows."""
    import argparse
    import shutil
    import tempfile

    ap = argparse.ArgumentParser(prog="python -m bench.deploy.k8s")
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--lag-burst", type=int, default=0, help="records; 0 skips the row")
    args = ap.parse_args()
    work = Path(tempfile.mkdtemp(prefix="tickrun-bench-k8s-"))
    rows: list[tuple[str, str, str, str, str]] = []
    try:
        k8s_rows(work, lambda *r: rows.append(r), rounds=args.rounds, lag_burst=args.lag_burst)
    finally:
        shutil.rmtree(work, ignore_errors=True)
    print(f"{'':<38} {'tickrun':>10} {'baseline':>12} {'ratio':>7}   goal")
    for r in rows:
        _row(*r)
    return 0


def _row(label: str, tickrun: str, baseline: str, ratio: str, goal: str) -> None:
    print(f"{label:<38} {tickrun:>10} {baseline:>12} {ratio:>7}   {goal}")


if __name__ == "__main__":
    raise SystemExit(main())
