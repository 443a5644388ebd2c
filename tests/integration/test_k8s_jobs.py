"""``tickrun run … --runner kubernetes``: a sweep as one indexed Job, against a real control plane
(etcd, kube-apiserver, controller-manager, scheduler), a real controller (process platform, its
REST run DB) and a real MinIO.

kwok plays the nodes and does NOT run containers: its pod-complete stage marks a Job's pods
Succeeded without starting anything. So this test plays the node itself: it reads the Job's pod
template back from the API server and, for each index, runs the container's command on this
machine as a kubelet would — the env resolved from the Secrets it references (through the API),
``JOB_COMPLETION_INDEX`` set, ``/tmp`` an empty folder of its own, the image's code folder mapped
to the job's folder and the image's ``python`` to this interpreter. Nothing else of this
process's environment goes in, so the pod spec alone must be enough to run the iteration. One
index runs in the Job's own image instead (podman, with the pod's security context: read-only
root, tmpfs /tmp, its user, no capabilities). The iterations then report to the controller and
write to MinIO, and the launcher concludes.
"""

from __future__ import annotations

import base64
import json
import os
import signal
import subprocess
import sys
import tempfile
import time
import uuid
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import pytest
from kubernetes import client as k8s
from kubernetes.client.exceptions import ApiException

from tests.integration.test_controller_harness import TOKEN, ControllerProc, cleanup, wait_for
from tests.peers import MinioServer
from tests.peers.k8s import KubeControlPlane
from tests.support.k8s_controller import eventually, kube_namespace
from tickrun.controller.platforms.kubernetes import jobmanifests as jm
from tickrun.controller.platforms.kubernetes.manifests import CODE_DIR
from tickrun.functions.runs.db import HttpRunDB
from tickrun.functions.runs.records import RunState

pytestmark = [pytest.mark.k8s, pytest.mark.minio, pytest.mark.podman, pytest.mark.slow]

JOB = """\
import os
import time


def train(context, lr=0.1, depth=2):
    context.log_result("accuracy", round(0.5 + lr - 0.01 * depth, 4))
    context.log_result("index", os.environ.get("JOB_COMPLETION_INDEX"))
    context.log_artifact("notes", body=f"lr={lr} depth={depth}".encode())


def slow(context, lr=0.1):
    context.log_result("started", 1)
    time.sleep(120)
"""


@pytest.fixture
def namespace(kube: KubeControlPlane) -> Iterator[str]:
    with kube_namespace(kube, "tickrun-jobs") as name:
        yield name


@pytest.fixture
def tracking(minio_server: MinioServer, tmp_path: Path) -> dict[str, str]:
    """What the controller and the launcher share: the S3 store (its keys) and a home."""
    bucket = f"runs-{uuid.uuid4().hex[:8]}"
    minio_server.client().make_bucket(bucket)
    return {
        "TICKRUN_ARTIFACT_PATH": f"s3://{bucket}/tickrun",
        "TICKRUN_S3_ENDPOINT": minio_server.endpoint,
        "TICKRUN_S3_ACCESS_KEY": minio_server.access_key,
        "TICKRUN_S3_SECRET_KEY": minio_server.secret_key,
        "TICKRUN_S3_SECURE": "false",
        "TICKRUN_FLUSH_INTERVAL_S": "0.2",
    }


@pytest.fixture
def controller(tracking: dict[str, str], tmp_path: Path) -> Iterator[ControllerProc]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("TICKRUN_")}
    env.update(tracking, TICKRUN_HOME=str(tmp_path / "controller-home"))
    ctl = ControllerProc(tmp_path / "state", env).start()
    try:
        yield ctl
    finally:
        cleanup(ctl)


