"""The kubernetes platform: a function is a Deployment (+ Service, Secret, HPA or KEDA
ScaledObject) in one namespace, applied server-side with the official client; the cluster runs,
probes, restarts and rolls the pods, and this class reads their status back.

The client is blocking: every call runs in a thread. API errors become
:class:`~tickrun.functions.errors.PlatformError` with the API server's own message.
"""

from __future__ import annotations

import asyncio
import json
import logging
import threading
from collections.abc import Callable
from datetime import datetime
from pathlib import Path
from typing import Any

import urllib3.exceptions

import kubernetes.client as k8s
import kubernetes.config
from kubernetes.client.exceptions import ApiException
from kubernetes.config.config_exception import ConfigException
from tickrun.functions.errors import PlatformError
from tickrun.functions.settings import K8S_NAMESPACE
from tickrun.functions.spec import FunctionSpec

from ...builder.registry import RegistryConfig, docker_config_json
from ..base import (
    LAG_WITH_CPU,
    ClusterEvent,
    ClusterPlatform,
    PodLogs,
    PodStatus,
    Workload,
    WorkloadStatus,
)
from . import keda
from . import manifests as m

logger = logging.getLogger(__name__)

FIELD_MANAGER = "tickrun"
APPLY = "application/apply-patch+yaml"
MERGE = "application/merge-patch+json"
REQUEST_TIMEOUT_S = (5.0, 30.0)  # connect, read
# Read answers as JSON (the client's models would be built and thrown away); errors still raise.
RAW: dict[str, Any] = {"_preload_content": False, "_request_timeout": REQUEST_TIMEOUT_S}
# Kinds whose events are the function's events.
EVENT_KINDS = {"Deployment", "ReplicaSet", "Pod", "HorizontalPodAutoscaler", keda.KIND}
# A pod waiting for one of these will not get better by waiting.
FATAL_REASONS = {
    "ErrImagePull",
    "ImagePullBackOff",
    "InvalidImageName",
    "CrashLoopBackOff",
    "CreateContainerConfigError",
    "CreateContainerError",
}


def _ts(value: Any) -> float | None:
    if not isinstance(value, str) or not value:
        return None
    try:
        return datetime.fromisoformat(value.replace("Z", "+00:00")).timestamp()
    except ValueError:
        return None


def _api_message(exc: ApiException) -> str:
    try:
        body = json.loads(exc.body or "{}")
    except (TypeError, ValueError):
        body = {}
    message = body.get("message") if isinstance(body, dict) else None
    return f"{exc.status} {message or exc.reason or ''}".strip()


def pod_status(pod: dict[str, Any]) -> PodStatus:
    meta, st = pod.get("metadata", {}), pod.get("status", {})
    ready_cond: dict[str, Any] = next(
        (c for c in st.get("conditions") or [] if c.get("type") == "Ready"), {}
    )
    ready = ready_cond.get("status") == "True"
    restarts, reason, exit_code = 0, "", None
    for cs in st.get("containerStatuses") or []:
        restarts += int(cs.get("restartCount") or 0)
        state = cs.get("state") or {}
        waiting, terminated = state.get("waiting") or {}, state.get("terminated") or {}
        last = (cs.get("lastState") or {}).get("terminated") or {}
        reason = reason or waiting.get("reason") or terminated.get("reason") or ""
        code = terminated.get("exitCode", last.get("exitCode"))
        if code is not None:
            exit_code = int(code)
    if not reason:
        reason = st.get("reason") or ""
    if not reason:
        scheduled: dict[str, Any] = next(
            (c for c in st.get("conditions") or [] if c.get("type") == "PodScheduled"), {}
        )
        if scheduled.get("status") == "False":
            reason = scheduled.get("reason") or "Unschedulable"
    return PodStatus(
        name=meta.get("name", ""),
        ready=ready,
        restarts=restarts,
        phase=st.get("phase") or "Pending",
        reason=reason,
        ip=st.get("podIP") or None,
        revision=(meta.get("annotations") or {}).get(m.LABEL_REVISION),
        started_at=_ts(st.get("startTime")) or _ts(meta.get("creationTimestamp")),
        ready_at=_ts(ready_cond.get("lastTransitionTime")) if ready else None,
        exit_code=exit_code,
        terminating=bool(meta.get("deletionTimestamp")),
        failed=st.get("phase") == "Failed" or reason in FATAL_REASONS,
    )


