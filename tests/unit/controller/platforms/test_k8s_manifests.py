"""The kubernetes platform's manifests, field by field, from a Nuclio-style function.yaml."""

from __future__ import annotations

import base64
from typing import Any

import pytest

from tickrun.controller.cluster import image_ref
from tickrun.controller.platforms.base import Workload, unacted_fields
from tickrun.controller.platforms.kubernetes import manifests as m
from tickrun.functions.spec import FunctionSpec, parse_spec

NUCLIO_SPEC: dict[str, Any] = {
    "apiVersion": "nuclio.io/v1",
    "kind": "NuclioFunction",
    "metadata": {"name": "scorer", "labels": {"nuclio.io/project-name": "fraud", "tier": 2}},
    "spec": {
        "runtime": "python:3.11",
        "handler": "main:handler",
        "env": [
            {"name": "MODEL", "value": "v3"},
            {"name": "DB_PASSWORD", "valueFrom": {"secretKeyRef": {"name": "db", "key": "pw"}}},
        ],
        "minReplicas": 2,
        "maxReplicas": 6,
        "targetCPU": 70,
        "workers": 3,
        "drainTimeout": "20s",
        "readinessTimeoutSeconds": 30,
        "resources": {
            "requests": {"cpu": "250m", "memory": "128Mi"},
            "limits": {"cpu": "1", "memory": "512Mi", "nvidia.com/gpu": 1},
        },
        "nodeSelector": {"pool": "gpu"},
        "tolerations": [{"key": "gpu", "operator": "Exists", "effect": "NoSchedule"}],
        "priorityClassName": "high",
        "triggers": {"http": {"kind": "http", "maxWorkers": 4}},
    },
}
NS = "tickrun-test"
OWNER = m.owner_reference("scorer", "1234-uid")


def workload(spec: FunctionSpec | None = None, **kw: Any) -> Workload:
    values: dict[str, Any] = {
        "function": "scorer",
        "revision": "a" * 32,
        "replicas": 2,
        "spec": spec or parse_spec(NUCLIO_SPEC),
        "image": "registry.local/tickrun/scorer@sha256:" + "b" * 64,
        "env": {"MODEL": "v3"},
        "secret_env": {"DB_PASSWORD": "s3cret"},
        "controller_id": "ctl-1",
        "ready_timeout_s": 30.0,
    }
    return Workload(**(values | kw))


def test_deployment_metadata_selector_and_rolling_update() -> None:
    dep = m.deployment(workload(), NS)
    assert dep["apiVersion"] == "apps/v1" and dep["kind"] == "Deployment"
    meta = dep["metadata"]
    assert (meta["name"], meta["namespace"]) == ("scorer", NS)
    labels = meta["labels"]
    assert labels["app.kubernetes.io/name"] == "scorer"
    assert labels["app.kubernetes.io/managed-by"] == "tickrun"
    assert labels["tickrun.io/function"] == "scorer"
    assert labels["tickrun.io/controller"] == "ctl-1"
    assert labels["tickrun.io/revision"] == "a" * 32
    assert labels["nuclio.io/project-name"] == "fraud" and labels["tier"] == "2"  # the user's
    assert meta["annotations"] == {"tickrun.io/revision": "a" * 32}
    spec = dep["spec"]
    assert spec["replicas"] == 2
    # The selector is immutable: it must not carry anything a new revision changes.
    assert spec["selector"] == {"matchLabels": {"tickrun.io/function": "scorer"}}
    assert spec["strategy"] == {
        "type": "RollingUpdate",
        "rollingUpdate": {"maxSurge": "25%", "maxUnavailable": 0},
    }
    template = spec["template"]["metadata"]
    assert template["annotations"] == {"tickrun.io/revision": "a" * 32}
    assert set(spec["selector"]["matchLabels"].items()) <= set(template["labels"].items())


def test_a_new_revision_changes_the_pod_template_and_nothing_else_of_identity() -> None:
    old = m.deployment(workload(), NS)
    new = m.deployment(workload(revision="c" * 32), NS)
    assert old["spec"]["template"] != new["spec"]["template"]  # → a new ReplicaSet
    assert old["spec"]["selector"] == new["spec"]["selector"]
    assert old["metadata"]["name"] == new["metadata"]["name"]


