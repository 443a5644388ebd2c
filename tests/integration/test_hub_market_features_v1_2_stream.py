"""hub://market_features:1.2's streaming handler deployed as a real replica, over HTTP: real minute
klines as Binance websocket events (partial updates, redeliveries) in; an empty 200 for what
makes no bar, the batch features for each new closed bar, a 400 with the reason for bad input,
the counters on GET; NaN features as strict JSON null."""

from __future__ import annotations

import json
import urllib.error
import urllib.request
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import pytest

import tickrun
from tickrun.hub.sampledata import MINUTE, market_data
from tickrun.triggers.kafka.replay import messages, read_klines

pytestmark = pytest.mark.slow

N_BARS = 150


def _post(url: str, body: bytes, method: str = "POST") -> tuple[int, bytes]:
    request = urllib.request.Request(  # noqa: S310 - a local replica
        url, data=body if method == "POST" else None, method=method,
        headers={"Content-Type": "application/json"},
    )  # fmt: skip
    try:
        with urllib.request.urlopen(request, timeout=30) as reply:  # noqa: S310
            return reply.status, reply.read()
    except urllib.error.HTTPError as exc:
        return exc.code, exc.read()


def _no_constant(name: str) -> Any:
    raise AssertionError(f"not strict JSON: {name}")


def test_klines_over_http_give_the_batch_features(tmp_path: Path) -> None:
    fn = tickrun.import_function("hub://market_features:1.2")
    mf = fn.module()
    bars = mf.bars_from_klines(pd.read_csv(market_data(MINUTE), nrows=N_BARS))
    batch = mf.compute_features(bars, windows="6,24", label=None)
    cols = mf.feature_columns(batch)
    records = list(messages(read_klines(market_data(MINUTE), limit=N_BARS), partial_updates=1,
                            redeliver_every=4))  # fmt: skip
    replies: list[dict[str, Any]] = []
    with fn.deploy(env={"FEATURE_WINDOWS": "6,24"}, directory=tmp_path / "fn") as server:
        for msg in records:
            status, body = _post(server.url + "/", json.dumps(msg.event).encode())
            assert status == 200, body
            if not msg.closed or msg.redelivery:
                assert body == b""  # nothing to publish
            elif body:
                replies.append(json.loads(body))
        status, body = _post(server.url + "/", b'{"e": "kline", "k": {"t": 1}}')
        assert status == 400 and b"kline lacks k.o, k.h" in body
        status, body = _post(server.url + "/", b"[1, 2")
        assert status == 400 and b"not a kline" in body
        # a symbol without volume: its volume ratios/z-scores are NaN, sent as strict JSON null
        quiet = []
        for msg in messages(read_klines(market_data(MINUTE), limit=30)):
            k = {**msg.event["k"], "s": "QUIET", "v": "0"}
            status, body = _post(server.url + "/", json.dumps({"s": "QUIET", "k": k}).encode())
            assert status == 200 and b"NaN" not in body
            if body:
                quiet.append(json.loads(body, parse_constant=_no_constant))
        status, body = _post(server.url + "/", b"", method="GET")
        stats = json.loads(body)["symbols"]["BTCUSDT"]
    assert [r["open_time"] for r in replies] == batch["timestamp"].tolist()
    streamed = np.array([[r["features"][c] for c in cols] for r in replies])
    expected = batch[cols].to_numpy(float)
    assert (np.abs(streamed - expected) <= 1e-8 * np.maximum(1.0, np.abs(expected))).all()
    assert stats["accepted"] == N_BARS and stats["emitted"] == len(replies) == N_BARS - 24
    assert len(quiet) == 30 - 24
    nulls = {name for r in quiet for name, value in r["features"].items() if value is None}
    assert nulls == {"volume_ratio_6", "volume_z_6", "volume_ratio_24", "volume_z_24"}
    assert all(isinstance(v, float) for r in replies for v in r["features"].values())
    assert stats["unclosed"] == N_BARS and stats["older"] == (N_BARS - 1) // 4
