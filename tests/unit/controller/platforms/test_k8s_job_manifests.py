"""The kubernetes job runner's manifests and checks (pure: no cluster)."""

from __future__ import annotations

import base64
import json
from pathlib import Path
from typing import Any

import pytest
from pydantic import SecretStr

from tickrun.controller.platforms.kubernetes import jobmanifests as jm
from tickrun.controller.platforms.kubernetes.jobs import check_request, finished, pod_env
from tickrun.controller.platforms.kubernetes.manifests import spec_resources
from tickrun.functions.artifacts import S3Settings
from tickrun.functions.errors import BadRequestError
from tickrun.functions.launch import BOOT
from tickrun.functions.runs import TrackingSettings
from tickrun.functions.runs.indexed import EXIT_BAD_REQUEST, EXIT_FAILED
from tickrun.functions.runs.plugins import JobRequest
from tickrun.functions.spec import parse_spec

UID = "0123456789abcdef0123456789abcdef"
TOKEN = "tok-" + "x" * 40
S3_SECRET = "minio-secret-" + "y" * 20


def _request(**kw: object) -> JobRequest:
    base: dict[str, object] = {
        "runner": "kubernetes",
        "target": "/opt/tickrun/function/train.py:train",
        "uid": UID,
        "project": "Risk Desk",
        "artifact_path": "s3://runs/tickrun",
    }
    return JobRequest.model_validate({**base, **kw})


def _settings(tmp_path: Path, **kw: object) -> TrackingSettings:
    base: dict[str, object] = {
        "home": tmp_path,
        "artifact_path": "s3://runs/tickrun",
        "db_url": f"sqlite:///{tmp_path / 'runs.db'}",
        "controller_url": "http://tickrun.tickrun.svc:8070",
        "token": SecretStr(TOKEN),
        "s3": S3Settings(
            endpoint="minio.data:9000",
            access_key=SecretStr("minio-user"),
            secret_key=SecretStr(S3_SECRET),
            secure=False,
        ),
    }
    return TrackingSettings.model_validate({**base, **kw})


def _job(request: JobRequest, tmp_path: Path, completions: int = 4) -> dict[str, Any]:
    values, secrets = pod_env(_settings(tmp_path), "s3://runs/tickrun")
    return jm.job(
        request,
        "ns1",
        image="registry.local/tickrun/job-train@sha256:" + "a" * 64,
        completions=completions,
        values=values,
        secret_keys=sorted(secrets),
    )


def test_sweep_is_one_indexed_job_with_secret_refs_and_no_secret_values(tmp_path: Path) -> None:
    request = _request(hyperparams={"lr": [0.1, 0.2], "depth": [2, 4]}, parallel=3)
    job = _job(request, tmp_path)
    spec = job["spec"]
    assert spec["completionMode"] == "Indexed"
    assert (spec["completions"], spec["parallelism"]) == (4, 3)
    assert spec["backoffLimitPerIndex"] == 1 and "backoffLimit" not in spec
    assert spec["ttlSecondsAfterFinished"] == jm.TTL_AFTER_FINISHED_S
    pod = spec["template"]["spec"]
    assert pod["restartPolicy"] == "Never"
    assert pod["automountServiceAccountToken"] is False
    assert pod["securityContext"]["runAsNonRoot"] is True
    [c] = pod["containers"]
    assert c["image"].endswith("@sha256:" + "a" * 64)
    assert c["securityContext"]["readOnlyRootFilesystem"] is True
    assert c["securityContext"]["capabilities"] == {"drop": ["ALL"]}
    assert c["volumeMounts"] == [{"name": "tmp", "mountPath": "/tmp"}]
    assert pod["volumes"] == [{"name": "tmp", "emptyDir": {}}]
    env = {e["name"]: e for e in c["env"]}
    for key in ("TICKRUN_TOKEN", "TICKRUN_S3_ACCESS_KEY", "TICKRUN_S3_SECRET_KEY"):
        assert env[key] == {
            "name": key,
            "valueFrom": {"secretKeyRef": {"name": jm.secret_name(UID), "key": key}},
        }
    assert env["TICKRUN_CONTROLLER_URL"]["value"] == "http://tickrun.tickrun.svc:8070"
    assert env["TICKRUN_ARTIFACT_PATH"]["value"] == "s3://runs/tickrun"
    assert env["TICKRUN_S3_ENDPOINT"]["value"] == "minio.data:9000"
    assert env["TICKRUN_HOME"]["value"].startswith("/tmp/")  # the only writable place
    text = json.dumps(job)
    for secret in (TOKEN, S3_SECRET, "minio-user"):
        assert secret not in text
    labels = job["metadata"]["labels"]
    assert labels[jm.LABEL_RUN] == UID
    assert labels[jm.LABEL_PROJECT] == "Risk-Desk"  # a valid label value
    assert spec["template"]["metadata"]["labels"] == labels