def workload_status(
    deployment: dict[str, Any], pods: list[dict[str, Any]], events: list[ClusterEvent]
) -> WorkloadStatus:
    meta, spec = deployment.get("metadata", {}), deployment.get("spec", {})
    st = deployment.get("status", {})
    # Counts from before the Deployment controller saw the newest spec say nothing about it.
    observed = int(st.get("observedGeneration") or 0) >= int(meta.get("generation") or 0)
    stalled = ""
    for cond in st.get("conditions") or []:
        if cond.get("type") == "Progressing" and cond.get("status") == "False":
            stalled = f"{cond.get('reason')}: {cond.get('message')}"
    template = spec.get("template", {}).get("metadata", {})
    return WorkloadStatus(
        revision=(template.get("annotations") or {}).get(m.LABEL_REVISION),
        desired=int(spec.get("replicas") or 0),
        updated=int(st.get("updatedReplicas") or 0) if observed else 0,
        ready=int(st.get("readyReplicas") or 0),
        available=int(st.get("availableReplicas") or 0) if observed else 0,
        pods=sorted((pod_status(p) for p in pods), key=lambda p: p.name),
        events=events,
        stalled=stalled,
    )


class KubernetesPlatform(ClusterPlatform):
    """Constructor does no I/O: the kubeconfig is read on first use. ``autoscaler``: "keda"
    hands the count of autoscaled functions to KEDA ScaledObjects (keda.py)."""

    name = "kubernetes"
    port = m.PORT

    def __init__(
        self,
        namespace: str,
        kubeconfig: Path | None = None,
        *,
        autoscaler: str = "tickrun",
        registry: RegistryConfig | None = None,
    ) -> None:
        self.namespace = namespace
        self.kubeconfig = kubeconfig  # None: the pod's service account
        self.keda = autoscaler == "keda"
        # With credentials, pods pull with them (an image pull Secret in the namespace).
        self.registry = registry
        self._client: Any = None
        self._client_lock = threading.Lock()
        self._metrics: bool | None = None

    # --- the client -----------------------------------------------------------------------------

    def _api(self) -> Any:
        with self._client_lock:
            if self._client is None:
                cfg = k8s.Configuration()
                if self.kubeconfig is not None:
                    kubernetes.config.load_kube_config(  # type: ignore[no-untyped-call]
                        config_file=str(self.kubeconfig),
                        client_configuration=cfg,
                        persist_config=False,
                    )
                else:
                    kubernetes.config.load_incluster_config(  # type: ignore[no-untyped-call]
                        client_configuration=cfg
                    )
                self._client = k8s.ApiClient(cfg)
            return self._client

    async def _call(self, what: str, fn: Callable[[Any], Any], *, missing_ok: bool = False) -> Any:
        """``fn(api_client)`` in a thread; a 404 is None when ``missing_ok``."""

        def run() -> Any:
            return fn(self._api())

        try:
            return await asyncio.to_thread(run)
        except ApiException as exc:
            if missing_ok and exc.status == 404:
                return None
            raise PlatformError(f"kubernetes: cannot {what}: {_api_message(exc)}") from exc
        except ConfigException as exc:
            where = self.kubeconfig or "the pod's service account"
            raise PlatformError(f"kubernetes: cannot load the config from {where}: {exc}") from exc
        except (urllib3.exceptions.HTTPError, OSError) as exc:
            raise PlatformError(
                f"kubernetes: cannot {what}: the API server is unreachable ({type(exc).__name__})"
            ) from exc

    @staticmethod
    def _json(response: Any) -> Any:
        return json.loads(response.data or b"null")

    # --- apply / scale --------------------------------------------------------------------------

    def _apply(self, api: Any, obj: dict[str, Any]) -> dict[str, Any]:
        kind, name, ns = obj["kind"], obj["metadata"]["name"], self.namespace
        kw: dict[str, Any] = {
            "field_manager": FIELD_MANAGER,
            "force": True,  # tickrun owns these objects
            "_content_type": APPLY,
            **RAW,
        }
        resp: Any
        if kind == "Deployment":
            resp = k8s.AppsV1Api(api).patch_namespaced_deployment(name, ns, obj, **kw)
        elif kind == "Service":
            resp = k8s.CoreV1Api(api).patch_namespaced_service(name, ns, obj, **kw)
        elif kind == "Secret":
            resp = k8s.CoreV1Api(api).patch_namespaced_secret(name, ns, obj, **kw)
        elif kind == keda.KIND:
            resp = k8s.CustomObjectsApi(api).patch_namespaced_custom_object(
                keda.GROUP, keda.VERSION, ns, keda.PLURAL, name, obj, **kw
            )
        else:
            resp = k8s.AutoscalingV2Api(api).patch_namespaced_horizontal_pod_autoscaler(
                name, ns, obj, **kw
            )
        out: dict[str, Any] = self._json(resp)
        return out

    def _delete(self, api: Any, kind: str, name: str) -> None:
        ns = self.namespace
        kw: dict[str, Any] = {**RAW}
        try:
            if kind == "Deployment":
                k8s.AppsV1Api(api).delete_namespaced_deployment(
                    name, ns, propagation_policy="Background", **kw
                )
            elif kind == "Service":
                k8s.CoreV1Api(api).delete_namespaced_service(name, ns, **kw)
            elif kind == "Secret":
                k8s.CoreV1Api(api).delete_namespaced_secret(name, ns, **kw)
            elif kind == keda.KIND:
                k8s.CustomObjectsApi(api).delete_namespaced_custom_object(
                    keda.GROUP, keda.VERSION, ns, keda.PLURAL, name, **kw
                )
            else:
                k8s.AutoscalingV2Api(api).delete_namespaced_horizontal_pod_autoscaler(
                    name, ns, **kw
                )
        except ApiException as exc:
            if exc.status != 404:
                raise

    def keda_owned(self, spec: FunctionSpec) -> bool:
        return self.keda and keda.owns_count(spec)

    def owns_count(self, spec: FunctionSpec) -> bool:
        return self.keda_owned(spec) or spec.spec.target_cpu_percent is not None

    def warnings(self, spec: FunctionSpec) -> list[str]:
        return keda.plan(spec).warnings if self.keda_owned(spec) else []

    async def acts_on_spec(self, spec: FunctionSpec) -> set[str]:
        fields = await self.acts_on()
        # KEDA's kafka and cpu triggers both count (the larger wins).
        return fields | {LAG_WITH_CPU} if self.keda_owned(spec) else fields

    async def apply(self, workload: Workload) -> None:
        ns = self.namespace
        by_keda = self.keda_owned(workload.spec)
        hpa_wanted = m.wants_hpa(workload) and not by_keda

        def run(api: Any) -> None:
            pull: str | None = None
            # Read here, in the thread: the credentials may come from an auth file.
            config = docker_config_json(self.registry) if self.registry is not None else None
            if config is not None:
                self._apply(api, m.pull_secret(ns, config))
                pull = m.PULL_SECRET
            dep = self._apply(
                api,
                m.deployment(workload, ns, autoscaled=by_keda or hpa_wanted, pull_secret=pull),
            )
            owner = m.owner_reference(dep["metadata"]["name"], dep["metadata"]["uid"])
            self._apply(api, m.service(workload, ns, owner))
            secret = m.secret(workload, ns, owner)
            if secret is not None:
                self._apply(api, secret)
            else:  # a previous revision's secrets must not linger
                self._delete(api, "Secret", m.secret_name(workload.function))
            hpa = m.hpa(workload, ns, owner) if hpa_wanted else None
            if hpa is not None:
                self._apply(api, hpa)
            else:
                self._delete(api, "HorizontalPodAutoscaler", m.object_name(workload.function))
            if by_keda:
                self._apply(api, keda.scaled_object(workload, ns, owner))
            elif self.keda:  # KEDA no longer owns it (a fixed count now): its HPA goes too
                self._delete(api, keda.KIND, m.object_name(workload.function))

        try:
            await self._call(f"apply {workload.function!r}", run)
        except PlatformError as exc:
            if "namespaces" in exc.message and "not found" in exc.message:
                raise PlatformError(
                    f"kubernetes: the namespace {ns!r} does not exist: create it, or point "
                    f"{K8S_NAMESPACE.name} at one that does"
                ) from exc
            raise

    async def scale(self, function: str, replicas: int) -> None:
        body = {"spec": {"replicas": replicas}}
        await self._call(
            f"scale {function!r}",
            lambda api: k8s.AppsV1Api(api).patch_namespaced_deployment_scale(
                m.object_name(function),
                self.namespace,
                body,
                field_manager=FIELD_MANAGER,
                _content_type=MERGE,
                **RAW,
            ),
        )

    # --- status ---------------------------------------------------------------------------------

    async def status(self, function: str) -> WorkloadStatus | None:
        ns, name = self.namespace, m.object_name(function)
        selector = f"{m.LABEL_FUNCTION}={function}"

        def run(api: Any) -> WorkloadStatus | None:
            apps, core = k8s.AppsV1Api(api), k8s.CoreV1Api(api)
            try:
                dep = self._json(apps.read_namespaced_deployment(name, ns, **RAW))
            except ApiException as exc:
                if exc.status == 404:
                    return None
                raise
            pods = self._json(core.list_namespaced_pod(ns, label_selector=selector, **RAW))["items"]
            sets = self._json(apps.list_namespaced_replica_set(ns, label_selector=selector, **RAW))[
                "items"
            ]
            ours = {("Deployment", name), ("HorizontalPodAutoscaler", name), (keda.KIND, name)}
            ours |= {("ReplicaSet", r["metadata"]["name"]) for r in sets}
            ours |= {("Pod", p["metadata"]["name"]) for p in pods}
            raw = self._json(core.list_namespaced_event(ns, **RAW))["items"]
            events = []
            for e in raw:
                obj = e.get("involvedObject") or {}
                if (obj.get("kind"), obj.get("name")) not in ours:
                    continue
                events.append(
                    ClusterEvent(
                        uid=f"{e['metadata'].get('uid')}/{e.get('count') or 1}",
                        kind=obj.get("kind", ""),
                        object=obj.get("name", ""),
                        type=e.get("type") or "Normal",
                        reason=e.get("reason") or "",
                        message=(e.get("message") or "")[:500],
                        count=int(e.get("count") or 1),
                    )
                )
            return workload_status(dep, pods, events)

        result: WorkloadStatus | None = await self._call(f"read the status of {function!r}", run)
        return result

    # --- remove / adopt / logs ------------------------------------------------------------------

    async def remove(self, function: str) -> None:
        ns, selector = self.namespace, f"{m.LABEL_FUNCTION}={function}"
        kw: dict[str, Any] = {"label_selector": selector, **RAW}

        def run(api: Any) -> None:
            apps, core = k8s.AppsV1Api(api), k8s.CoreV1Api(api)
            hpas = k8s.AutoscalingV2Api(api)
            found: list[tuple[str, str]] = []
            for kind, lister in (
                ("Deployment", apps.list_namespaced_deployment_with_http_info),
                (
                    "HorizontalPodAutoscaler",
                    hpas.list_namespaced_horizontal_pod_autoscaler_with_http_info,
                ),
                ("Service", core.list_namespaced_service_with_http_info),
                ("Secret", core.list_namespaced_secret_with_http_info),
            ):
                items = self._json(lister(ns, **kw))["items"]
                found += [(kind, i["metadata"]["name"]) for i in items]
            if self.keda:  # the ScaledObject first: KEDA would scale the Deployment back up
                custom = k8s.CustomObjectsApi(api)
                objs = self._json(
                    custom.list_namespaced_custom_object_with_http_info(
                        keda.GROUP, keda.VERSION, ns, keda.PLURAL, **kw
                    )
                )["items"]
                found = [(keda.KIND, o["metadata"]["name"]) for o in objs] + found
            for kind, obj in found:
                self._delete(api, kind, obj)
            # The garbage collector would take them too, later: gone now, so nothing serves on.
            apps.delete_collection_namespaced_replica_set(ns, **kw)
            core.delete_collection_namespaced_pod(ns, **kw)

        await self._call(f"remove {function!r}", run)

    async def adopt(self, controller_id: str) -> set[str]:
        selector = f"{m.LABEL_CONTROLLER}={controller_id}"

        def run(api: Any) -> set[str]:
            items = self._json(
                k8s.AppsV1Api(api).list_namespaced_deployment(
                    self.namespace, label_selector=selector, **RAW
                )
            )["items"]
            return {
                i["metadata"]["labels"][m.LABEL_FUNCTION]
                for i in items
                if m.LABEL_FUNCTION in (i["metadata"].get("labels") or {})
            }

        found: set[str] = await self._call("list this controller's deployments", run)
        return found

    async def logs(self, function: str, tail: int) -> list[PodLogs]:
        ns, selector = self.namespace, f"{m.LABEL_FUNCTION}={function}"

        def run(api: Any) -> list[PodLogs]:
            core = k8s.CoreV1Api(api)
            pods = self._json(core.list_namespaced_pod(ns, label_selector=selector, **RAW))["items"]
            out = []
            for pod in sorted(pods, key=lambda p: str(p["metadata"]["name"])):
                name = pod["metadata"]["name"]
                try:
                    text: Any = core.read_namespaced_pod_log(
                        name,
                        ns,
                        container=m.CONTAINER,
                        tail_lines=tail,
                        **RAW,
                    )
                except ApiException as exc:
                    # A pod not started yet, or a node that serves no logs (kwok).
                    out.append(PodLogs(name, [], _api_message(exc)))
                    continue
                lines = (text.data or b"").decode("utf-8", "replace").splitlines()
                out.append(PodLogs(name, lines[-tail:]))
            return out

        result: list[PodLogs] = await self._call(f"read the logs of {function!r}", run)
        return result

    # --- capabilities ---------------------------------------------------------------------------

    def isolation(self) -> dict[str, Any]:
        return {
            "mechanism": "kubernetes",
            "namespace": self.namespace,
            "user": m.REPLICA_USER,
            "capabilities": "none",
        }

    async def acts_on(self) -> set[str]:
        fields = {"nvidia.com/gpu", "nodeSelector", "tolerations", "priorityClassName"}
        if self._metrics is None:
            # An HPA acts on targetCPU only where the metrics API serves pod CPU.
            def run(api: Any) -> bool:
                groups = self._json(k8s.ApisApi(api).get_api_versions(**RAW))
                return any(g.get("name") == "metrics.k8s.io" for g in groups.get("groups", []))

            try:
                self._metrics = bool(await self._call("list the API groups", run))
            except PlatformError as exc:
                logger.warning(
                    "cannot tell if the cluster serves metrics", extra={"error": exc.message}
                )
                return fields
        return fields | {"targetCPU"} if self._metrics else fields

    async def close(self) -> None:
        client, self._client = self._client, None
        if client is not None:
            await asyncio.to_thread(client.close)
