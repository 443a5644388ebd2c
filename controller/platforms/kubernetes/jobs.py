"""The ``kubernetes`` job runner (``tickrun run … --runner kubernetes``, entry point of
``tickrun.job_runners``): a tracked run, or a whole sweep, as one Kubernetes Job.

The launcher builds the job's image with the controller's builder, records the run and every
iteration in the controller's run DB (:class:`~tickrun.functions.runs.indexed.IndexedRun`), puts
the controller's token and the S3 keys in a Secret of the run, and creates the Job
(:mod:`.jobmanifests`): a sweep is one indexed Job, pod ``i`` runs iteration ``i + 1``. The pods
report to the controller and write artifacts to S3/MinIO, never to this machine, so the runner
needs ``TICKRUN_CONTROLLER_URL`` and an ``s3://`` artifact path. The launcher polls the Job and
the run DB, prints each iteration's end, concludes the sweep (the best iteration by the selector)
and returns the run's status. Ctrl-C/SIGTERM deletes the Job (its pods get SIGTERM: their
runs end aborted) and marks whatever had not ended aborted.
"""

from __future__ import annotations

import contextlib
import json
import logging
import signal
import sys
import time
from types import FrameType
from typing import Any

import urllib3.exceptions

import kubernetes.client as k8s
import kubernetes.config
from kubernetes.client.exceptions import ApiException
from kubernetes.config.config_exception import ConfigException
from tickrun.functions.errors import BadRequestError, PlatformError, TickrunError
from tickrun.functions.runs.indexed import IndexedRun
from tickrun.functions.runs.plugins import JobRequest
from tickrun.functions.runs.records import RunState
from tickrun.functions.runs.registry_records import MODEL_SCHEME
from tickrun.functions.runs.settings import TrackingSettings
from tickrun.functions.settings import (
    ARTIFACT_PATH,
    CONTROLLER_URL,
    FLUSH_INTERVAL_S,
    HOME,
    K8S_JOB_CONTROLLER_URL,
    K8S_JOB_S3_ENDPOINT,
    K8S_NAMESPACE,
    KUBECONFIG,
    S3_ACCESS_KEY,
    S3_ENDPOINT,
    S3_REGION,
    S3_SECRET_KEY,
    S3_SECURE,
    STALE_AFTER_S,
    TOKEN,
)
from tickrun.functions.source import resolve_function

from ...builder.registry import RegistryConfig, docker_config_json
from ...jobs import APP_FUNCTION, build_job_image, job_file
from . import jobmanifests as jm
from .manifests import CODE_DIR, PULL_SECRET, pull_secret, spec_resources
from .platform import APPLY, FATAL_REASONS, FIELD_MANAGER, _api_message

logger = logging.getLogger(__name__)

RUNNER = "kubernetes"
POLL_S = 1.0
FAILED_SETTLE_S = 5.0
REQUEST_TIMEOUT_S = (5.0, 30.0)
# What the job image needs besides the function's own requirements: the run tracker's SQL
# layer (imported by the run DB package) and the S3 client its artifacts go through.
JOB_REQUIREMENTS = ("SQLAlchemy", "minio")


def _say(msg: str) -> None:
    print(f"tickrun: {msg}", file=sys.stderr, flush=True)


def check_request(request: JobRequest, settings: TrackingSettings) -> str:
    """Refuse what pods cannot do; the ``s3://`` artifact path they write to."""
    if not settings.controller_url:
        raise BadRequestError(
            f"--runner {RUNNER} needs {CONTROLLER_URL.name}: the pods report the run to the "
            "controller's run DB (a file on this machine is out of their reach)"
        )
    art = request.artifact_path or settings.artifact_path
    if not art.startswith("s3://"):
        raise BadRequestError(
            f"--runner {RUNNER} writes artifacts to S3/MinIO, and {art!r} is a local path the "
            f"pods cannot reach: set {ARTIFACT_PATH.name} (or --artifact-path) to "
            f"s3://bucket/prefix, with {S3_ENDPOINT.name} and the S3 keys"
        )
    # models:/ URIs resolve in the pod through the controller's registry, like store:// ones.
    local = [
        k for k, v in request.inputs.items() if "://" not in v and not v.startswith(MODEL_SCHEME)
    ]
    if local:
        raise BadRequestError(
            f"--runner {RUNNER}: input(s) {', '.join(sorted(local))} are local paths the pods "
            "cannot read; pass s3://, store:// or models:/ URIs"
        )
    return art


