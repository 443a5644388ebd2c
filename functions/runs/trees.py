"""A one-row scorer for XGBoost tree ensembles, in numpy.

XGBoost's ``inplace_predict`` costs ~200 µs for a single row, almost all of it per-call set-up
(proxy matrix, thread dispatch, output buffers); walking 200 depth-3 trees is a few hundred
comparisons. A model server answering one row per request spends its time there, so the trees
are flattened into node arrays and every tree is walked at once: one numpy step per tree level.

Only what can be checked is compiled: numeric splits, one output group (binary logistic or an
identity-link regression), no categorical features. :func:`compile_xgboost_row` checks the
scorer against the model's own ``predict``/``predict_proba`` on probe rows and returns ``None``
when anything differs, so a caller simply keeps XGBoost for models it does not cover.
"""

from __future__ import annotations

import json
import math
from collections.abc import Callable, Sequence
from typing import Any

import numpy as np

RowScorer = Callable[[Sequence[Any]], tuple[Any, float | None]]

# Objectives whose prediction is the raw margin (identity link).
_IDENTITY = frozenset({"reg:squarederror", "reg:absoluteerror", "reg:pseudohubererror"})
_LOGISTIC = frozenset({"binary:logistic"})
PROBE_ROWS = 512


class NotCompilable(ValueError):
    """The model uses something the numpy walk does not reproduce."""


def _base_margin(params: dict[str, Any], objective: str) -> float:
    raw = str(params.get("base_score", "0.5")).strip("[]")
    values = [float(v) for v in raw.split(",") if v.strip()]
    if len(values) != 1:
        raise NotCompilable("several base scores")
    base = values[0]
    if objective in _LOGISTIC:
        if not 0.0 < base < 1.0:
            raise NotCompilable("base score outside (0, 1)")
        return math.log(base / (1.0 - base))  # stored as a probability, summed as a margin
    return base


def flatten(booster: Any) -> tuple[dict[str, np.ndarray], int, float, str]:
    """(node arrays, depth, base margin, objective) of a booster's trees, all in one index
    space; a leaf points at itself so the walk can run a fixed number of steps."""
    model = json.loads(booster.save_raw("json"))
    learner = model["learner"]
    objective = learner["objective"]["name"]
    if objective not in _IDENTITY | _LOGISTIC:
        raise NotCompilable(f"objective {objective}")
    params = learner["learner_model_param"]
    if int(params.get("num_class", "0")) > 1 or int(params.get("num_target", "1")) != 1:
        raise NotCompilable("more than one output group")
    gbm = learner["gradient_booster"]
    if gbm.get("name") != "gbtree":
        raise NotCompilable(f"booster {gbm.get('name')}")
    trees = gbm["model"]["trees"]
    if not trees:
        raise NotCompilable("no trees")
    feat: list[int] = []
    thr: list[float] = []
    left: list[int] = []
    right: list[int] = []
    value: list[float] = []
    roots: list[int] = []
    depth = 0
    for tree in trees:
        if any(tree.get("split_type", [])) or tree.get("categories"):
            raise NotCompilable("categorical splits")
        offset = len(feat)
        roots.append(offset)
        lc, rc = tree["left_children"], tree["right_children"]
        cond, idx = tree["split_conditions"], tree["split_indices"]
        levels = [0] * len(lc)
        for n in range(len(lc)):
            if lc[n] == -1:  # a leaf: its value sits in split_conditions
                feat.append(0)
                thr.append(np.inf)
                left.append(offset + n)
                right.append(offset + n)
                value.append(cond[n])
            else:
                levels[lc[n]] = levels[rc[n]] = levels[n] + 1
                depth = max(depth, levels[n] + 1)
                feat.append(idx[n])
                thr.append(cond[n])
                left.append(offset + lc[n])
                right.append(offset + rc[n])
                value.append(0.0)
    arrays: dict[str, np.ndarray] = {
        "feat": np.asarray(feat, dtype=np.intp),
        "thr": np.asarray(thr, dtype=np.float32),
        # Row 0 is taken when the comparison is False (go right), row 1 when True (go left).
        "child": np.asarray([right, left], dtype=np.intp),
        "value": np.asarray(value, dtype=np.float64),
        "roots": np.asarray(roots, dtype=np.intp),
    }
    return arrays, depth, _base_margin(params, objective), objective


