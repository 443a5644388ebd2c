"""model_monitor 1.1.0: the drift statistics, pure functions over arrays and frames.

- PSI (population stability index) over bins cut at the reference's quantiles: the inner edges
  are the reference quantiles at 1/bins … (bins-1)/bins, deduplicated (a feature with many ties
  gets fewer bins), the outer bins open-ended; a value goes in bin i when
  ``edges[i-1] < x <= edges[i]``. With p_i, q_i the reference and current fractions per bin,
  ``PSI = Σ (q_i - p_i) · ln(q_i / p_i)``, where a fraction of an empty bin is replaced by
  ``epsilon`` (default :data:`PSI_EPSILON` = 1e-4) so the log stays finite; fractions are not
  renormalised after that (the usual convention, and what the hand tests compute).
- KS: scipy's two-sample Kolmogorov-Smirnov statistic and p-value (``ks_2samp``, exact for
  small samples, asymptotic otherwise).
- A feature is tested at ``ks_alpha / m`` (Bonferroni over the m features compared) unless
  ``correction="none"``; which evidence makes it "drifted" is the ``rule``: ``both`` (default:
  PSI ≥ threshold AND the KS test rejects — a material shift that is not sampling noise; KS
  alone rejects trivial shifts of large windows, PSI alone is noisy on small ones), ``any``,
  ``psi`` or ``ks``.
- ``autocorrelation=True`` (the monitor job's default): the KS p-value uses each sample's
  effective size under AR(1), ``n (1 - rho) / (1 + rho)``, as rolling features of hourly bars
  are far from independent draws.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Any

import numpy as np
import pandas as pd

PSI_EPSILON = 1e-4
RULES = ("both", "any", "psi", "ks")
CORRECTIONS = ("bonferroni", "none")


def finite(values: Any) -> np.ndarray:
    """The finite values of ``values`` as float64 (NaN and ±inf dropped)."""
    arr = np.asarray(values, dtype=np.float64).ravel()
    return arr[np.isfinite(arr)]


def quantile_edges(reference: Any, bins: int = 10) -> np.ndarray:
    """Inner bin edges: the reference's quantiles at k/bins, k = 1 … bins-1, deduplicated."""
    ref = finite(reference)
    if ref.size == 0:
        raise ValueError("the reference has no finite values")
    if bins < 2:
        raise ValueError(f"bins must be >= 2, not {bins}")
    return np.unique(np.quantile(ref, np.linspace(0.0, 1.0, bins + 1)[1:-1]))


def bin_fractions(values: Any, edges: np.ndarray) -> np.ndarray:
    """Fraction of the finite ``values`` per bin (len(edges) + 1 bins, right-closed)."""
    arr = finite(values)
    if arr.size == 0:
        raise ValueError("no finite values to bin")
    counts = np.bincount(np.searchsorted(edges, arr, side="left"), minlength=len(edges) + 1)
    return counts / arr.size


def psi_from_fractions(p: Any, q: Any, epsilon: float = PSI_EPSILON) -> float:
    """Σ (q - p) ln(q / p), empty fractions replaced by ``epsilon``."""
    pa = np.maximum(np.asarray(p, dtype=np.float64), epsilon)
    qa = np.maximum(np.asarray(q, dtype=np.float64), epsilon)
    return float(np.sum((qa - pa) * np.log(qa / pa)))


def psi(reference: Any, current: Any, bins: int = 10, epsilon: float = PSI_EPSILON) -> float:
    """PSI of ``current`` against ``reference`` over the reference's quantile bins."""
    edges = quantile_edges(reference, bins)
    return psi_from_fractions(
        bin_fractions(reference, edges), bin_fractions(current, edges), epsilon
    )


def ks(reference: Any, current: Any) -> tuple[float, float]:
    """(statistic, two-sided p-value) of the two-sample KS test on the finite values."""
    from scipy.stats import ks_2samp

    res = ks_2samp(finite(reference), finite(current))
    return float(res.statistic), float(res.pvalue)