def pod_env(
    settings: TrackingSettings, artifact_path: str
) -> tuple[dict[str, str], dict[str, str]]:
    """(plain values, secret values) of the pods' environment: where they track, and how. The
    controller and S3 as the pods reach them may differ from what this machine uses (a
    port-forward here, a Service name there): TICKRUN_K8S_JOB_CONTROLLER_URL, …_S3_ENDPOINT."""
    s3 = settings.s3
    values = {
        HOME.name: f"{jm.TMP}/tickrun",
        ARTIFACT_PATH.name: artifact_path,
        CONTROLLER_URL.name: K8S_JOB_CONTROLLER_URL.get() or settings.controller_url or "",
        FLUSH_INTERVAL_S.name: str(settings.flush_interval_s),
        STALE_AFTER_S.name: str(settings.stale_after_s),
        S3_SECURE.name: "true" if s3.secure else "false",
    }
    endpoint = K8S_JOB_S3_ENDPOINT.get() or s3.endpoint
    if endpoint:
        values[S3_ENDPOINT.name] = endpoint
    if s3.region:
        values[S3_REGION.name] = s3.region
    secrets: dict[str, str] = {}
    for name, value in (
        (TOKEN.name, settings.token),
        (S3_ACCESS_KEY.name, s3.access_key),
        (S3_SECRET_KEY.name, s3.secret_key),
    ):
        if value is not None:
            secrets[name] = value.get_secret_value()
    return values, secrets


def api_client() -> Any:
    """A client from ``TICKRUN_KUBECONFIG``, else the pod's service account."""
    cfg = k8s.Configuration()
    kubeconfig = KUBECONFIG.get()
    try:
        if kubeconfig is not None:
            kubernetes.config.load_kube_config(  # type: ignore[no-untyped-call]
                config_file=str(kubeconfig), client_configuration=cfg, persist_config=False
            )
        else:
            kubernetes.config.load_incluster_config(  # type: ignore[no-untyped-call]
                client_configuration=cfg
            )
    except ConfigException as exc:
        where = kubeconfig or f"the pod's service account (set {KUBECONFIG.name})"
        raise PlatformError(f"kubernetes: cannot load the config from {where}: {exc}") from exc
    return k8s.ApiClient(cfg)


