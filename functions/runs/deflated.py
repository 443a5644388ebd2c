"""The deflated Sharpe ratio (Bailey & López de Prado, "The Deflated Sharpe Ratio: Correcting
for Selection Bias, Backtest Overfitting and Non-Normality", J. Portfolio Management 2014).

The best Sharpe ratio of N trials is high by luck alone. Under the null (every trial has a true
Sharpe of 0) the expected maximum of N estimates whose variance across trials is V is

    SR0 = sqrt(V) * ((1 - g) * Z(1 - 1/N) + g * Z(1 - 1/(N e))),   g = Euler-Mascheroni,

(Z the standard normal quantile), and the deflated Sharpe ratio is the probabilistic Sharpe
ratio of the selected estimate SR against that benchmark:

    DSR = Phi((SR - SR0) * sqrt(T - 1) / sqrt(1 - skew * SR + (kurt - 1) / 4 * SR^2))

with T the number of return observations, skew and (Pearson) kurtosis of the selected returns.
Every Sharpe ratio here is per observation (not annualized): ``sharpe / sqrt(periods_per_year)``.
"""

from __future__ import annotations

import math
import statistics
from collections.abc import Sequence
from dataclasses import dataclass

EULER_GAMMA = 0.5772156649015329
_N = statistics.NormalDist()


def expected_max_sharpe(n_trials: int, variance: float) -> float:
    """SR0: the expected maximum of ``n_trials`` Sharpe estimates with true Sharpe 0 and
    ``variance`` across trials (per-observation units)."""
    if n_trials < 2:
        raise ValueError("the expected maximum needs at least 2 trials")
    if variance < 0:
        raise ValueError("a variance cannot be negative")
    z1 = _N.inv_cdf(1 - 1 / n_trials)
    z2 = _N.inv_cdf(1 - 1 / (n_trials * math.e))
    return math.sqrt(variance) * ((1 - EULER_GAMMA) * z1 + EULER_GAMMA * z2)


def probabilistic_sharpe(
    sharpe: float, benchmark: float, n_periods: int, skew: float = 0.0, kurtosis: float = 3.0
) -> float:
    """PSR: the probability that the true Sharpe exceeds ``benchmark`` given the estimate
    ``sharpe`` from ``n_periods`` observations (per-observation units; Pearson kurtosis)."""
    if n_periods < 2:
        raise ValueError("the probabilistic Sharpe ratio needs at least 2 observations")
    spread = 1 - skew * sharpe + (kurtosis - 1) / 4 * sharpe**2
    if spread <= 0:
        raise ValueError("skew and kurtosis give a non-positive variance of the estimate")
    return _N.cdf((sharpe - benchmark) * math.sqrt(n_periods - 1) / math.sqrt(spread))


@dataclass(frozen=True)
class DeflatedSharpe:
    deflated_sharpe: float  # the probability that the selected strategy's true Sharpe > SR0
    sharpe_benchmark: float  # SR0, annualized like the trials' ``sharpe``
    trials: int


def deflated_sharpe(
    selected: float,
    trial_sharpes: Sequence[float],
    n_periods: int,
    skew: float = 0.0,
    kurtosis: float = 3.0,
    periods_per_year: float = 1.0,
) -> DeflatedSharpe:
    """The DSR of ``selected`` (annualized Sharpe, as the trials') among ``trial_sharpes``
    (every trial's annualized Sharpe, the selected one included)."""
    if periods_per_year <= 0:
        raise ValueError("periods_per_year must be positive")
    scale = math.sqrt(periods_per_year)
    per_period = [s / scale for s in trial_sharpes]
    sr0 = expected_max_sharpe(len(per_period), statistics.variance(per_period))
    psr = probabilistic_sharpe(selected / scale, sr0, n_periods, skew, kurtosis)
    return DeflatedSharpe(psr, sr0 * scale, len(per_period))
