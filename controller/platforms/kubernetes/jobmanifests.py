"""A tracked run's Kubernetes objects, as plain manifests (pure: no client, no I/O).

A Job runs the run's indexes (:mod:`tickrun.functions.runs.indexed`): one pod for a plain run,
an indexed Job for a sweep (``completionMode: Indexed``, one completion per iteration, the
request's ``parallel`` as its parallelism). A Secret of the run holds what must not be a plain
value (the controller's token, the S3 keys): the pods read them by ``secretKeyRef``, so no value
is in the Job, on a command line or in the API server's view of the pod. The Secret is owned by
the Job, so deleting the Job (or its TTL) takes it along.
"""

from __future__ import annotations

import base64
import re
from collections.abc import Mapping
from typing import Any

from tickrun.functions.launch import python_command
from tickrun.functions.runs.indexed import EXIT_BAD_REQUEST, EXIT_FAILED
from tickrun.functions.runs.indexed import main as index_main
from tickrun.functions.runs.plugins import JobRequest

from .manifests import MANAGED_BY, REPLICA_USER, pod_security_context

LABEL_RUN = "tickrun.io/run-uid"
LABEL_PROJECT = "tickrun.io/project"
CONTAINER = "job"
TMP = "/tmp"  # the pod's own emptyDir: the root filesystem is read-only
# Another attempt of an index only after a failure that is not the handler's (a lost node, an
# unreachable controller); a handler's error is recorded and would only repeat.
BACKOFF_PER_INDEX = 1
# A finished Job (and its pods and Secret) is kept this long for `kubectl logs`, then collected.
TTL_AFTER_FINISHED_S = 3600
# Deleted pods get this long to record "aborted" before the kubelet's SIGKILL.
GRACE_S = 15


def job_name(uid: str) -> str:
    """A DNS label from the run's uid (which may hold ``_`` and capitals)."""
    return f"tickrun-run-{re.sub(r'[^a-z0-9-]', '-', uid.lower())[:16].strip('-')}"


def run_label(uid: str) -> str:
    """The run's uid as a label value (at most 63 characters; a uid may have 64)."""
    return uid[:63].strip("-_.")


def secret_name(uid: str) -> str:
    return f"{job_name(uid)}-env"


def labels(request: JobRequest) -> dict[str, str]:
    return {
        "app.kubernetes.io/name": "tickrun-run",
        "app.kubernetes.io/component": "job",
        "app.kubernetes.io/managed-by": MANAGED_BY,
        LABEL_RUN: run_label(request.uid),
        LABEL_PROJECT: re.sub(r"[^A-Za-z0-9_.-]", "-", request.project)[:63].strip("-_.")
        or "default",
    }


def command(request: JobRequest, python: str = "python") -> list[str]:
    """The pod's command: one index of ``request`` (the index comes from the environment).
    SIGTERM interrupts it, so the runner records the run aborted when the Job is deleted."""
    return python_command(
        index_main, request.model_dump_json(), python=python, on_parent_death=None, interrupt=True
    )


def env(values: Mapping[str, str], secret_keys: list[str], uid: str) -> list[dict[str, Any]]:
    """Plain values, then each secret key by reference to the run's Secret."""
    out: list[dict[str, Any]] = [
        {"name": "HOME", "value": TMP},
        {"name": "PYTHONUNBUFFERED", "value": "1"},
    ]
    out += [{"name": k, "value": v} for k, v in sorted(values.items())]
    out += [
        {"name": k, "valueFrom": {"secretKeyRef": {"name": secret_name(uid), "key": k}}}
        for k in sorted(secret_keys)
    ]
    return out


def pod_failure_policy(indexed: bool) -> dict[str, Any]:
    """Exit 2 (a request no index can run): fail the Job. Exit 1 (the handler failed, recorded):
    fail this index without retrying it. A disruption (drain, preemption) is not counted."""
    return {
        "rules": [
            {
                "action": "FailJob",
                "onExitCodes": {
                    "containerName": CONTAINER,
                    "operator": "In",
                    "values": [EXIT_BAD_REQUEST],
                },
            },
            {
                "action": "FailIndex" if indexed else "FailJob",
                "onExitCodes": {
                    "containerName": CONTAINER,
                    "operator": "In",
                    "values": [EXIT_FAILED],
                },
            },
            {"action": "Ignore", "onPodConditions": [{"type": "DisruptionTarget"}]},
        ]
    }