def _launcher_env(
    tracking: dict[str, str],
    ctl: ControllerProc,
    kube: KubeControlPlane,
    namespace: str,
    podman_env: dict[str, str],
    tmp_path: Path,
) -> dict[str, str]:
    env = dict(podman_env)
    for var in ("TICKRUN_DB_URL", "TICKRUN_ARTIFACT_STORES"):
        env.pop(var, None)
    env.update(tracking)
    env.update(
        TICKRUN_HOME=str(tmp_path / "launcher-home"),
        TICKRUN_STATE_DIR=str(tmp_path / "builds"),
        TICKRUN_CONTROLLER_URL=ctl.url,
        TICKRUN_TOKEN=TOKEN,
        TICKRUN_KUBECONFIG=str(kube.kubeconfig_path),
        TICKRUN_K8S_NAMESPACE=namespace,
    )
    return env


def _launch(env: dict[str, str], target: str, *args: str) -> subprocess.Popen[str]:
    """``tickrun run <target> --runner kubernetes <args>``, its output piped."""
    cmd = [sys.executable, "-m", "tickrun", "run", target, "--runner", "kubernetes", *args]
    return subprocess.Popen(cmd, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)


def _job_file(tmp_path: Path) -> Path:
    src = tmp_path / "src"
    src.mkdir()
    (src / "job.py").write_text(JOB)
    return src / "job.py"


def _read_job(kube: KubeControlPlane, namespace: str, uid: str) -> dict[str, Any] | None:
    with kube.admin_client() as api:
        try:
            resp = k8s.BatchV1Api(api).read_namespaced_job(
                jm.job_name(uid), namespace, _preload_content=False
            )
        except ApiException as exc:
            if exc.status == 404:
                return None
            raise
        job: dict[str, Any] = json.loads(resp.data)
        return job


def _secret_owners(kube: KubeControlPlane, namespace: str, uid: str) -> list[str] | None:
    """The kinds owning the run's Secret, None until the launcher handed it to its Job."""
    with kube.admin_client() as api:
        secret = k8s.CoreV1Api(api).read_namespaced_secret(jm.secret_name(uid), namespace)
    return [o.kind for o in secret.metadata.owner_references or []] or None


def _wait_job(
    kube: KubeControlPlane, namespace: str, uid: str, launcher: subprocess.Popen[str]
) -> dict[str, Any]:
    deadline = time.monotonic() + 900  # a cold image build
    while time.monotonic() < deadline:
        job = _read_job(kube, namespace, uid)
        if job is not None:
            return job
        if launcher.poll() is not None:
            out, err = launcher.communicate()
            pytest.fail(f"the launcher exited {launcher.returncode} without a Job:\n{err[-4000:]}")
        time.sleep(0.5)
    pytest.fail("no Job appeared")


def _pod_env(kube: KubeControlPlane, namespace: str, container: dict[str, Any]) -> dict[str, str]:
    """The container's env as a kubelet resolves it: values, and secretKeyRefs via the API."""
    env: dict[str, str] = {}
    with kube.admin_client() as api:
        core = k8s.CoreV1Api(api)
        for e in container.get("env") or []:
            if "value" in e:
                env[e["name"]] = e["value"]
                continue
            ref = e["valueFrom"]["secretKeyRef"]
            secret = core.read_namespaced_secret(ref["name"], namespace)
            env[e["name"]] = base64.b64decode(secret.data[ref["key"]]).decode()
    return env


def _node_command(
    kube: KubeControlPlane, namespace: str, job: dict[str, Any], code_dir: Path, index: int | None
) -> tuple[list[str], dict[str, str]]:
    """The command and env of one pod of ``job``, as this machine runs it (module docstring);
    its working folder is ``code_dir``, the image's WORKDIR."""
    [container] = job["spec"]["template"]["spec"]["containers"]
    pod_tmp = tempfile.mkdtemp(prefix="pod-tmp-")  # the pod's emptyDir on /tmp
    env = {
        k: (pod_tmp + v[len("/tmp") :] if v.startswith("/tmp") else v)
        for k, v in _pod_env(kube, namespace, container).items()
    }
    env["PATH"] = os.environ["PATH"]  # the image's ENV: its venv's python, here ours
    if index is not None:
        env["JOB_COMPLETION_INDEX"] = str(index)
    python, *args = container["command"]
    assert python == "python"
    return [sys.executable, *(a.replace(CODE_DIR, str(code_dir)) for a in args)], env


