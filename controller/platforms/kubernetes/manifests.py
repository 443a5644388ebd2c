"""A function's Kubernetes objects, as plain manifests (pure: no client, no I/O).

One Deployment (the pods), a Service in front of them, a Secret with the resolved values of the
spec's ``secretKeyRef`` entries, and an HPA when the spec asks for CPU-based scaling. The
Deployment owns the others (owner references), so deleting it takes them along; every object
carries the ``tickrun.io/function`` and ``tickrun.io/controller`` labels a restarted controller
finds them by.
"""

from __future__ import annotations

import base64
import math
from typing import Any

from tickrun.functions.replica import replica_command
from tickrun.functions.settings import CONTROLLER_ID, FUNCTION, REPLICA_ID
from tickrun.functions.spec import FunctionSpec

from ..base import Workload

LABEL_FUNCTION = "tickrun.io/function"
LABEL_CONTROLLER = "tickrun.io/controller"
LABEL_REVISION = "tickrun.io/revision"
MANAGED_BY = "tickrun"
CONTAINER = "function"
PORT = 8080  # every pod has its own IP: one port for all functions
SERVICE_PORT = 80
REPLICA_USER = 65534  # nobody, as on the container platform
CODE_DIR = "/opt/tickrun/function"  # where the image puts the function (builder/image.py)
# The processor drains for the spec's drainTimeout after SIGTERM, then exits: the kubelet's
# SIGKILL must come later than that.
GRACE_MARGIN_S = 5
READY_PERIOD_S = 2
LIVE_PERIOD_S = 10
# The namespace's one image pull Secret (the registry's credentials), shared by the functions.
PULL_SECRET = "tickrun-registry"  # noqa: S105 - a Secret's name, not a password
# A new revision comes up beside the old one, which serves until it is ready (as the replica
# platforms roll).
ROLLING = {"type": "RollingUpdate", "rollingUpdate": {"maxSurge": "25%", "maxUnavailable": 0}}


def object_name(function: str) -> str:
    """The Deployment's, Service's and HPA's name. A Service name must start with a letter; a
    function name may start with a digit."""
    return function if function[0].isalpha() else f"fn-{function}"[:63].rstrip("-")


def secret_name(function: str) -> str:
    return f"{object_name(function)[:55].rstrip('-')}-secrets"


def selector(function: str) -> dict[str, str]:
    return {LABEL_FUNCTION: function}


def labels(w: Workload) -> dict[str, str]:
    """Every object's labels: the user's, the recommended ``app.kubernetes.io/*``, tickrun's."""
    return {
        **w.spec.metadata.labels,
        **w.labels,
        "app.kubernetes.io/name": w.function,
        "app.kubernetes.io/instance": w.function,
        "app.kubernetes.io/component": "function",
        "app.kubernetes.io/managed-by": MANAGED_BY,
        "app.kubernetes.io/version": w.revision[:63],
        LABEL_FUNCTION: w.function,
        LABEL_CONTROLLER: w.controller_id,
        LABEL_REVISION: w.revision[:63],
    }


def _metadata(w: Workload, name: str, namespace: str) -> dict[str, Any]:
    return {"name": name, "namespace": namespace, "labels": labels(w)}


def owner_reference(deployment_name: str, uid: str) -> dict[str, Any]:
    return {
        "apiVersion": "apps/v1",
        "kind": "Deployment",
        "name": deployment_name,
        "uid": uid,
        "controller": True,
        "blockOwnerDeletion": True,
    }


def resources(w: Workload) -> dict[str, dict[str, str]]:
    return spec_resources(w.spec)


def spec_resources(spec: FunctionSpec) -> dict[str, dict[str, str]]:
    """requests/limits from the spec (a function's pods, a job's). A GPU is an extended
    resource: Kubernetes wants it in the limits (requests, if given, must equal them)."""
    out: dict[str, dict[str, str]] = {}
    for kind in ("requests", "limits"):
        amounts = getattr(spec.spec.resources, kind)
        part = {k: v for k, v in (("cpu", amounts.cpu), ("memory", amounts.memory)) if v}
        if part:
            out[kind] = part
    res = spec.spec.resources
    gpu = res.limits.gpu or res.requests.gpu
    if gpu:
        out.setdefault("limits", {})["nvidia.com/gpu"] = gpu
        if "requests" in out:
            out["requests"]["nvidia.com/gpu"] = gpu
    return out


