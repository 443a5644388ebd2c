from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
import yaml

from tickrun.functions.errors import HubError
from tickrun.functions.spec import load_spec
from tickrun.hub import Hub, import_function

from .conftest import write_item


@pytest.fixture
def tracked(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    monkeypatch.setenv("TICKRUN_HOME", str(tmp_path / "home"))
    for var in ("TICKRUN_ARTIFACT_PATH", "TICKRUN_DB_URL", "TICKRUN_CONTROLLER_URL"):
        monkeypatch.delenv(var, raising=False)
    return tmp_path


def test_run_records_the_resolved_version(private_hub: Path, tracked: Path) -> None:
    fn = Hub([private_hub], bundled=False).import_function("hub://toy:1.2")
    run = fn.run(params={"x": 5}, labels={"team": "quant"}, progress=False)
    assert run.state == "completed", run.error
    assert run.results["version"] == "1.2.3" and run.results["x"] == 5
    labels = run.record.labels
    assert labels["hub.item"] == "toy" and labels["hub.version"] == "1.2.3"
    assert labels["hub.source"] == str(private_hub) and labels["team"] == "quant"
    assert labels["hub.handler"] == "main"


def test_unknown_parameters_and_handlers_are_refused(private_hub: Path) -> None:
    fn = Hub([private_hub], bundled=False).import_function("hub://toy")
    with pytest.raises(HubError, match=r"has no parameter 'y'; parameters: x"):
        fn.run(params={"y": 1})
    with pytest.raises(HubError, match="handler 'nope'; handlers: main"):
        fn.run("nope")
    with pytest.raises(HubError, match="job item"):
        fn.deploy()


def test_required_inputs_are_checked_before_running() -> None:
    fn = import_function("hub://auto_trainer:1.0.0")
    with pytest.raises(HubError, match="train\\(\\) needs dataset"):
        fn.run("train", params={"model_class": "LogisticRegression"})


def test_extra_mlrun_prefixes_pass_through_to_the_handler() -> None:
    from tickrun.hub.function import check_arguments

    spec = import_function("hub://auto_trainer").spec
    name, handler = spec.handler_spec("train")
    check_arguments(spec, name, handler, {"CLASS_C": 1.0}, {"dataset": "x.csv"})


def test_serving_item_exports_a_valid_function(tmp_path: Path) -> None:
    fn = import_function("hub://model_server")
    with pytest.raises(HubError, match="needs env MODEL_URI"):
        fn.function_config()
    folder = fn.export(tmp_path / "fn", env={"MODEL_URI": "/models/m.joblib"}, workers=2)
    spec = load_spec(folder / "function.yaml")
    assert spec.spec.handler == "model_server:handler"
    assert spec.spec.env_dict()["MODEL_URI"] == "/models/m.joblib"
    assert spec.spec.env_dict()["MODEL_NAME"] == "model"  # default from the item spec
    assert spec.spec.workers == 2
    raw = yaml.safe_load((folder / "function.yaml").read_text())
    assert raw["metadata"]["labels"]["tickrun.io/hub-version"] == fn.version
    assert (folder / "model_server.py").read_bytes() == fn.code_path.read_bytes()


def test_handler_lookup_and_module_identity() -> None:
    fn = import_function("hub://market_features:1.1")
    import tickrun.hub.items.market_features.v1_1_0.market_features as direct

    assert fn.module() is direct  # a streaming handler can import the very same code
    assert fn.handler() is direct.featurize


def test_uri_fragment_picks_the_handler(private_hub: Path, item_writer) -> None:
    fn = import_function("hub://auto_trainer:1#evaluate")
    assert fn.handler().__name__ == "evaluate"
    assert fn.run_labels()["hub.handler"] == "evaluate"
    assert fn.run_labels("predict")["hub.handler"] == "predict"
    with pytest.raises(HubError, match="handler 'nope'; handlers: evaluate, predict, train"):
        import_function("hub://auto_trainer#nope")


def test_run_function_with_a_hub_uri_records_the_item(
    private_hub: Path, tracked: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from tickrun.functions.runs import run_function

    monkeypatch.setenv("TICKRUN_HUB_PATH", str(private_hub))
    run = run_function("hub://toy:1.2", params={"x": 2}, labels={"team": "quant"}, progress=False)
    assert run.state == "completed", run.error
    labels = run.record.labels
    assert labels["hub.item"] == "toy" and labels["hub.version"] == "1.2.3"
    assert labels["team"] == "quant"


def test_run_on_the_process_platform_records_the_item(
    private_hub: Path, tracked: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    import os

    monkeypatch.setenv("TICKRUN_HUB_PATH", str(private_hub))
    monkeypatch.delenv("TICKRUN_HUB_URL", raising=False)
    fn = import_function("hub://toy:1.2")
    assert fn.job_target("main") == "hub://toy:1.2.3#main"  # the exact version, by name
    run = fn.run(params={"x": 7}, labels={"team": "quant"}, runner="subprocess")
    assert run.state == "completed", run.error
    assert run.results == {"version": "1.2.3", "x": 7, "return": "1.2.3"}
    assert run.record.pid != os.getpid()  # it ran in another interpreter
    labels = run.record.labels
    assert labels["hub.item"] == "toy" and labels["hub.version"] == "1.2.3"
    assert labels["hub.source"] == str(private_hub) and labels["hub.handler"] == "main"
    assert labels["team"] == "quant"
    assert run.name == "toy-main"


def test_local_false_runs_a_hub_object_built_in_code_elsewhere(
    private_hub: Path, tracked: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    import os

    monkeypatch.delenv("TICKRUN_HUB_PATH", raising=False)
    monkeypatch.delenv("TICKRUN_HUB_URL", raising=False)
    fn = Hub([private_hub], bundled=False).import_function("hub://toy:1.0")
    # Not in the environment's hubs: the child gets the item's file, the labels by flag.
    assert fn.job_target("main") == f"{fn.code_path}:main"
    run = fn.run(params={"x": 3}, local=False)
    assert run.state == "completed", run.error
    assert run.results["version"] == "1.0.0" and run.results["x"] == 3
    assert run.record.pid != os.getpid()
    assert run.record.labels["hub.version"] == "1.0.0"
    assert run.record.labels["hub.source"] == str(private_hub)


def test_kubernetes_runner_gets_the_items_file_requirements_and_sweep(
    tmp_path: Path, tracked: Path
) -> None:
    from tickrun.functions.runs.plugins import JOB_RUNNERS, JobRequest, register, unregister

    write_item(tmp_path / "hub", "toy", "1.2.3", extra="requirements: [pandas>=2.1]\n")
    fn = Hub([tmp_path / "hub"], bundled=False).import_function("hub://toy:1.2")
    got: list[JobRequest] = []

    def launcher(request: JobRequest) -> int:
        got.append(request)
        return 1  # nothing recorded: run() says so

    register(JOB_RUNNERS, "kubernetes", launcher)
    try:
        with pytest.raises(HubError, match="kubernetes job exited with 1"):
            fn.run(runner="kubernetes", hyperparams={"x": [1, 2]}, parallel=2, timeout_s=900)
    finally:
        unregister(JOB_RUNNERS, "kubernetes")
    [request] = got
    # The Job's image is built from the item's folder: a FILE.py:handler target.
    assert request.target == f"{fn.code_path}:main"
    assert (request.runner, request.hyperparams, request.parallel, request.timeout_s) == (
        "kubernetes",
        {"x": [1, 2]},
        2,
        900,
    )
    assert request.labels["hub.item"] == "toy" and request.labels["hub.version"] == "1.2.3"
    assert request.requirements == ["pandas>=2.1"]  # built into the Job's image


def test_run_elsewhere_refuses_what_cannot_cross_processes(private_hub: Path) -> None:
    fn = Hub([private_hub], bundled=False).import_function("hub://toy")
    with pytest.raises(HubError, match="cannot hand db"):
        fn.run(runner="subprocess", db=object())
    # The job's options are checked before anything runs, with the request's own limits.
    with pytest.raises(HubError, match="greater than or equal to 1"):
        fn.run(runner="subprocess", parallel=0)
    with pytest.raises(HubError, match="Input should be 'grid', 'list', 'random' or 'optuna'"):
        fn.run(runner="subprocess", hyperparams={"x": [1]}, hyper_strategy="best")
    # platform= is the keyword's name before 0.2: still taken, with a warning.
    with pytest.warns(DeprecationWarning, match="runner"):
        with pytest.raises(HubError, match="must be a JSON value"):
            fn.run(params={"x": object()}, platform="process")


class FakeControllerClient:
    """Stands in for tickrun.controller.client.ControllerClient at the deploy seam."""

    instances: list[FakeControllerClient] = []

    def __init__(self, url: str = "http://controller.test:8070", token: str | None = None) -> None:
        self.url = url
        self.token = token
        self.calls: list[tuple[str, object]] = []
        FakeControllerClient.instances.append(self)

    @classmethod
    def from_env(cls, state_dir: str | None = None) -> FakeControllerClient:
        import os

        return cls(os.environ.get("TICKRUN_CONTROLLER_URL", "http://from-state-files:1"))

    def deploy(self, spec: Any, code_dir: Path | None, *, platform: str | None = None) -> dict:
        data = spec.to_yaml_dict()  # the hub hands over the parsed model
        self.calls.append(("deploy", (data, code_dir, platform)))
        name = data["metadata"]["name"]
        return {"function": {"name": name, "version": 3}, "build": {"id": "b1"}}

    def follow_build(self, build_id: str):  # type: ignore[no-untyped-def]
        yield "step 1/1"

    def get_build(self, build_id: str) -> dict:
        return {"id": build_id, "state": "succeeded", "message": ""}

    def wait_ready(self, name: str, *, version: int | None = None, timeout_s: float = 600) -> dict:
        self.calls.append(("wait_ready", (name, version)))
        return {"name": name, "state": "ready", "port": 41234}

    def invoke(self, name: str, **kw: object):  # type: ignore[no-untyped-def]
        from tickrun.controller.client import Invocation

        self.calls.append(("invoke", (name, kw["path"])))
        return Invocation(200, {}, b'{"predictions": [1]}')

    def delete_function(self, name: str) -> None:
        self.calls.append(("delete", name))


@pytest.fixture
def deploy_seam(monkeypatch: pytest.MonkeyPatch) -> list[Path]:
    """Fakes both ends: the controller client, and the local replica's start."""
    import tickrun.controller.client as client_mod
    from tickrun.hub.function import LocalDeployment

    FakeControllerClient.instances.clear()
    monkeypatch.setattr(client_mod, "ControllerClient", FakeControllerClient)
    started: list[Path] = []
    monkeypatch.setattr(LocalDeployment, "start", lambda self, **kw: started.append(self.directory))
    monkeypatch.delenv("TICKRUN_CONTROLLER_URL", raising=False)
    return started


def test_deploy_without_a_controller_starts_a_local_replica(
    deploy_seam: list[Path], tmp_path: Path
) -> None:
    from tickrun.hub.function import LocalDeployment

    fn = import_function("hub://model_server")
    server = fn.deploy(env={"MODEL_URI": "/m.joblib"}, directory=tmp_path / "fn")
    assert isinstance(server, LocalDeployment)
    assert deploy_seam == [tmp_path / "fn"]
    assert FakeControllerClient.instances == []


def test_deploy_goes_through_the_configured_controller(
    deploy_seam: list[Path], tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from tickrun.hub.function import ControllerDeployment

    monkeypatch.setenv("TICKRUN_CONTROLLER_URL", "http://ctl.test:8070")
    fn = import_function("hub://model_server")
    with fn.deploy(
        env={"MODEL_URI": "s3://models/m.joblib"}, directory=tmp_path / "fn", platform="process"
    ) as server:
        assert isinstance(server, ControllerDeployment)
        assert server.url == "http://ctl.test:8070/fn/model-server" and server.port == 41234
        assert server.invoke({"inputs": [[1.0]]}, path="/invocations") == {"predictions": [1]}
    assert deploy_seam == []  # no local replica
    (client,) = FakeControllerClient.instances
    kind, (spec, code_dir, platform) = client.calls[0]
    assert kind == "deploy" and platform == "process" and code_dir == tmp_path / "fn"
    assert spec["metadata"]["labels"]["tickrun.io/hub-version"] == fn.version
    assert {"name": "MODEL_URI", "value": "s3://models/m.joblib"} in spec["spec"]["env"]
    assert ("wait_ready", ("model-server", 3)) in client.calls
    assert client.calls[-1] == ("delete", "model-server")  # leaving `with` removes it


def test_deploy_path_can_be_forced_either_way(
    deploy_seam: list[Path], tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from tickrun.hub.function import ControllerDeployment, LocalDeployment

    monkeypatch.setenv("TICKRUN_CONTROLLER_URL", "http://ctl.test:8070")
    fn = import_function("hub://model_server")
    env = {"MODEL_URI": "/m.joblib"}
    local = fn.deploy(env=env, directory=tmp_path / "a", controller=False)
    assert isinstance(local, LocalDeployment)
    other = fn.deploy(env=env, directory=tmp_path / "b", controller="http://other:9")
    assert isinstance(other, ControllerDeployment) and other.url == "http://other:9/fn/model-server"
    with pytest.raises(HubError, match="controller assigns ports"):
        fn.deploy(env=env, directory=tmp_path / "c", port=8080)
    monkeypatch.delenv("TICKRUN_CONTROLLER_URL")
    with pytest.raises(HubError, match="needs a controller"):
        fn.deploy(env=env, directory=tmp_path / "d", platform="container")


@pytest.mark.parametrize(
    ("body", "content_type", "expected"),
    [
        (b"", "application/json", None),  # a handler that returned None
        (b'{"a": 1}', "application/json; charset=utf-8", {"a": 1}),
        (b"ready", "text/plain; charset=utf-8", "ready"),
        (b"[1, 2]", "", [1, 2]),
        (b"\x00\x01", "application/octet-stream", b"\x00\x01"),
    ],
)
def test_replies_decode_by_content_type(body: bytes, content_type: str, expected: Any) -> None:
    from tickrun.hub.deployments import decode_reply

    assert decode_reply(body, content_type) == expected