def _play_node(
    kube: KubeControlPlane, namespace: str, job: dict[str, Any], code_dir: Path, index: int | None
) -> subprocess.CompletedProcess[str]:
    """Run one pod of ``job`` to its end here, as a node would."""
    cmd, env = _node_command(kube, namespace, job, code_dir, index)
    return subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=300, cwd=code_dir)


def _run_in_image(
    kube: KubeControlPlane,
    namespace: str,
    job: dict[str, Any],
    index: int,
    podman_env: dict[str, str],
) -> subprocess.CompletedProcess[str]:
    """Run one pod of ``job`` in its image with podman, under the pod's security context
    (read-only root, a tmpfs on the emptyDir's /tmp, its user, no capabilities); the values
    go by name, as a kubelet hands a container its env."""
    pod = job["spec"]["template"]["spec"]
    [container] = pod["containers"]
    sc = container["securityContext"]
    assert sc["readOnlyRootFilesystem"] and sc["capabilities"] == {"drop": ["ALL"]}
    env = {**_pod_env(kube, namespace, container), "JOB_COMPLETION_INDEX": str(index)}
    cmd = [
        "podman", "run", "--rm", "--read-only", "--tmpfs", "/tmp", "--network", "host",
        "--user", f"{sc['runAsUser']}:{sc['runAsGroup']}", "--cap-drop", "ALL",
        "--security-opt", "no-new-privileges",
    ]  # fmt: skip
    for name in env:
        cmd += ["-e", name]
    cmd += [container["image"], *container["command"]]
    return subprocess.run(
        cmd, env={**podman_env, **env}, capture_output=True, text=True, timeout=300
    )


