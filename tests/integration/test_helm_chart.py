"""The Helm chart deploy/helm/tickrun rendered and checked against the real API server: helm
lint, helm template in each value set, every rendered object through a server-side dry-run create
with strict field validation (the pinned Kubernetes version judges the fields), and the
environment the controller would read, parsed by the settings registry.
(tests/integration/test_helm_install.py installs it.)
"""

from __future__ import annotations

import base64
import copy
import subprocess
import tomllib
from typing import Any

import pytest
import yaml
from kubernetes import client
from kubernetes.dynamic import DynamicClient
from kubernetes.dynamic.exceptions import DynamicApiError

from tests.integration.helmchart import CHART, PG_URL, ROOT, VARIANTS, Helm, helm, namespace
from tests.peers.k8s import KubeControlPlane, helm_binary
from tickrun.controller.settings import IN_CLUSTER_ENV, Settings
from tickrun.functions import settings

pytestmark = [pytest.mark.k8s, pytest.mark.timeout(300)]


__all__ = ["helm", "namespace"]  # the fixtures, re-exported so pytest finds them here


def _by_kind(objs: list[dict[str, Any]], kind: str) -> list[dict[str, Any]]:
    return [o for o in objs if o["kind"] == kind]


def _one(objs: list[dict[str, Any]], kind: str) -> dict[str, Any]:
    found = _by_kind(objs, kind)
    assert len(found) == 1, f"{len(found)} {kind} objects rendered"
    return found[0]


def _container(objs: list[dict[str, Any]]) -> dict[str, Any]:
    containers = _one(objs, "Deployment")["spec"]["template"]["spec"]["containers"]
    assert len(containers) == 1
    return dict(containers[0])


def _env(objs: list[dict[str, Any]]) -> dict[str, dict[str, Any]]:
    return {e["name"]: e for e in _container(objs)["env"]}


# --- rendering --------------------------------------------------------------------------------


def test_app_version_is_tickruns_version() -> None:
    chart = yaml.safe_load((CHART / "Chart.yaml").read_text())
    project = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
    assert chart["appVersion"] == project["version"]


@pytest.mark.parametrize("variant", sorted(VARIANTS))
def test_helm_lint_strict_passes(helm: Helm, variant: str) -> None:
    done = helm("lint", "--strict", str(CHART), *VARIANTS[variant])
    assert "0 chart(s) failed" in done.stdout