def _scorer(
    arrays: dict[str, np.ndarray],
    depth: int,
    base: float,
    objective: str,
    labels: list[Any] | None,
    n_features: int,
) -> RowScorer:
    feat, thr, child = arrays["feat"], arrays["thr"], arrays["child"]
    value, roots = arrays["value"], arrays["roots"]
    logistic = objective in _LOGISTIC

    def score(row: Sequence[Any]) -> tuple[Any, float | None]:
        # XGBoost compares in float32; so must we, or a value near a threshold goes astray.
        x = np.asarray(row, dtype=np.float32)
        if x.shape != (n_features,) or not np.isfinite(x).all():
            raise ValueError("feature values must be finite numbers (no NaN/inf)")
        idx = roots
        for _ in range(depth):
            idx = child[(x[feat[idx]] < thr[idx]).view(np.int8), idx]
        margin = float(value[idx].sum()) + base
        if not logistic:
            return margin, None
        p1 = (
            1.0 / (1.0 + math.exp(-margin)) if margin >= 0 else 1.0 - 1.0 / (1.0 + math.exp(margin))
        )
        if labels is None:
            return p1, None
        return labels[1] if p1 > 0.5 else labels[0], p1

    return score


def compile_xgboost_row(
    model: Any, n_features: int, probe: np.ndarray | None = None
) -> RowScorer | None:
    """A verified one-row scorer for an XGBoost scikit-learn model, or None.

    The scorer returns ``(prediction, P(last class) or None)``, the prediction being what
    ``model.predict`` answers for that row.
    """
    if not hasattr(model, "get_booster"):
        return None
    try:
        booster = model.get_booster()
        if getattr(model, "best_iteration", None) is not None and booster.num_boosted_rounds() != (
            model.best_iteration + 1
        ):
            return None  # early stopping: predict() uses a prefix of the trees
        arrays, depth, base, objective = flatten(booster)
    except (NotCompilable, KeyError, TypeError, ValueError, AttributeError):
        return None
    classes = getattr(model, "classes_", None)
    if classes is not None and len(classes) != 2:
        return None
    labels = np.asarray(classes).tolist() if classes is not None else None
    if (labels is not None) != (objective in _LOGISTIC):
        return None
    score = _scorer(arrays, depth, base, objective, labels, n_features)
    return score if _agrees(model, score, n_features, probe) else None


def _agrees(model: Any, score: RowScorer, n_features: int, probe: np.ndarray | None) -> bool:
    rng = np.random.default_rng(0)
    rows = rng.standard_normal((PROBE_ROWS, n_features))
    if probe is not None and len(probe):
        # Rows like the training data reach the deep branches random normals may miss.
        rows = np.vstack([rows, np.asarray(probe, dtype=np.float64)[:PROBE_ROWS]])
    try:
        expected = np.asarray(model.predict(rows)).tolist()
        got = [score(r) for r in rows.tolist()]
        if getattr(model, "classes_", None) is not None:
            if [g[0] for g in got] != expected:
                return False
            proba = np.asarray(model.predict_proba(rows))[:, -1]
            p1 = [np.nan if g[1] is None else g[1] for g in got]
            return bool(np.allclose(proba, p1, rtol=1e-5, atol=1e-6))
        return bool(np.allclose(expected, [g[0] for g in got], rtol=1e-5, atol=1e-5))
    except Exception:  # a model this walk does not understand: keep XGBoost
        return False