def test_pod_spec_security_grace_and_scheduling() -> None:
    pod = m.deployment(workload(), NS)["spec"]["template"]["spec"]
    assert pod["terminationGracePeriodSeconds"] == 20 + m.GRACE_MARGIN_S
    assert pod["automountServiceAccountToken"] is False
    assert pod["securityContext"]["runAsNonRoot"] is True
    assert pod["securityContext"]["runAsUser"] == 65534
    assert pod["nodeSelector"] == {"pool": "gpu"}
    assert pod["tolerations"] == [{"key": "gpu", "operator": "Exists", "effect": "NoSchedule"}]
    assert pod["priorityClassName"] == "high"
    [c] = pod["containers"]
    sc = c["securityContext"]
    assert sc["runAsNonRoot"] is True and sc["runAsUser"] == 65534
    assert sc["allowPrivilegeEscalation"] is False
    assert sc["capabilities"] == {"drop": ["ALL"]}


def test_container_image_command_ports_probes() -> None:
    [c] = m.deployment(workload(), NS)["spec"]["template"]["spec"]["containers"]
    assert c["image"] == "registry.local/tickrun/scorer@sha256:" + "b" * 64
    assert c["ports"] == [{"name": "http", "containerPort": 8080, "protocol": "TCP"}]
    cmd = c["command"]
    # serves the image's function folder on all addresses of the pod, with the spec's workers
    assert cmd[0] == "python" and cmd[-4:] == [m.CODE_DIR, "0.0.0.0", "8080", "3"]
    assert c["readinessProbe"]["httpGet"] == {"path": "/readyz", "port": "http"}
    assert c["livenessProbe"]["httpGet"] == {"path": "/healthz", "port": "http"}
    startup = c["startupProbe"]
    # the readiness timeout passes before liveness may restart a pod still in init_context
    assert startup["periodSeconds"] * startup["failureThreshold"] >= 30


def test_resources_include_the_gpu() -> None:
    [c] = m.deployment(workload(), NS)["spec"]["template"]["spec"]["containers"]
    assert c["resources"] == {
        "requests": {"cpu": "250m", "memory": "128Mi", "nvidia.com/gpu": "1"},
        "limits": {"cpu": "1", "memory": "512Mi", "nvidia.com/gpu": "1"},
    }
    bare = parse_spec({"metadata": {"name": "scorer"}})
    [c] = m.deployment(workload(bare), NS)["spec"]["template"]["spec"]["containers"]
    assert "resources" not in c


def test_env_plain_secret_refs_and_runtime_variables() -> None:
    [c] = m.deployment(workload(), NS)["spec"]["template"]["spec"]["containers"]
    env = {e["name"]: e for e in c["env"]}
    assert env["MODEL"] == {"name": "MODEL", "value": "v3"}
    assert env["DB_PASSWORD"] == {
        "name": "DB_PASSWORD",
        "valueFrom": {"secretKeyRef": {"name": "scorer-secrets", "key": "DB_PASSWORD"}},
    }
    assert env["PORT"]["value"] == "8080"
    assert env["TICKRUN_FUNCTION"]["value"] == "scorer"
    assert env["TICKRUN_CONTROLLER_ID"]["value"] == "ctl-1"
    assert env["TICKRUN_REPLICA_ID"]["valueFrom"] == {"fieldRef": {"fieldPath": "metadata.name"}}
    # the secret's value is never in the Deployment
    assert "s3cret" not in repr(m.deployment(workload(), NS))


def test_runtime_variables_win_over_the_spec() -> None:
    [c] = m.deployment(workload(env={"PORT": "1"}), NS)["spec"]["template"]["spec"]["containers"]
    assert [e["value"] for e in c["env"] if e["name"] == "PORT"] == ["8080"]