def test_pod_command_runs_the_index_entry_with_the_request_and_no_secret(tmp_path: Path) -> None:
    request = _request(hyperparams={"lr": [0.1]}, params={"n": 3})
    [c] = _job(request, tmp_path)["spec"]["template"]["spec"]["containers"]
    cmd = c["command"]
    assert cmd[:3] == ["python", "-c", BOOT]
    assert cmd[3] == "0:1"  # no parent-death signal (PID 1), SIGTERM interrupts the run
    assert cmd[4:6] == ["tickrun.functions.runs.indexed", "main"]
    assert JobRequest.model_validate_json(cmd[6]) == request
    assert TOKEN not in json.dumps(cmd)


def test_failure_policy_per_index_for_a_sweep_whole_job_for_a_run(tmp_path: Path) -> None:
    sweep = _job(_request(hyperparams={"lr": [1, 2]}), tmp_path, 2)["spec"]
    rules = sweep["podFailurePolicy"]["rules"]
    assert [(r["action"], r.get("onExitCodes", {}).get("values")) for r in rules] == [
        ("FailJob", [EXIT_BAD_REQUEST]),
        ("FailIndex", [EXIT_FAILED]),
        ("Ignore", None),
    ]
    plain = _job(_request(parallel=5), tmp_path, 1)["spec"]
    assert plain["completionMode"] == "NonIndexed"
    assert (plain["completions"], plain["parallelism"]) == (1, 1)
    assert plain["backoffLimit"] == 1 and "backoffLimitPerIndex" not in plain
    assert plain["podFailurePolicy"]["rules"][1]["action"] == "FailJob"
    with pytest.raises(ValueError):
        _job(_request(), tmp_path, 0)
    assert "activeDeadlineSeconds" not in plain


def test_timeout_is_the_jobs_deadline_and_not_a_run_argument(tmp_path: Path) -> None:
    request = _request(timeout_s=600)
    assert "timeout_s" not in request.run_kwargs()  # run_function has no such argument
    values, secrets = pod_env(_settings(tmp_path), "s3://runs/tickrun")
    job = jm.job(
        request,
        "ns1",
        image="img",
        completions=1,
        values=values,
        secret_keys=sorted(secrets),
        deadline_s=request.timeout_s,
    )
    assert job["spec"]["activeDeadlineSeconds"] == 600
    with pytest.raises(ValueError):
        _request(timeout_s=0)


def test_registry_credentials_by_pull_secret_only_when_configured(tmp_path: Path) -> None:
    assert "imagePullSecrets" not in _job(_request(), tmp_path, 1)["spec"]["template"]["spec"]
    values, secrets = pod_env(_settings(tmp_path), "s3://runs/tickrun")
    job = jm.job(
        _request(),
        "ns1",
        image="registry.local/tickrun/job-train@sha256:" + "b" * 64,
        completions=1,
        values=values,
        secret_keys=sorted(secrets),
        pull_secret="tickrun-registry",
    )
    assert job["spec"]["template"]["spec"]["imagePullSecrets"] == [{"name": "tickrun-registry"}]


def test_function_yaml_resources_reach_every_pod(tmp_path: Path) -> None:
    spec = parse_spec(
        {
            "metadata": {"name": "trainer"},
            "spec": {
                "handler": "train:train",
                "resources": {"requests": {"cpu": "2", "memory": "4Gi"}, "limits": {"gpu": 1}},
            },
        }
    )
    values, secrets = pod_env(_settings(tmp_path), "s3://runs/tickrun")
    job = jm.job(
        _request(hyperparams={"lr": [1, 2]}),
        "ns1",
        image="img",
        completions=2,
        values=values,
        secret_keys=sorted(secrets),
        resources=spec_resources(spec),
    )
    [c] = job["spec"]["template"]["spec"]["containers"]
    assert c["resources"] == {
        "requests": {"cpu": "2", "memory": "4Gi", "nvidia.com/gpu": "1"},
        "limits": {"nvidia.com/gpu": "1"},
    }


