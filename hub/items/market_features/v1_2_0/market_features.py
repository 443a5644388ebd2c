"""market_features 1.2.0 — OHLCV bars → causal features and a forward label; batch and streaming.

Batch (:func:`compute_features`, the ``featurize`` job): the same numbers as 1.1 (same code
path); the job also logs the dataset's ``meta`` (targets, time column, label horizon) so a
trainer drops the targets and purges its splits. Every feature at bar t uses bars ≤ t only,
with a finite look-back (:func:`lookback`); only ``label``/``future_return`` look forward.

Streaming (the Nuclio ``handler``, fed Binance kline events; :class:`KlineStream` per symbol
over an :class:`IncrementalFeatures` window):

- **Closed bars only.** A kline with ``k.x`` false (an intra-bar update) returns None and never
  enters the window.
- **One bar per open time, in order.** A closed kline whose open time is not after the last
  accepted one of its symbol (a redelivery, or an older kline arriving late) returns None; the
  first closed kline of an open time wins.
- **Gaps restart the window.** When a closed kline's open time is not exactly one interval after
  the last accepted one (bars missing), the gap is logged, counted, and the symbol's window
  restarts at that bar: no output until it holds :func:`lookback` bars again, and the first
  output after that carries ``"gap"``. A window never spans a gap. The batch counterpart is
  ``compute_features(..., interval=...)`` (``featurize`` parameter ``interval``): features whose
  look-back spans a gap, and labels whose horizon does, are NaN (dropped with ``dropna``), so
  its rows are the bars the stream emits. Without ``interval`` (the default, as in 1.1) rows
  are taken as consecutive bars; every row the stream emits still equals that row.
- **Equal to batch within a stated tolerance, not bit-identical.** For every emitted bar each
  feature ``a`` and the batch value ``b`` at that open time satisfy
  ``|a - b| <= 1e-8 * max(1, |b|)``, and ``a`` is within ``1e-12 * max(1, |x|)`` of ``x``, the
  exact two-pass value (both tested on the January 2024 minute klines replayed with partial
  updates, redeliveries, late klines and gaps). The batch side is the looser one: pandas'
  sliding variance drifts (2.2e-9 on ``volume_z_6`` there), the stream's sums do not.
- **O(1) per bar.** Running sums over ring buffers (no pandas); each window's sums are re-summed
  exactly (``math.fsum``) every ``w`` bars, so rounding drift is bounded by ~2w additions
  however long the stream runs; a window of equal values gives the exact mean and a zero
  deviation, as pandas does.
- **Strict JSON out.** A feature that is NaN (e.g. ``volume_ratio`` over a window without
  volume, as the batch leaves it NaN) or infinite is ``None`` in the handler's output, so it
  goes out as JSON ``null``, never as ``NaN``. :class:`FeatureStreams`, :class:`KlineStream`,
  :class:`IncrementalFeatures` and :class:`FeatureWindow` (Python callers) keep the float NaN.

The item's files (``files:`` in item.yaml), each importing the ones before it:

- ``batch.py``: the window spec, bar intervals, :func:`compute_features` and the batch gap
  rule, :func:`bars_from_klines`;
- ``incremental.py``: :class:`IncrementalFeatures` (the O(1) window), :class:`FeatureWindow`;
- ``klines.py``: :func:`parse_kline`, :class:`KlineStream` (closed, ordered, deduplicated bars
  and the gap state of one symbol), :class:`FeatureStreams`;
- this module: the Nuclio ``handler`` / ``init_context`` and the ``featurize`` job, and every
  public name of the others (``market_features.compute_features`` etc.), as before the split.
"""

from __future__ import annotations

import importlib
import importlib.machinery
import importlib.util
import math
import os
import sys
import types
from pathlib import Path
from typing import Any


def _sibling(name: str) -> types.ModuleType:
    """Another file of this item: a sub-module when the item is a package (bundled), else (a
    cached or exported copy imported by path, or a deployed function's top-level module) a
    sub-module of a package made for this copy whose path is this file's folder, so the files'
    relative imports of each other (``from .batch import …``) resolve beside this file too."""
    if __package__:
        return importlib.import_module(f"{__package__}.{name}")
    package = f"{__name__}__files"
    if package not in sys.modules:
        spec = importlib.machinery.ModuleSpec(package, None, is_package=True)
        spec.submodule_search_locations = [str(Path(__file__).resolve().parent)]
        sys.modules[package] = importlib.util.module_from_spec(spec)
    return importlib.import_module(f"{package}.{name}")