class JobClient:
    """The few API calls of one run's Job and Secret. Constructor does no I/O."""

    def __init__(self, api: Any, namespace: str, uid: str) -> None:
        self.api = api
        self.namespace = namespace
        self.name = jm.job_name(uid)
        self.secret = jm.secret_name(uid)
        self.uid = uid

    def _call(self, what: str, fn: Any, *args: Any, **kwargs: Any) -> Any:
        try:
            resp = fn(*args, _preload_content=False, _request_timeout=REQUEST_TIMEOUT_S, **kwargs)
        except ApiException as exc:
            raise PlatformError(f"kubernetes: cannot {what}: {_api_message(exc)}") from exc
        except (urllib3.exceptions.HTTPError, OSError) as exc:
            raise PlatformError(
                f"kubernetes: cannot {what}: the API server is unreachable ({type(exc).__name__})"
            ) from exc
        return json.loads(resp.data or b"null")

    def apply_pull_secret(self, secret: dict[str, Any]) -> None:
        """The namespace's registry Secret, shared with the platform's Deployments."""
        self._call(
            "apply the registry's pull Secret",
            k8s.CoreV1Api(self.api).patch_namespaced_secret,
            secret["metadata"]["name"],
            self.namespace,
            secret,
            field_manager=FIELD_MANAGER,
            force=True,
            _content_type=APPLY,
        )

    def create(self, job: dict[str, Any], secret: dict[str, Any] | None) -> None:
        core, batch, ns = k8s.CoreV1Api(self.api), k8s.BatchV1Api(self.api), self.namespace
        if secret is not None:
            self._call("create the run's Secret", core.create_namespaced_secret, ns, secret)
        try:
            made = self._call("create the Job", batch.create_namespaced_job, ns, job)
        except PlatformError:
            if secret is not None:
                self.delete_secret()
            raise
        if secret is not None:
            patch = jm.owned_by_job(made["metadata"]["name"], made["metadata"]["uid"])
            self._call(
                "hand the run's Secret to its Job",
                core.patch_namespaced_secret,
                self.secret,
                ns,
                patch,
            )

    def status(self) -> dict[str, Any]:
        job: dict[str, Any] = self._call(
            "read the Job",
            k8s.BatchV1Api(self.api).read_namespaced_job_status,
            self.name,
            self.namespace,
        )
        return job

    def waiting_reasons(self) -> dict[str, str]:
        """Pods stuck on something waiting will not fix (a bad image, a missing Secret)."""
        pods = self._call(
            "list the Job's pods",
            k8s.CoreV1Api(self.api).list_namespaced_pod,
            self.namespace,
            label_selector=f"{jm.LABEL_RUN}={jm.run_label(self.uid)}",
        )["items"]
        out = {}
        for pod in pods:
            for cs in (pod.get("status") or {}).get("containerStatuses") or []:
                waiting = (cs.get("state") or {}).get("waiting") or {}
                if waiting.get("reason") in FATAL_REASONS:
                    out[pod["metadata"]["name"]] = f"{waiting['reason']}: {waiting.get('message')}"
        return out

    def delete(self) -> None:
        """Delete the Job; its pods get SIGTERM and the grace period, the Secret goes with it."""
        with contextlib.suppress(PlatformError):
            self._call(
                "delete the Job",
                k8s.BatchV1Api(self.api).delete_namespaced_job,
                self.name,
                self.namespace,
                propagation_policy="Background",
            )
        self.delete_secret()

    def delete_secret(self) -> None:
        with contextlib.suppress(PlatformError):
            self._call(
                "delete the run's Secret",
                k8s.CoreV1Api(self.api).delete_namespaced_secret,
                self.secret,
                self.namespace,
            )


def finished(job: dict[str, Any]) -> str | None:
    """ "Complete" or "Failed: reason" once the Job has ended, else None."""
    for cond in (job.get("status") or {}).get("conditions") or []:
        if cond.get("status") != "True":
            continue
        if cond.get("type") == "Complete":
            return "Complete"
        if cond.get("type") == "Failed":
            return f"Failed: {cond.get('reason')}: {cond.get('message')}"
    return None


def describe(job: dict[str, Any]) -> str:
    st = job.get("status") or {}
    parts = [f"{st.get(k) or 0} {k}" for k in ("active", "succeeded", "failed")]
    if st.get("failedIndexes"):
        parts.append(f"failed indexes {st['failedIndexes']}")
    return ", ".join(parts)


