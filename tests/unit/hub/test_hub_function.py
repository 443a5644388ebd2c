from __future__ import annotations

from pathlib import Path

import pytest
import yaml
from tickrun.functions.errors import HubError
from tickrun.functions.spec import load_spec
from tickrun.hub import Hub, import_function


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