def test_secret_holds_the_values_and_is_handed_to_the_job(tmp_path: Path) -> None:
    _values, secrets = pod_env(_settings(tmp_path), "s3://runs/tickrun")
    secret = jm.secret(_request(), "ns1", secrets)
    decoded = {k: base64.b64decode(v).decode() for k, v in secret["data"].items()}
    assert decoded == {
        "TICKRUN_S3_ACCESS_KEY": "minio-user",
        "TICKRUN_S3_SECRET_KEY": S3_SECRET,
        "TICKRUN_TOKEN": TOKEN,
    }
    assert secret["metadata"]["name"] == jm.secret_name(UID) == f"tickrun-run-{UID[:16]}-env"
    patch = jm.owned_by_job("tickrun-run-x", "job-uid")
    assert patch["metadata"]["ownerReferences"][0]["kind"] == "Job"
    _values, none = pod_env(_settings(tmp_path, token=None, s3=S3Settings()), "s3://b")
    assert none == {}


def test_pods_reach_the_controller_and_s3_where_the_settings_say(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    local = _settings(tmp_path, controller_url="http://127.0.0.1:18070")
    values, _ = pod_env(local, "s3://runs/tickrun")
    assert values["TICKRUN_CONTROLLER_URL"] == "http://127.0.0.1:18070"
    monkeypatch.setenv("TICKRUN_K8S_JOB_CONTROLLER_URL", "http://tickrun.tickrun.svc:8070")
    monkeypatch.setenv("TICKRUN_K8S_JOB_S3_ENDPOINT", "https://minio.data.svc:9000")
    values, _ = pod_env(local, "s3://runs/tickrun")
    assert values["TICKRUN_CONTROLLER_URL"] == "http://tickrun.tickrun.svc:8070"
    assert values["TICKRUN_S3_ENDPOINT"] == "https://minio.data.svc:9000"


def test_the_runner_refuses_what_pods_cannot_reach(tmp_path: Path) -> None:
    ok = _settings(tmp_path)
    assert check_request(_request(), ok) == "s3://runs/tickrun"
    with pytest.raises(BadRequestError, match="TICKRUN_CONTROLLER_URL"):
        check_request(_request(), _settings(tmp_path, controller_url=None))
    with pytest.raises(BadRequestError, match="local path the pods cannot reach"):
        check_request(_request(artifact_path=str(tmp_path / "arts")), ok)
    with pytest.raises(BadRequestError, match="local path the pods cannot reach"):
        check_request(
            _request(artifact_path=None), _settings(tmp_path, artifact_path=str(tmp_path))
        )
    with pytest.raises(BadRequestError, match="input"):
        check_request(_request(inputs={"bars": "/data/bars.csv"}), ok)
    assert check_request(_request(inputs={"bars": "s3://market/bars.csv"}), ok)
    # A registered model resolves in the pod through the controller's registry.
    assert check_request(_request(inputs={"model": "models:/btc-updown@champion"}), ok)


def test_names_and_labels_are_valid_for_any_run_uid() -> None:
    odd = "Run_" + "A" * 60  # 64 characters, a capital and an underscore: a valid run uid
    request = _request(uid=odd)
    assert jm.job_name(odd) == "tickrun-run-run-aaaaaaaaaaaa"
    assert len(jm.secret_name(odd)) <= 63
    assert jm.labels(request)[jm.LABEL_RUN] == odd[:63]


def test_job_status_reading() -> None:
    assert finished({"status": {}}) is None
    done = {"status": {"conditions": [{"type": "Complete", "status": "True"}]}}
    assert finished(done) == "Complete"
    failed = {
        "status": {
            "conditions": [
                {"type": "FailureTarget", "status": "True"},
                {"type": "Failed", "status": "True", "reason": "BackoffLimitExceeded"},
            ]
        }
    }
    assert (finished(failed) or "").startswith("Failed: BackoffLimitExceeded")