def job(
    request: JobRequest,
    namespace: str,
    *,
    image: str,
    completions: int,
    values: Mapping[str, str],
    secret_keys: list[str],
    deadline_s: int | None = None,
    resources: Mapping[str, Mapping[str, str]] | None = None,
    pull_secret: str | None = None,
) -> dict[str, Any]:
    """The Job: ``completions`` indexes of ``request`` (its target as the image has it);
    ``pull_secret``: the registry's credentials, when the image needs them."""
    if completions < 1:
        raise ValueError("a Job needs at least one completion")
    indexed = bool(request.hyperparams)
    meta_labels = labels(request)
    container: dict[str, Any] = {
        "name": CONTAINER,
        "image": image,
        "imagePullPolicy": "IfNotPresent",
        "command": command(request),
        "env": env(values, secret_keys, request.uid),
        "volumeMounts": [{"name": "tmp", "mountPath": TMP}],
        "securityContext": {
            "runAsNonRoot": True,
            "runAsUser": REPLICA_USER,
            "runAsGroup": REPLICA_USER,
            "allowPrivilegeEscalation": False,
            "readOnlyRootFilesystem": True,
            "capabilities": {"drop": ["ALL"]},
        },
    }
    if resources:
        container["resources"] = {k: dict(v) for k, v in resources.items()}
    spec: dict[str, Any] = {
        "completions": completions,
        "parallelism": min(request.parallel, completions),
        "completionMode": "Indexed" if indexed else "NonIndexed",
        "podFailurePolicy": pod_failure_policy(indexed),
        "ttlSecondsAfterFinished": TTL_AFTER_FINISHED_S,
        "template": {
            "metadata": {"labels": meta_labels},
            "spec": {
                "restartPolicy": "Never",
                "containers": [container],
                "volumes": [{"name": "tmp", "emptyDir": {}}],
                "terminationGracePeriodSeconds": GRACE_S,
                # A run talks to the controller and S3, never to the Kubernetes API.
                "automountServiceAccountToken": False,
                "enableServiceLinks": False,
                "securityContext": pod_security_context(),
            },
        },
    }
    if pull_secret is not None:
        spec["template"]["spec"]["imagePullSecrets"] = [{"name": pull_secret}]
    if indexed:
        spec["backoffLimitPerIndex"] = BACKOFF_PER_INDEX
    else:
        spec["backoffLimit"] = BACKOFF_PER_INDEX
    if deadline_s is not None:
        spec["activeDeadlineSeconds"] = deadline_s
    return {
        "apiVersion": "batch/v1",
        "kind": "Job",
        "metadata": {"name": job_name(request.uid), "namespace": namespace, "labels": meta_labels},
        "spec": spec,
    }


def secret(request: JobRequest, namespace: str, data: Mapping[str, str]) -> dict[str, Any]:
    """The run's secret values (token, S3 keys), which the Job's env names by key."""
    return {
        "apiVersion": "v1",
        "kind": "Secret",
        "type": "Opaque",
        "metadata": {
            "name": secret_name(request.uid),
            "namespace": namespace,
            "labels": labels(request),
        },
        "data": {k: base64.b64encode(v.encode()).decode() for k, v in sorted(data.items())},
    }


def owned_by_job(name: str, uid: str) -> dict[str, Any]:
    """A merge patch that makes an object the Job's (collected with it)."""
    ref = {
        "apiVersion": "batch/v1",
        "kind": "Job",
        "name": name,
        "uid": uid,
        "blockOwnerDeletion": False,
    }
    return {"metadata": {"ownerReferences": [ref]}}


__all__ = [
    "CONTAINER",
    "LABEL_PROJECT",
    "LABEL_RUN",
    "command",
    "env",
    "job",
    "job_name",
    "labels",
    "owned_by_job",
    "run_label",
    "secret",
    "secret_name",
]