def run_job(request: JobRequest) -> int:
    """Run ``request`` as a Job and wait; 0 when the run (or the sweep) completed."""
    if request.runner != RUNNER:
        raise BadRequestError(f"the {RUNNER} job runner got a request for {request.runner!r}")
    from ...settings import Settings

    settings = TrackingSettings.from_env()
    art = check_request(request, settings)
    file, handler = job_file(request.target, RUNNER)
    # The pods load the handler from the image, where the builder put the file's folder.
    in_image = request.model_copy(
        update={"target": f"{CODE_DIR}/{file.name}:{handler}", "artifact_path": art}
    )
    assert CODE_DIR == APP_FUNCTION  # one image layout for both job runners
    run = IndexedRun(in_image, settings)
    completions = run.plan()  # bad sweep options fail here, before a build
    namespace = K8S_NAMESPACE.get()
    controller = Settings.from_env()
    # "kubernetes": pushed to TICKRUN_REGISTRY (and pulled by digest) when one is set.
    artifact = build_job_image(
        file, controller, RUNNER, JOB_REQUIREMENTS, tuple(request.requirements)
    )
    image = str(artifact.get("image_digest") or artifact["image"])
    registry = RegistryConfig.from_settings(controller)
    pull_config = docker_config_json(registry) if registry is not None else None
    values, secret_values = pod_env(settings, art)
    _code_dir, spec = resolve_function(file)
    job = jm.job(
        in_image,
        namespace,
        image=image,
        completions=completions,
        values=values,
        secret_keys=sorted(secret_values),
        # function.yaml's resources, a GPU included: every iteration's pod gets them.
        resources=spec_resources(spec),
        deadline_s=request.timeout_s,
        pull_secret=PULL_SECRET if pull_config is not None else None,
    )
    secret = jm.secret(in_image, namespace, secret_values) if secret_values else None
    client = JobClient(api_client(), namespace, request.uid)
    if pull_config is not None:
        client.apply_pull_secret(pull_secret(namespace, pull_config))
    run.start()
    try:
        client.create(job, secret)
    except BaseException as exc:
        run.abort(f"the Job could not be created: {exc}"[:2000])
        raise
    _say(
        f"run {request.uid} started ({RUNNER}, job {client.name} in {namespace}: "
        f"{completions} completion(s), parallelism {job['spec']['parallelism']})"
    )
    return _supervise(run, client, settings)


def _supervise(run: IndexedRun, client: JobClient, settings: TrackingSettings) -> int:
    stop: list[int] = []

    def on_signal(signum: int, _frame: FrameType | None) -> None:
        if not stop:
            _say(f"{signal.Signals(signum).name}: deleting job {client.name}")
        stop.append(signum)

    previous: dict[int, Any] = {}
    for sig in (signal.SIGINT, signal.SIGTERM):
        with contextlib.suppress(ValueError):  # not the main thread
            previous[sig] = signal.signal(sig, on_signal)
    try:
        return _wait(run, client, settings, stop)
    finally:
        for signum, handler in previous.items():
            signal.signal(signum, handler)
        client.api.close()


def _wait(run: IndexedRun, client: JobClient, settings: TrackingSettings, stop: list[int]) -> int:
    last, ended_at, warned = "", None, False
    while not stop:
        try:
            all_ended = run.poll()
            job = client.status()
        except TickrunError as exc:  # a hiccup of the controller or the API server
            logger.warning("cannot read the run or its Job", extra={"error": exc.message})
            time.sleep(POLL_S)
            continue
        ok, bad, total = run.counts()
        line = f"job {client.name}: {describe(job)}; iterations ended {ok + bad}/{total}"
        if line != last:
            _say(line + (f" ({bad} failed)" if bad else ""))
            last = line
        if all_ended:
            break
        end = finished(job)
        if end is not None:
            ended_at = ended_at or time.monotonic()
            # Its pods are gone. One that succeeded recorded its end before exiting, so a
            # record still open then is given the stale-run window (the last write may be
            # late); a failed Job (deadline, a failed index, a request no pod can run) leaves
            # queued iterations that will never start.
            settle_s = settings.stale_after_s if end == "Complete" else FAILED_SETTLE_S
            if time.monotonic() - ended_at > settle_s:
                run.abort(f"the Job ended ({end}) before this iteration recorded its end")
                _say(f"job {client.name} ended ({end}); unrecorded iterations marked aborted")
                return 1
        elif not warned:
            for pod, why in client.waiting_reasons().items():
                _say(f"pod {pod} cannot start: {why}")
                warned = True
        time.sleep(POLL_S)
    if stop:
        client.delete()
        run.abort("interrupted")
        _say(f"run {run.request.uid} aborted: interrupted")
        return 128 + stop[0]
    state = run.conclude()
    if finished(client.status()) is None:
        client.delete()  # stopped early: the pods left would only find their iterations ended
    return 0 if state is RunState.COMPLETED else 1


__all__ = ["RUNNER", "JobClient", "api_client", "check_request", "pod_env", "run_job"]
