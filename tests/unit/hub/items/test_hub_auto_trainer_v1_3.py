"""auto_trainer 1.3.0: the same model, metrics, split, artifacts and logged test set as 1.2.0,
with the test set logged on a helper thread while the metrics and figures are computed."""

from __future__ import annotations

import threading
from typing import Any

import numpy as np
import pandas as pd
import pytest
from sklearn.linear_model import LogisticRegression

from tests.unit.hub.conftest import AUTO_TRAINER_LOGIT, FakeContext, FrameItem, same_outputs_cases
from tickrun.hub import import_function
from tickrun.hub.sampledata import market_data

new = import_function("hub://auto_trainer:1.3.0").module()
old = import_function("hub://auto_trainer:1.2.0").module()
mf = import_function("hub://market_features:1").module()
HERE = __name__


class RecordingContext(FakeContext):
    """A FakeContext that also keeps each dataset's keyword arguments and the logging thread."""

    def __init__(self) -> None:
        super().__init__()
        self.dataset_kwargs: dict[str, dict[str, Any]] = {}
        self.dataset_threads: dict[str, str] = {}
        self.logged = threading.Event()

    def log_dataset(self, key: str, df: pd.DataFrame, **kw: Any) -> None:
        super().log_dataset(key, df, **kw)
        self.dataset_kwargs[key] = kw
        self.dataset_threads[key] = threading.current_thread().name
        self.logged.set()


class FailingLog(RecordingContext):
    def log_dataset(self, key: str, df: pd.DataFrame, **kw: Any) -> None:
        raise OSError("the store is full")


# The contexts of the runs so far: the estimators below reach the current one through it.
CONTEXTS: list[RecordingContext] = []


# Estimators the tests name by import path (model_class), as users name theirs.
class PredictsWhileLogged(LogisticRegression):
    """Predicts only once the test set has been logged: a metric computed before the logging
    started (1.2's order) would wait forever, so it gives up after 10 s and says so."""

    def predict(self, x: Any) -> Any:
        if not CONTEXTS[-1].logged.wait(10):
            raise AssertionError("the test set was not logged while the metrics were computed")
        return super().predict(x)


class FailingFit(LogisticRegression):
    def fit(self, x: Any, y: Any, **kw: Any) -> FailingFit:
        raise ValueError("the fit diverged")


@pytest.fixture(scope="module")
def feats() -> pd.DataFrame:
    return mf.compute_features(pd.read_csv(market_data()).iloc[-6000:].reset_index(drop=True))


def _train(
    module: Any, df: pd.DataFrame, context: RecordingContext | None = None, **params: Any
) -> RecordingContext:
    context = context or RecordingContext()
    CONTEXTS.append(context)
    module.train(context, dataset=FrameItem(df), **params)
    return context


@same_outputs_cases
def test_the_same_results_model_and_artifacts_as_1_2(feats: pd.DataFrame, params: Any) -> None:
    a, b = _train(old, feats, **params), _train(new, feats, **params)
    assert a.results == b.results  # the one precision/recall/F1 call gives the same floats
    assert "auc" in b.results and "baseline_log_loss" in b.results
    x = feats[a.models["model"]["feature_names"]]
    np.testing.assert_array_equal(
        a.models["model"]["model"].predict_proba(x), b.models["model"]["model"].predict_proba(x)
    )
    assert {k: v for k, v in b.models["model"].items() if k != "model"} == {
        k: v for k, v in a.models["model"].items() if k != "model"
    }
    pd.testing.assert_frame_equal(a.datasets["test_set"], b.datasets["test_set"])
    assert a.dataset_kwargs == b.dataset_kwargs  # format and metadata
    assert set(a.artifacts) == set(b.artifacts)
    assert b.dataset_threads["test_set"].startswith("auto_trainer-test-set")


def test_the_test_set_is_logged_while_the_metrics_are_computed(feats: pd.DataFrame) -> None:
    context = _train(new, feats, model_class=f"{HERE}.PredictsWhileLogged", scale=True, plots=False)
    assert "model" in context.models and "auc" in context.results
    assert len(context.datasets["test_set"]) == round(len(feats) * 0.2)


def test_a_failed_test_set_log_fails_the_run_once_the_fit_is_done(feats: pd.DataFrame) -> None:
    with pytest.raises(OSError, match="the store is full"):
        _train(new, feats, FailingLog(), **AUTO_TRAINER_LOGIT, plots=False)
    assert not CONTEXTS[-1].models and not CONTEXTS[-1].results, "nothing logged after it"


def test_a_failed_fit_raises_its_own_error_and_logs_nothing(feats: pd.DataFrame) -> None:
    with pytest.raises(ValueError, match="the fit diverged"):
        _train(new, feats, model_class=f"{HERE}.FailingFit", plots=False)
    assert not CONTEXTS[-1].datasets and not CONTEXTS[-1].models and not CONTEXTS[-1].results
    assert not [t for t in threading.enumerate() if t.name.startswith("auto_trainer-test-set")]