def env(w: Workload) -> list[dict[str, Any]]:
    """The spec's plain env, its secrets by reference to the function's Secret (values never in
    the Deployment), then the runtime's own variables (which win, as on the other platforms)."""
    out: list[dict[str, Any]] = [{"name": k, "value": v} for k, v in w.env.items()]
    secret = secret_name(w.function)
    out += [
        {"name": k, "valueFrom": {"secretKeyRef": {"name": secret, "key": k}}}
        for k in sorted(w.secret_env)
    ]
    runtime: list[dict[str, Any]] = [
        {"name": "HOME", "value": "/tmp"},
        {"name": "PORT", "value": str(PORT)},
        {"name": FUNCTION.name, "value": w.function},
        {"name": CONTROLLER_ID.name, "value": w.controller_id},
        # The pod's name is its replica id, as `tickrun get` shows it.
        {"name": REPLICA_ID.name, "valueFrom": {"fieldRef": {"fieldPath": "metadata.name"}}},
    ]
    own = {e["name"] for e in runtime}
    return [e for e in out if e["name"] not in own] + runtime


def _probe(path: str, period_s: int, failures: int) -> dict[str, Any]:
    return {
        "httpGet": {"path": path, "port": "http"},
        "periodSeconds": period_s,
        "timeoutSeconds": 1,
        "failureThreshold": failures,
    }


def pod_security_context() -> dict[str, Any]:
    """Every pod tickrun makes (a function's replicas, a run's Job): non-root as the replica
    user, under the runtime's default seccomp profile."""
    return {
        "runAsNonRoot": True,
        "runAsUser": REPLICA_USER,
        "runAsGroup": REPLICA_USER,
        "seccompProfile": {"type": "RuntimeDefault"},
    }


def container(w: Workload) -> dict[str, Any]:
    s = w.spec.spec
    out: dict[str, Any] = {
        "name": CONTAINER,
        "image": w.image,
        "imagePullPolicy": "IfNotPresent",
        "command": replica_command(CODE_DIR, PORT, s.workers, host="0.0.0.0", python="python"),
        "ports": [{"name": "http", "containerPort": PORT, "protocol": "TCP"}],
        "env": env(w),
        "readinessProbe": _probe("/readyz", READY_PERIOD_S, 1),
        "livenessProbe": _probe("/healthz", LIVE_PERIOD_S, 3),
        # Until init_context ran nothing answers: give it the readiness timeout before the
        # liveness probe may restart the pod.
        "startupProbe": _probe(
            "/healthz", READY_PERIOD_S, max(1, math.ceil(w.ready_timeout_s / READY_PERIOD_S))
        ),
        "securityContext": {
            "runAsNonRoot": True,
            "runAsUser": REPLICA_USER,
            "runAsGroup": REPLICA_USER,
            "allowPrivilegeEscalation": False,
            "capabilities": {"drop": ["ALL"]},
        },
    }
    res = resources(w)
    if res:
        out["resources"] = res
    return out