def test_sweep_runs_as_an_indexed_job_reporting_to_the_controller_and_minio(
    kube: KubeControlPlane,
    namespace: str,
    controller: ControllerProc,
    tracking: dict[str, str],
    minio_server: MinioServer,
    podman_env: dict[str, str],
    tmp_path: Path,
) -> None:
    job_file = _job_file(tmp_path)
    uid = uuid.uuid4().hex
    env = _launcher_env(tracking, controller, kube, namespace, podman_env, tmp_path)
    t0 = time.monotonic()
    launcher = _launch(
        env, f"{job_file}:train", "--uid", uid, "--project", "desk",
        "--hyper", "lr=0.1,0.3,0.2", "--hyper", "depth=2,4",
        "--selector", "max.accuracy", "--parallel", "2", "--json",
    )  # fmt: skip
    try:
        job = _wait_job(kube, namespace, uid, launcher)
        created_s = time.monotonic() - t0
        # --- the Job as the API server has it ----------------------------------------------
        spec = job["spec"]
        assert spec["completionMode"] == "Indexed"
        assert (spec["completions"], spec["parallelism"]) == (6, 2)
        assert spec["backoffLimitPerIndex"] == 1
        assert job["metadata"]["labels"][jm.LABEL_RUN] == uid
        pod = spec["template"]["spec"]
        assert pod["restartPolicy"] == "Never"
        [container] = pod["containers"]
        assert container["image"].startswith("localhost/tickrun/job-")
        assert container["securityContext"]["readOnlyRootFilesystem"] is True
        refs = {
            e["name"]: e["valueFrom"]["secretKeyRef"] for e in container["env"] if "valueFrom" in e
        }
        assert set(refs) == {"TICKRUN_TOKEN", "TICKRUN_S3_ACCESS_KEY", "TICKRUN_S3_SECRET_KEY"}
        assert {r["name"] for r in refs.values()} == {jm.secret_name(uid)}
        # The run's Secret belongs to its Job: collected with it. Checked while the Job is
        # there: a launcher whose iterations all recorded their end deletes the Job and the
        # Secret itself when kwok has not marked the Job Complete yet.
        assert eventually(lambda: _secret_owners(kube, namespace, uid), "owned Secret") == ["Job"]
        text = json.dumps(job)
        assert TOKEN not in text and minio_server.secret_key not in text
        # The run and all six iterations are in the controller before any pod runs.
        db = HttpRunDB(controller.url, TOKEN)
        its = sorted(db.list_runs(None, uid=uid, limit=100), key=lambda r: r.iteration)
        assert [r.iteration for r in its] == list(range(7))
        assert its[0].state is RunState.RUNNING
        assert {r.state for r in its[1:]} == {RunState.CREATED}

        # --- play the node: every index, two at a time (the Job's parallelism); index 0 in
        # the Job's image under the pod's security context, the others on this machine -----
        def play(i: int) -> subprocess.CompletedProcess[str]:
            if i == 0:
                return _run_in_image(kube, namespace, job, i, podman_env)
            return _play_node(kube, namespace, job, job_file.parent, i)

        t_play = time.monotonic()
        with ThreadPoolExecutor(spec["parallelism"]) as pool:
            pods = list(pool.map(play, range(spec["completions"])))
        play_s = time.monotonic() - t_play
        for i, p in enumerate(pods):
            assert p.returncode == 0, f"index {i}: {p.stderr[-3000:]}"
        out, err = launcher.communicate(timeout=300)
    finally:
        if launcher.poll() is None:
            launcher.send_signal(signal.SIGKILL)
            launcher.communicate()
    total_s = time.monotonic() - t0
    assert launcher.returncode == 0, err[-4000:]
    print(
        f"\nkubernetes sweep: Job created {created_s:.1f} s after launch (image build included); "
        f"6 indexes played in {play_s:.1f} s; launch → concluded {total_s:.1f} s"
    )
    assert f"run {uid} started (kubernetes, job {jm.job_name(uid)}" in err
    assert "[6/6] iteration" in err
    shown = json.loads(out[out.index("{") :])
    assert shown["state"] == "completed"

    # --- the controller's run DB: every iteration from its own pod, the best one chosen --------
    db = HttpRunDB(controller.url, TOKEN)
    parent = db.get_run(uid)
    assert parent.state is RunState.COMPLETED
    assert parent.results["best_iteration"] == 3  # lr=0.3 depth=2 (grid: lr outer, depth inner)
    assert parent.results["accuracy"] == pytest.approx(0.78)
    children = sorted(
        (r for r in db.list_runs(None, uid=uid, limit=100) if r.iteration),
        key=lambda r: r.iteration,
    )
    assert [c.state for c in children] == [RunState.COMPLETED] * 6
    assert [c.results["index"] for c in children] == [str(i) for i in range(6)]
    assert children[0].pid == 1  # index 0 ran as its container's first process, as in a pod
    assert [(c.params["lr"], c.params["depth"]) for c in children] == [
        (0.1, 2), (0.1, 4), (0.3, 2), (0.3, 4), (0.2, 2), (0.2, 4),
    ]  # fmt: skip
    # --- their artifacts are in MinIO, where the records point ---------------------------------
    bucket = tracking["TICKRUN_ARTIFACT_PATH"][len("s3://") :].split("/", 1)[0]
    arts = db.list_artifacts("desk", uid=uid)
    notes = {a.iteration: a for a in arts if a.key == "notes"}
    assert set(notes) == set(range(7))  # each iteration's, and the winner's on the parent
    assert notes[0].meta["from_iteration"] == 3
    obj = minio_server.client().get_object(bucket, notes[3].target.split("/", 3)[3])
    try:
        assert obj.read() == b"lr=0.3 depth=2"
    finally:
        obj.close()
        obj.release_conn()
    assert any(a.key == "iteration_results" and a.iteration == 0 for a in arts)


