"""Shared fixtures for hub tests: a private hub folder with several versions, a fake run
context for calling item handlers directly, and the real BTCUSDT hourly bars."""

from __future__ import annotations

import textwrap
from pathlib import Path
from typing import Any

import pandas as pd
import pytest

from tickrun.hub.sampledata import market_data

HOURLY = market_data()

# auto_trainer's train parameters under which two versions must give the same outputs.
AUTO_TRAINER_XGB = {
    "model_class": "xgboost.XGBClassifier",
    "CLASS_n_estimators": 30,
    "CLASS_max_depth": 3,
}
AUTO_TRAINER_LOGIT = {"model_class": "sklearn.linear_model.LogisticRegression", "scale": True}
same_outputs_cases = pytest.mark.parametrize(
    "params",
    [
        {**AUTO_TRAINER_LOGIT, "plots": False},
        {**AUTO_TRAINER_XGB, "plots": False},
        {**AUTO_TRAINER_LOGIT, "plots": False, "validation_size": 0.2},
        {**AUTO_TRAINER_XGB, "plots": False, "split": "random"},
        {**AUTO_TRAINER_XGB, "plots": True},
    ],
    ids=["logistic", "xgboost", "validation", "random-split", "plots"],
)


def write_item(
    root: Path,
    name: str,
    version: str,
    *,
    body: str | None = None,
    folder: str | None = None,
    extra: str = "",
) -> Path:
    target = root / name / (folder or "v" + version.replace(".", "_"))
    target.mkdir(parents=True)
    (target / "item.yaml").write_text(
        textwrap.dedent(f"""\
        name: {name}
        version: {version}
        description: test item {name} {version}
        module: code
        default_handler: main
        handlers:
          main:
            doc: returns its version
            parameters:
              - {{name: x, type: int, default: 1}}
        """)
        + extra
    )
    (target / "code.py").write_text(
        body
        or textwrap.dedent(f"""\
        VERSION = "{version}"

        def main(context, x=1):
            context.log_result("version", VERSION)
            context.log_result("x", x)
            return VERSION
        """)
    )
    return target


@pytest.fixture
def private_hub(tmp_path: Path) -> Path:
    root = tmp_path / "private-hub"
    for version in ("1.0.0", "1.2.0", "1.2.3", "2.0.0"):
        write_item(root, "toy", version)
    write_item(root, "other", "0.1.0", folder="0.1.0")  # dotted folders are allowed off-wheel
    return root


class FakeLogger:
    def __init__(self) -> None:
        self.records: list[tuple[str, dict[str, Any]]] = []

    def info_with(self, message: str, **kw: Any) -> None:
        self.records.append((message, kw))

    debug_with = warn_with = error_with = info_with


class FakeContext:
    """Records what a handler logs, the way the run context would store it."""

    def __init__(self) -> None:
        self.logger = FakeLogger()
        self.results: dict[str, Any] = {}
        self.artifacts: dict[str, dict[str, Any]] = {}
        self.datasets: dict[str, pd.DataFrame] = {}
        self.models: dict[str, dict[str, Any]] = {}
        self.labels: dict[str, str] = {}

    def log_result(self, key: str, value: Any) -> None:
        self.results[key] = value

    def log_results(self, values: dict[str, Any]) -> None:
        self.results.update(values)

    def set_label(self, key: str, value: str) -> None:
        self.labels[key] = value

    def log_artifact(self, key: str, body: Any = None, local_path: Any = None, **kw: Any) -> None:
        self.artifacts[key] = {"body": body, "local_path": local_path, **kw}

    def log_dataset(self, key: str, df: pd.DataFrame, **kw: Any) -> None:
        self.datasets[key] = df

    def log_model(self, key: str, model: Any, **kw: Any) -> None:
        self.models[key] = {"model": model, **kw}


class FrameItem:
    """A stand-in DataItem over an in-memory frame."""

    def __init__(self, df: pd.DataFrame, key: str = "data") -> None:
        self._df = df
        self.key = key
        self.url = f"memory://{key}"

    def as_df(self) -> pd.DataFrame:
        return self._df.copy()


@pytest.fixture
def fake_context() -> FakeContext:
    return FakeContext()


@pytest.fixture(scope="session")
def hourly_bars() -> pd.DataFrame:
    return pd.read_csv(HOURLY)


@pytest.fixture
def frame_item() -> type[FrameItem]:
    return FrameItem


@pytest.fixture
def item_writer() -> Any:
    return write_item
