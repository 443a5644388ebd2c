"""The Helm chart deploy/helm/tickrun against the real control plane: helm lint, helm template
in each store variant, every rendered object through a server-side dry-run create with strict
field validation (the pinned Kubernetes version judges the fields), the environment the
controller would read, and a real `helm install --wait` / `helm uninstall`, with the chart's
ServiceAccount token allowed in its namespace and refused outside it.
"""

from __future__ import annotations

import asyncio
import base64
import copy
import os
import subprocess
import time
import tomllib
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any, TypeVar

import pytest
import yaml
from kubernetes import client
from kubernetes.client.exceptions import ApiException
from kubernetes.dynamic import DynamicClient
from kubernetes.dynamic.exceptions import DynamicApiError

from tests.peers.k8s import KubeControlPlane, api_client, helm_binary
from tickrun.controller.platforms.base import Workload
from tickrun.controller.platforms.kubernetes.platform import KubernetesPlatform
from tickrun.controller.settings import IN_CLUSTER_ENV, Settings
from tickrun.functions import settings
from tickrun.functions.errors import PlatformError
from tickrun.functions.spec import parse_spec

pytestmark = [pytest.mark.k8s, pytest.mark.timeout(300)]

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
        *("--set", "kafka.brokers={k1:9092,k2:9092}", "--set", "rbac.keda=true"),
    ],
}
T = TypeVar("T")


def _eventually(probe: Callable[[], T | None], what: str, timeout: float = 60.0) -> T:
    deadline = time.monotonic() + timeout
    while True:
        got = probe()
        if got is not None:
            return got
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout:.0f}s waiting for {what}")
        time.sleep(0.25)


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
    return Helm(tmp_path_factory.mktemp("helm"), kube.kubeconfig_path)


def _new_namespace(core: client.CoreV1Api, prefix: str) -> str:
    name = f"{prefix}-{uuid.uuid4().hex[:8]}"
    core.create_namespace(client.V1Namespace(metadata=client.V1ObjectMeta(name=name)))
    return name


@pytest.fixture
def namespace(kube: KubeControlPlane) -> Iterator[str]:
    with kube.admin_client() as api:
        core = client.CoreV1Api(api)
        name = _new_namespace(core, "chart")
        yield name
        core.delete_namespace(name)


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
    assert env["KAFKA_BOOTSTRAP_SERVERS"]["value"] == "k1:9092,k2:9092"
    assert not _by_kind(ext, "Secret"), "no Secret of the chart's when the user names their own"
    rules = _one(ext, "Role")["rules"]
    assert any("keda.sh" in r["apiGroups"] for r in rules)


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


def _raw(obj: object) -> Any:
    """A client model as the API's JSON (camelCase keys, no Optional attributes to unwrap)."""
    return client.ApiClient().sanitize_for_serialization(obj)  # type: ignore[no-untyped-call]


def _is_ready(pod: dict[str, Any]) -> bool:
    conditions = pod.get("status", {}).get("conditions") or []
    return any(c["type"] == "Ready" and c["status"] == "True" for c in conditions)


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


def _release_objects(api: client.ApiClient, namespace: str) -> list[str]:
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
        f"{kind}/{_raw(item)['metadata']['name']}"
        for kind, lister in listers.items()
        for item in lister(namespace, label_selector=mine).items
    ]
    # helm's own record of the release
    left += [
        f"Secret/{_raw(s)['metadata']['name']}"
        for s in core.list_namespaced_secret(
            namespace, label_selector=f"owner=helm,name={RELEASE}"
        ).items
    ]
    return left


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
        assert _raw(apps.read_namespaced_deployment_scale("fn-a", namespace))["spec"] == {
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
        other = _new_namespace(core, "other")
        pv = _static_volume(core, namespace)
        try:
            t0 = time.monotonic()
            helm("install", RELEASE, str(CHART), "--namespace", namespace,
                 "--set", "store.sqlite.storageClass=-", "--wait", "--timeout", "120s")  # fmt: skip
            install_s = time.monotonic() - t0
            # --wait returned: the controller's pod is Ready (kwok) and its PVC is bound.
            name = f"{RELEASE}-tickrun"
            dep = _raw(apps.read_namespaced_deployment_status(name, namespace))
            assert dep["status"]["availableReplicas"] == 1, dep["status"]
            pods = _raw(
                core.list_namespaced_pod(
                    namespace, label_selector=f"app.kubernetes.io/instance={RELEASE}"
                )
            )["items"]
            assert len(pods) == 1 and pods[0]["spec"]["serviceAccountName"] == name
            assert _is_ready(pods[0])
            pvc = _raw(core.read_namespaced_persistent_volume_claim(f"{name}-state", namespace))
            assert pvc["status"]["phase"] == "Bound" and pvc["spec"]["volumeName"] == pv
            svc = _raw(core.read_namespaced_service(name, namespace))
            assert [p["port"] for p in svc["spec"]["ports"]] == [8070]
            token = _raw(core.read_namespaced_secret(f"{name}-token", namespace))
            assert len(base64.b64decode(token["data"]["token"])) == 40
            status = helm("status", RELEASE, "--namespace", namespace).stdout
            assert "STATUS: deployed" in status, status
            print(f"helm install --wait: {install_s:.1f}s")

            _check_service_account_rights(kube, namespace, other)
            # Not the release's: what the ServiceAccount made above.
            client.BatchV1Api(api).delete_namespaced_job(
                "sweep-a", namespace, propagation_policy="Background"
            )
            core.delete_namespaced_secret("fn-a-env", namespace)

            helm("uninstall", RELEASE, "--namespace", namespace, "--wait", "--timeout", "120s")
            _eventually(
                lambda: True if not _release_objects(api, namespace) else None,
                "the release's objects to go",
            )
            assert _release_objects(api, namespace) == []
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
        pods = _raw(client.CoreV1Api(api).list_namespaced_pod(namespace))["items"]
        assert pods and not any(_is_ready(p) for p in pods)
        helm("uninstall", RELEASE, "--namespace", namespace, "--wait", "--timeout", "60s")
        _eventually(
            lambda: True if not _release_objects(api, namespace) else None,
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
        other = _new_namespace(client.CoreV1Api(api), "other")
        elsewhere = KubernetesPlatform(other, token_kubeconfig)
        try:
            with pytest.raises(PlatformError, match="(?i)forbidden"):
                await elsewhere.apply(_workload("chartfn"))
        finally:
            await elsewhere.close()
            client.CoreV1Api(api).delete_namespace(other)
        helm("uninstall", RELEASE, "--namespace", namespace, "--wait", "--timeout", "60s")
        _eventually(
            lambda: True if not _release_objects(api, namespace) else None,
            "the release's objects to go",
        )