batch = _sibling("batch")
incremental = _sibling("incremental")
klines = _sibling("klines")

# Every public name the single-file 1.2.0 module had, from the file that now holds it.
OHLCV = batch.OHLCV
DEFAULT_WINDOWS = batch.DEFAULT_WINDOWS
TARGET_COLUMNS = batch.TARGET_COLUMNS
NAN = batch.NAN
parse_windows = batch.parse_windows
lookback = batch.lookback
interval_ms = batch.interval_ms
timestamps_ms = batch.timestamps_ms
gap_masks = batch.gap_masks
compute_features = batch.compute_features
feature_columns = batch.feature_columns
feature_names = batch.feature_names
bars_from_klines = batch.bars_from_klines
IncrementalFeatures = incremental.IncrementalFeatures
FeatureWindow = incremental.FeatureWindow
Kline = klines.Kline
parse_kline = klines.parse_kline
KlineStream = klines.KlineStream
FeatureStreams = klines.FeatureStreams
logger = klines.logger


# --- Nuclio streaming handler (Kafka klines → features) --------------------------------------

KAFKA_KIND = "kafka-cluster"


def init_context(context: Any) -> None:
    context.user_data.features = FeatureStreams(
        os.environ.get("FEATURE_WINDOWS") or None,
        int(os.environ.get("RSI_WINDOW", "14")),
        int(os.environ.get("MFI_WINDOW", "14")),
        os.environ.get("BAR_INTERVAL") or None,
    )


def handler(context: Any, event: Any) -> Any:
    """A kline in; the new closed bar's features out, or None (nothing to publish). A NaN or
    infinite feature is None there (JSON null).

    Over HTTP a GET returns the per-symbol counters and bad input a 400 with the reason; from
    Kafka bad input raises, so the trigger's failure policy (retry, dead-letter) takes the record
    and nothing lands on the output topic."""
    streams: FeatureStreams = context.user_data.features
    if getattr(event, "method", None) == "GET":
        return streams.stats()
    try:
        out = streams.offer(event.body)
    except (ValueError, RecursionError) as exc:  # JSONDecodeError and UnicodeError included
        message = f"not a kline: {exc}"
        kind = getattr(getattr(event, "trigger", None), "kind", None)
        if kind == KAFKA_KIND:
            raise ValueError(message) from exc
        return 400, {"error": message}
    if streams.new_gap is not None:
        context.logger.warn_with("kline gap: window restarts", **streams.new_gap)
    if out is not None and not all(map(math.isfinite, out["features"].values())):
        # JSON has no NaN/inf: a strict consumer would reject the message, so null instead.
        out["features"] = {k: v if math.isfinite(v) else None for k, v in out["features"].items()}
    return out


# --- job handler -----------------------------------------------------------------------------


def featurize(
    context: Any,
    dataset: Any = None,
    windows: Any = "6,24,72",
    rsi_window: int = 14,
    mfi_window: int = 14,
    label: str = "updown",
    horizon: int = 1,
    threshold: float = 0.0,
    features_key: str = "features",
    format: str = "parquet",
    interval: str = "",
) -> None:
    """Job: OHLCV dataset (or Binance klines) → features dataset (logged as ``features``, with
    its targets, time column and label horizon in ``meta``) + summary results."""
    if dataset is None:
        raise ValueError("featurize needs an OHLCV dataset input")
    bars = dataset.as_df()
    if "open_time" in bars.columns and "timestamp" not in bars.columns:
        bars = bars_from_klines(bars)
    frame = compute_features(
        bars,
        windows=windows,
        rsi_window=int(rsi_window),
        mfi_window=int(mfi_window),
        label=label,
        horizon=int(horizon),
        threshold=float(threshold),
        interval=interval or None,
    )
    context.logger.info_with(
        "features computed", rows=len(frame), features=len(feature_columns(frame))
    )
    meta = {
        "targets": list(TARGET_COLUMNS),
        "time_column": "timestamp" if "timestamp" in frame.columns else None,
        "label_horizon_bars": int(horizon),
    }
    context.log_dataset(features_key, frame, format=format, meta=meta)
    results: dict[str, Any] = {
        "rows": len(frame),
        "dropped_rows": len(bars) - len(frame),
        "feature_count": len(feature_columns(frame)),
    }
    if label == "updown":
        results["label_up_fraction"] = float(frame["label"].mean())
    context.log_results(results)