def test_sigterm_deletes_the_job_and_aborts_the_run(
    kube: KubeControlPlane,
    namespace: str,
    controller: ControllerProc,
    tracking: dict[str, str],
    podman_env: dict[str, str],
    tmp_path: Path,
) -> None:
    job_file = _job_file(tmp_path)
    uid = uuid.uuid4().hex
    env = _launcher_env(tracking, controller, kube, namespace, podman_env, tmp_path)
    launcher = _launch(env, f"{job_file}:slow", "--uid", uid, "--hyper", "lr=0.1,0.2,0.3")
    procs = [launcher]
    try:
        job = _wait_job(kube, namespace, uid, launcher)
        # Index 0 runs (here, as the node would); the others never start.
        cmd, pod_env = _node_command(kube, namespace, job, job_file.parent, 0)
        pod = subprocess.Popen(
            cmd,
            env=pod_env,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
            cwd=job_file.parent,
        )
        procs.append(pod)
        db = HttpRunDB(controller.url, TOKEN)
        wait_for(lambda: db.get_run(uid, 1).results.get("started") == 1, 60, "iteration 1 to run")
        launcher.send_signal(signal.SIGTERM)
        _out, err = launcher.communicate(timeout=120)
        # The kubelet would SIGTERM the deleted Job's pod: so does this node.
        pod.send_signal(signal.SIGTERM)
        pod.communicate(timeout=60)
    finally:
        for proc in procs:
            if proc.poll() is None:
                proc.kill()
                proc.communicate()
    assert launcher.returncode == 128 + signal.SIGTERM, err[-3000:]
    assert "deleting job" in err
    wait_for(lambda: _read_job(kube, namespace, uid) is None, 60, "the Job to be deleted")
    runs = sorted(db.list_runs(None, uid=uid, limit=10), key=lambda r: r.iteration)
    assert [r.state for r in runs] == [RunState.ABORTED] * 4
    assert runs[1].results["started"] == 1  # what the running iteration had written stays
    assert pod.returncode == 130


def test_plain_run_is_a_job_of_one_and_local_artifacts_are_refused(
    kube: KubeControlPlane,
    namespace: str,
    controller: ControllerProc,
    tracking: dict[str, str],
    podman_env: dict[str, str],
    tmp_path: Path,
) -> None:
    job_file = _job_file(tmp_path)
    env = _launcher_env(tracking, controller, kube, namespace, podman_env, tmp_path)
    refused = subprocess.run(
        [
            sys.executable, "-m", "tickrun", "run", f"{job_file}:train", "--runner", "kubernetes",
            "--artifact-path", str(tmp_path / "arts"),
        ],
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
    )  # fmt: skip
    assert refused.returncode == 2
    assert "local path the pods cannot reach" in refused.stderr
    assert "Traceback" not in refused.stderr
    with kube.admin_client() as api:
        assert k8s.BatchV1Api(api).list_namespaced_job(namespace).items == []

    uid = uuid.uuid4().hex
    launcher = _launch(env, f"{job_file}:train", "--uid", uid, "--param", "lr=0.25")
    try:
        job = _wait_job(kube, namespace, uid, launcher)
        spec = job["spec"]
        assert spec["completionMode"] == "NonIndexed"
        assert (spec["completions"], spec["parallelism"], spec["backoffLimit"]) == (1, 1, 1)
        # A NonIndexed Job's pod has no index: the node sets none.
        pod = _play_node(kube, namespace, job, job_file.parent, None)
        assert pod.returncode == 0, pod.stderr[-3000:]
        out, err = launcher.communicate(timeout=120)
    finally:
        if launcher.poll() is None:
            launcher.kill()
            launcher.communicate()
    assert launcher.returncode == 0, err[-3000:]
    assert f"run {uid}" in out and "state=completed" in out
    run = HttpRunDB(controller.url, TOKEN).get_run(uid)
    assert run.state is RunState.COMPLETED
    assert run.results["accuracy"] == pytest.approx(0.73) and run.results["index"] is None
    assert run.iteration == 0 and run.params == {"lr": 0.25}