def test_make_helm_check_script_passes(helm: Helm) -> None:
    done = subprocess.run(
        ["bash", str(CHART.parent / "check.sh")],
        env={**helm.env, "HELM": str(helm_binary())},
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert done.returncode == 0, done.stderr
    assert done.stdout.count("ok: ") == 4


def test_store_variants_render_pvc_or_secret(helm: Helm) -> None:
    sqlite = helm.render("tickrun", VARIANTS["sqlite"])
    pvc = _one(sqlite, "PersistentVolumeClaim")
    volumes = {
        v["name"]: v for v in _one(sqlite, "Deployment")["spec"]["template"]["spec"]["volumes"]
    }
    assert volumes["state"]["persistentVolumeClaim"]["claimName"] == pvc["metadata"]["name"]
    assert "TICKRUN_DB_URL" not in _env(sqlite)

    pg = helm.render("tickrun", VARIANTS["postgres"])
    assert not _by_kind(pg, "PersistentVolumeClaim")
    pg_volumes = {
        v["name"]: v for v in _one(pg, "Deployment")["spec"]["template"]["spec"]["volumes"]
    }
    assert pg_volumes["state"] == {"name": "state", "emptyDir": {}}
    ref = _env(pg)["TICKRUN_DB_URL"]["valueFrom"]["secretKeyRef"]
    secrets = {s["metadata"]["name"]: s for s in _by_kind(pg, "Secret")}
    assert base64.b64decode(secrets[ref["name"]]["data"][ref["key"]]).decode() == PG_URL
    # The URL holds a password: it is never a plain env value.
    assert PG_URL not in yaml.safe_dump(_one(pg, "Deployment"))

    ext = helm.render("tickrun", VARIANTS["external"])
    env = _env(ext)
    assert env["TICKRUN_DB_URL"]["valueFrom"]["secretKeyRef"] == {"name": "my-db", "key": "url"}
    assert env["TICKRUN_TOKEN"]["valueFrom"]["secretKeyRef"] == {"name": "my-tok", "key": "token"}
    assert env["TICKRUN_S3_ACCESS_KEY"]["valueFrom"]["secretKeyRef"]["name"] == "my-s3"
    assert env["TICKRUN_K8S_AUTOSCALER"]["value"] == "keda"
    assert not _by_kind(ext, "Secret"), "no Secret of the chart's when the user names their own"
    rules = _one(ext, "Role")["rules"]
    assert any("keda.sh" in r["apiGroups"] for r in rules)
    # KEDA's verbs only where it scales; the host platforms are off in the cluster
    plain = helm.render("tickrun", [])
    assert not any("keda.sh" in r["apiGroups"] for r in _one(plain, "Role")["rules"])
    assert _env(plain)["TICKRUN_K8S_AUTOSCALER"]["value"] == "tickrun"
    assert _env(plain)["TICKRUN_PLATFORMS"]["value"] == "kubernetes"
    assert "KAFKA_BOOTSTRAP_SERVERS" not in _env(plain)


def test_hardening_and_least_privilege_render(helm: Helm) -> None:
    objs = helm.render("tickrun", [])
    deployment = _one(objs, "Deployment")
    assert deployment["spec"]["replicas"] == 1
    pod = deployment["spec"]["template"]["spec"]
    assert pod["securityContext"]["runAsNonRoot"] is True
    c = _container(objs)
    assert c["securityContext"]["readOnlyRootFilesystem"] is True
    assert c["securityContext"]["capabilities"]["drop"] == ["ALL"]
    assert c["securityContext"]["allowPrivilegeEscalation"] is False
    mounts = {m["mountPath"]: m["name"] for m in c["volumeMounts"]}
    assert {v["name"]: v for v in pod["volumes"]}[mounts["/tmp"]]["emptyDir"] == {}
    for probe in ("startupProbe", "livenessProbe", "readinessProbe"):
        assert c[probe]["httpGet"]["path"] == "/healthz"
    assert c["resources"]["requests"] and c["resources"]["limits"]
    assert not _by_kind(objs, "ClusterRole") and not _by_kind(objs, "ClusterRoleBinding")
    role = _one(objs, "Role")
    granted = {
        (g, r) for rule in role["rules"] for g in rule["apiGroups"] for r in rule["resources"]
    }
    assert ("apps", "deployments/scale") in granted and ("", "pods/log") in granted
    assert not any("*" in rule["verbs"] or "*" in rule["resources"] for rule in role["rules"])
    # Reads only: the controller never creates or edits pods, ReplicaSets or events.
    for group, resource in (("", "pods"), ("apps", "replicasets"), ("", "events")):
        verbs = {
            v for rule in role["rules"] if resource in rule["resources"] for v in rule["verbs"]
        }
        assert not verbs & {"create", "update", "patch"}, (group, resource, verbs)


@pytest.mark.parametrize("variant", sorted(VARIANTS))
def test_controller_reads_the_rendered_environment(helm: Helm, variant: str) -> None:
    """The pod's env, as the kubelet would resolve it, parsed by the settings registry and the
    controller's own Settings: every TICKRUN_* name exists and every value is valid."""
    objs = helm.render("fn-space", VARIANTS[variant])
    chart_secrets = {
        s["metadata"]["name"]: {k: base64.b64decode(v).decode() for k, v in s["data"].items()}
        for s in _by_kind(objs, "Secret")
    }
    env: dict[str, str] = {IN_CLUSTER_ENV: "10.96.0.1"}
    for name, item in _env(objs).items():
        if name.startswith("TICKRUN_"):
            assert name in settings.REGISTRY, f"{name} is not a registered setting"
        source = item.get("valueFrom", {})
        if "fieldRef" in source:
            assert source["fieldRef"]["fieldPath"] == "metadata.namespace"
            env[name] = "fn-space"
        elif "secretKeyRef" in source:
            ref = source["secretKeyRef"]
            env[name] = chart_secrets.get(ref["name"], {}).get(ref["key"], f"from-{ref['name']}")
        else:
            env[name] = item["value"]
    controller = Settings.from_env(env)
    assert controller.k8s_namespace == "fn-space"
    assert controller.default_platform == "kubernetes"
    assert controller.k8s_in_cluster and controller.kubeconfig is None
    assert controller.token and len(controller.token) >= 32 or variant == "external"
    mounts = {m["mountPath"] for m in _container(objs)["volumeMounts"]}
    assert str(controller.state_dir).startswith(tuple(mounts)), "state dir on a mounted volume"
    assert str(controller.cache_dir) in mounts
    assert controller.db_url == (PG_URL if variant == "postgres" else env.get("TICKRUN_DB_URL"))
    if variant == "external":
        assert settings.S3_SECURE.get(env) is False
        assert str(settings.ARTIFACT_PATH.get(env)) == "s3://art/runs"


# --- the real API server ----------------------------------------------------------------------


def _dry_run_create(dyn: DynamicClient, obj: dict[str, Any], namespace: str) -> None:
    resource = dyn.resources.get(api_version=obj["apiVersion"], kind=obj["kind"])
    dyn.create(  # type: ignore[no-untyped-call]
        resource,
        body=obj,
        namespace=namespace if resource.namespaced else None,
        dry_run="All",
        query_params=[("fieldValidation", "Strict")],
    )


@pytest.mark.parametrize("variant", sorted(VARIANTS))
def test_every_rendered_object_passes_a_server_side_dry_run(
    kube: KubeControlPlane, helm: Helm, namespace: str, variant: str
) -> None:
    objs = helm.render(namespace, VARIANTS[variant])
    kinds = {o["kind"] for o in objs}
    assert {"Deployment", "Service", "ServiceAccount", "Role", "RoleBinding"} <= kinds
    with kube.admin_client() as api:
        dyn = DynamicClient(api)  # type: ignore[no-untyped-call]
        for obj in objs:
            assert obj["metadata"]["namespace"] == namespace
            try:
                _dry_run_create(dyn, obj, namespace)
            except DynamicApiError as exc:
                raise AssertionError(f"{obj['kind']} {obj['metadata']['name']}: {exc}") from exc
        # The check can fail: a field the pinned version does not know is refused.
        bad = copy.deepcopy(_one(objs, "Deployment"))
        bad["spec"]["template"]["spec"]["containers"][0]["readinessProbes"] = {}
        with pytest.raises(DynamicApiError, match="readinessProbes"):
            _dry_run_create(dyn, bad, namespace)
        # A dry run stores nothing.
        assert not client.AppsV1Api(api).list_namespaced_deployment(namespace).items