def deployment(
    w: Workload, namespace: str, *, autoscaled: bool = False, pull_secret: str | None = None
) -> dict[str, Any]:
    """``autoscaled``: an HPA owns the replica count, so the Deployment does not state one
    (applying it would fight the HPA). ``pull_secret``: the Secret the kubelet pulls with."""
    s = w.spec.spec
    meta = _metadata(w, object_name(w.function), namespace)
    meta["annotations"] = {LABEL_REVISION: w.revision}
    pod_labels = {k: v for k, v in labels(w).items() if k != LABEL_REVISION}
    pod_spec: dict[str, Any] = {
        "containers": [container(w)],
        "terminationGracePeriodSeconds": math.ceil(s.drain_timeout_s) + GRACE_MARGIN_S,
        # Functions do not talk to the Kubernetes API.
        "automountServiceAccountToken": False,
        "enableServiceLinks": False,
        "securityContext": pod_security_context(),
    }
    if pull_secret:
        pod_spec["imagePullSecrets"] = [{"name": pull_secret}]
    if s.node_selector:
        pod_spec["nodeSelector"] = dict(s.node_selector)
    if s.tolerations:
        pod_spec["tolerations"] = list(s.tolerations)
    if s.priority_class_name:
        pod_spec["priorityClassName"] = s.priority_class_name
    spec: dict[str, Any] = {
        "selector": {"matchLabels": selector(w.function)},
        "strategy": ROLLING,
        "revisionHistoryLimit": 3,
        "template": {
            # The revision annotation changes the pod template: a new revision is a new
            # ReplicaSet, rolled out by the Deployment controller.
            "metadata": {"labels": pod_labels, "annotations": {LABEL_REVISION: w.revision}},
            "spec": pod_spec,
        },
    }
    if not autoscaled:
        spec["replicas"] = w.replicas
    return {"apiVersion": "apps/v1", "kind": "Deployment", "metadata": meta, "spec": spec}


def service(w: Workload, namespace: str, owner: dict[str, Any]) -> dict[str, Any]:
    meta = _metadata(w, object_name(w.function), namespace)
    meta["ownerReferences"] = [owner]
    svc_type = w.spec.spec.service_type or "ClusterIP"
    return {
        "apiVersion": "v1",
        "kind": "Service",
        "metadata": meta,
        "spec": {
            "type": svc_type,
            "selector": selector(w.function),
            "ports": [
                {"name": "http", "port": SERVICE_PORT, "targetPort": "http", "protocol": "TCP"}
            ],
        },
    }


def secret(w: Workload, namespace: str, owner: dict[str, Any]) -> dict[str, Any] | None:
    """The resolved secret values the pods' env refers to; None when the spec has none."""
    if not w.secret_env:
        return None
    meta = _metadata(w, secret_name(w.function), namespace)
    meta["ownerReferences"] = [owner]
    data = {k: base64.b64encode(v.encode()).decode() for k, v in sorted(w.secret_env.items())}
    return {"apiVersion": "v1", "kind": "Secret", "metadata": meta, "type": "Opaque", "data": data}


def pull_secret(namespace: str, docker_config_json: str) -> dict[str, Any]:
    """The registry's credentials as a ``kubernetes.io/dockerconfigjson`` Secret. Not owned by
    one function's Deployment (every function of the namespace pulls with it)."""
    return {
        "apiVersion": "v1",
        "kind": "Secret",
        "metadata": {
            "name": PULL_SECRET,
            "namespace": namespace,
            "labels": {"app.kubernetes.io/managed-by": MANAGED_BY},
        },
        "type": "kubernetes.io/dockerconfigjson",
        "data": {".dockerconfigjson": base64.b64encode(docker_config_json.encode()).decode()},
    }


def wants_hpa(w: Workload) -> bool:
    return w.spec.spec.target_cpu_percent is not None


def hpa(w: Workload, namespace: str, owner: dict[str, Any]) -> dict[str, Any] | None:
    """A CPU HorizontalPodAutoscaler when the spec sets targetCPU; else None (tickrun's own
    autoscaler drives the Deployment's scale subresource)."""
    s = w.spec.spec
    if s.target_cpu_percent is None:
        return None
    lo, hi = s.replica_bounds()
    meta = _metadata(w, object_name(w.function), namespace)
    meta["ownerReferences"] = [owner]
    return {
        "apiVersion": "autoscaling/v2",
        "kind": "HorizontalPodAutoscaler",
        "metadata": meta,
        "spec": {
            "scaleTargetRef": {
                "apiVersion": "apps/v1",
                "kind": "Deployment",
                "name": object_name(w.function),
            },
            "minReplicas": max(int(lo), 1),  # an HPA cannot scale to zero
            "maxReplicas": max(int(hi), int(lo), 1),
            "metrics": [
                {
                    "type": "Resource",
                    "resource": {
                        "name": "cpu",
                        "target": {
                            "type": "Utilization",
                            "averageUtilization": s.target_cpu_percent,
                        },
                    },
                }
            ],
        },
    }