def test_secret_holds_the_resolved_values_and_is_owned() -> None:
    secret = m.secret(workload(), NS, OWNER)
    assert secret is not None
    assert secret["kind"] == "Secret" and secret["type"] == "Opaque"
    assert secret["metadata"]["name"] == "scorer-secrets"
    assert base64.b64decode(secret["data"]["DB_PASSWORD"]) == b"s3cret"
    assert secret["metadata"]["ownerReferences"] == [OWNER]
    assert m.secret(workload(secret_env={}), NS, OWNER) is None


def test_service_selects_the_pods_and_is_owned() -> None:
    svc = m.service(workload(), NS, OWNER)
    assert svc["kind"] == "Service"
    assert svc["spec"]["selector"] == {"tickrun.io/function": "scorer"}
    assert svc["spec"]["type"] == "ClusterIP"
    assert svc["spec"]["ports"] == [
        {"name": "http", "port": 80, "targetPort": "http", "protocol": "TCP"}
    ]
    assert svc["metadata"]["ownerReferences"] == [OWNER]
    assert OWNER == {
        "apiVersion": "apps/v1",
        "kind": "Deployment",
        "name": "scorer",
        "uid": "1234-uid",
        "controller": True,
        "blockOwnerDeletion": True,
    }


def test_hpa_for_target_cpu_and_the_deployment_leaves_it_the_count() -> None:
    w = workload()
    hpa = m.hpa(w, NS, OWNER)
    assert hpa is not None
    assert hpa["apiVersion"] == "autoscaling/v2"
    spec = hpa["spec"]
    assert spec["scaleTargetRef"] == {
        "apiVersion": "apps/v1",
        "kind": "Deployment",
        "name": "scorer",
    }
    assert (spec["minReplicas"], spec["maxReplicas"]) == (2, 6)
    [metric] = spec["metrics"]
    assert metric["resource"] == {
        "name": "cpu",
        "target": {"type": "Utilization", "averageUtilization": 70},
    }
    assert hpa["metadata"]["ownerReferences"] == [OWNER]
    assert "replicas" not in m.deployment(w, NS, autoscaled=True)["spec"]


def test_no_hpa_without_target_cpu() -> None:
    data = {
        **NUCLIO_SPEC,
        "spec": {k: v for k, v in NUCLIO_SPEC["spec"].items() if k != "targetCPU"},
    }
    w = workload(parse_spec(data))
    assert not m.wants_hpa(w)
    assert m.hpa(w, NS, OWNER) is None


@pytest.mark.parametrize(
    ("function", "name"), [("scorer", "scorer"), ("7up", "fn-7up"), ("9" * 63, "fn-" + "9" * 60)]
)
def test_object_names_are_valid_service_names(function: str, name: str) -> None:
    assert m.object_name(function) == name
    assert len(m.secret_name(function)) <= 63


def test_image_by_digest_when_the_builder_recorded_one() -> None:
    tag = "localhost/tickrun/scorer:abc123"
    assert image_ref({"image": tag}) == tag
    digest = "sha256:" + "d" * 64
    assert image_ref({"image": tag, "image_digest": digest}) == f"localhost/tickrun/scorer@{digest}"
    full = f"reg:5000/tickrun/scorer@{digest}"
    assert image_ref({"image": tag, "image_digest": full}) == full


def test_warnings_name_the_fields_a_platform_does_not_act_on() -> None:
    spec = parse_spec(NUCLIO_SPEC)
    on_process = unacted_fields(spec, set(), "process")
    assert any("nvidia.com/gpu" in w and "process" in w for w in on_process)
    assert any("targetCPU" in w for w in on_process)
    acted = {"nvidia.com/gpu", "nodeSelector", "tolerations", "priorityClassName", "targetCPU"}
    assert unacted_fields(spec, acted, "kubernetes") == []
    # no metrics API on the cluster: the HPA exists but cannot act on targetCPU
    no_metrics = unacted_fields(spec, acted - {"targetCPU"}, "kubernetes")
    assert no_metrics == [
        "spec field targetCPU is accepted but not acted on by the kubernetes platform"
    ]
    assert unacted_fields(parse_spec({"metadata": {"name": "x"}}), set(), "process") == []