def effective_size(values: Any) -> float:
    """Kish's effective sample size of a series in time order under AR(1):
    ``n (1 - rho) / (1 + rho)`` with rho its lag-1 autocorrelation (only a positive rho
    shrinks it), at least 2. A 72-bar rolling volatility has rho ~0.99: a week of hourly
    values holds the information of a handful of independent draws, not 168."""
    arr = finite(values)
    n = arr.size
    if n < 3 or float(arr.std()) == 0.0:
        return float(n)
    rho = float(np.corrcoef(arr[:-1], arr[1:])[0, 1])
    if not math.isfinite(rho) or rho <= 0:
        return float(n)
    return max(2.0, min(float(n), n * (1.0 - rho) / (1.0 + rho)))


def ks_effective(reference: Any, current: Any) -> tuple[float, float]:
    """(statistic, p-value) of the two-sample KS test with each sample's effective size
    (:func:`effective_size`, the values in time order) in the asymptotic distribution: KS
    assumes independent draws, and autocorrelated windows reject it on no change at all."""
    from scipy.stats import kstwobign

    stat, _ = ks(reference, current)
    n, m = effective_size(reference), effective_size(current)
    en = math.sqrt(n * m / (n + m))
    return stat, float(kstwobign.sf(stat * en))


def bernoulli_psi(p: float, q: float, epsilon: float = PSI_EPSILON) -> float:
    """PSI between two 0/1 distributions with positive rates ``p`` (reference) and ``q``."""
    return psi_from_fractions([1.0 - p, p], [1.0 - q, q], epsilon)


def ks_level(alpha: float, tests: int, correction: str = "bonferroni") -> float:
    """The per-feature KS level: ``alpha / tests`` (Bonferroni) or ``alpha``."""
    if correction not in CORRECTIONS:
        raise ValueError(f"correction must be one of {CORRECTIONS}, not {correction!r}")
    return alpha / max(tests, 1) if correction == "bonferroni" else alpha


def decide(psi_drift: bool, ks_drift: bool, rule: str = "both") -> bool:
    if rule not in RULES:
        raise ValueError(f"drift_rule must be one of {RULES}, not {rule!r}")
    return {
        "both": psi_drift and ks_drift,
        "any": psi_drift or ks_drift,
        "psi": psi_drift,
        "ks": ks_drift,
    }[rule]


def feature_drift(
    reference: pd.DataFrame,
    current: pd.DataFrame,
    features: Sequence[str],
    *,
    bins: int = 10,
    epsilon: float = PSI_EPSILON,
    psi_threshold: float = 0.2,
    ks_alpha: float = 0.01,
    correction: str = "bonferroni",
    rule: str = "both",
    autocorrelation: bool = False,
) -> pd.DataFrame:
    """One row per feature: psi, ks_statistic, ks_pvalue, the level it was tested at,
    psi_drift / ks_drift / drifted, means and standard deviations, rows and missing values;
    sorted by PSI, largest first. ``autocorrelation``: the KS p-value from each series'
    effective sample size (:func:`ks_effective`; rows in time order). A feature without
    finite current values is reported (drifted: its values are all missing), not dropped."""
    level = ks_level(ks_alpha, len(features), correction)
    rows: list[dict[str, Any]] = []
    for name in features:
        ref = finite(reference[name])
        cur = finite(current[name])
        row: dict[str, Any] = {
            "feature": name,
            "reference_rows": int(ref.size),
            "current_rows": int(cur.size),
            "current_missing": int(len(current) - cur.size),
            "reference_mean": float(ref.mean()) if ref.size else math.nan,
            "current_mean": float(cur.mean()) if cur.size else math.nan,
            "reference_std": float(ref.std()) if ref.size else math.nan,
            "current_std": float(cur.std()) if cur.size else math.nan,
            "ks_level": level,
        }
        if ref.size == 0:
            raise ValueError(f"feature {name!r} has no finite values in the reference")
        if cur.size == 0:
            row.update(psi=math.inf, ks_statistic=1.0, ks_pvalue=0.0)
        else:
            stat, pvalue = ks_effective(ref, cur) if autocorrelation else ks(ref, cur)
            row.update(psi=psi(ref, cur, bins, epsilon), ks_statistic=stat, ks_pvalue=pvalue)
        row["psi_drift"] = bool(row["psi"] >= psi_threshold)
        row["ks_drift"] = bool(row["ks_pvalue"] < level)
        row["drifted"] = decide(row["psi_drift"], row["ks_drift"], rule)
        rows.append(row)
    table = pd.DataFrame(rows)
    if table.empty:
        return table
    return table.sort_values("psi", ascending=False, kind="stable").reset_index(drop=True)
