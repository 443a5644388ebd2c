"""paper_trader's book and report summary in process: the streaming rules on real minute
closes equal an independent vectorized computation; redeliveries change nothing; bad messages
raise (so the trigger dead-letters them)."""

from __future__ import annotations

from types import SimpleNamespace
from typing import Any

import numpy as np
import pandas as pd
import pytest

from tickrun.hub import import_function
from tickrun.hub.sampledata import MINUTE, market_data

pt = import_function("hub://paper_trader:1").module()
NOTIONAL, FEE_BP = 5_000.0, 7.5


@pytest.fixture(scope="module")
def bars() -> pd.DataFrame:
    df = pd.read_csv(market_data(MINUTE), nrows=1500)
    # A signal that changes now and then: the sign of a 20-bar momentum, flat when small.
    mom = df["close"].pct_change(20).fillna(0.0)
    df["signal"] = np.where(mom > 0.001, 1, np.where(mom < -0.001, -1, 0))
    return df


def vectorized(df: pd.DataFrame) -> dict[str, float]:
    """The same rules, written differently: units change only where the signal changes."""
    close = df["close"].to_numpy()
    sig = df["signal"].to_numpy()
    changed = np.r_[sig[0] != 0, sig[1:] != sig[:-1]]
    units = pd.Series(np.where(changed, sig * NOTIONAL / close, np.nan)).ffill().fillna(0.0)
    held = units.shift(1).fillna(0.0).to_numpy()  # held over the move into bar t
    gross = float((held * np.r_[0.0, np.diff(close)]).sum())
    traded = np.abs(np.diff(np.r_[0.0, units.to_numpy()]))
    fees = float((traded * close).sum() * FEE_BP / 1e4)
    return {"gross": gross, "fees": fees, "trades": int(changed.sum())}


def _event(body: Any) -> Any:
    return SimpleNamespace(body=body, trigger=SimpleNamespace(kind="kafka-cluster"))


def test_streamed_book_equals_the_vectorized_rules_and_ignores_redeliveries(bars) -> None:
    published: list[dict[str, Any]] = []
    ctx = SimpleNamespace(
        user_data=SimpleNamespace(book=pt.PaperBook(NOTIONAL, FEE_BP)),
        kafka=SimpleNamespace(publish=lambda value, key=None: published.append(value)),
    )
    for i, row in enumerate(bars.itertuples()):
        msg = {
            "symbol": "BTCUSDT",
            "open_time": row.open_time,
            "close": row.close,
            "signal": int(row.signal),
            "probability": 0.5,
        }
        mark = pt.handler(ctx, _event(msg))
        assert mark["type"] == "mark" and mark["open_time"] == row.open_time
        published.append(mark)
        if i % 97 == 5:  # a redelivery, and an older bar: nothing happens
            assert pt.handler(ctx, _event(msg)) is None
            older = dict(msg, open_time=row.open_time - 60_000, signal=-msg["signal"])
            assert pt.handler(ctx, _event(older)) is None
    want = vectorized(bars)
    last = published[-1]
    assert want["trades"] > 10
    assert last["trades"] == want["trades"]
    assert last["gross_pnl"] == pytest.approx(want["gross"], rel=1e-9, abs=1e-6)
    assert last["fees"] == pytest.approx(want["fees"], rel=1e-9)
    assert last["net_pnl"] == pytest.approx(want["gross"] - want["fees"], rel=1e-9, abs=1e-6)
    fills = [p for p in published if p["type"] == "fill"]
    assert len(fills) == want["trades"]
    results, marks = pt.summarize(published + published[-50:])  # duplicates on the topic
    assert results["bars"] == len(bars) and len(marks) == len(bars)
    assert results["net_pnl"] == pytest.approx(last["net_pnl"])
    assert results["trades"] == want["trades"]
    assert results["max_abs_exposure"] == pytest.approx(
        max(abs(m["exposure"]) for m in published if m["type"] == "mark")
    )


@pytest.mark.parametrize(
    "body",
    [
        b"nope",
        [1, 2],
        {"symbol": "X", "open_time": 1, "close": 10.0},
        {"symbol": "X", "open_time": 1, "close": -1.0, "signal": 1},
        {"symbol": "X", "open_time": 1, "close": 10.0, "signal": 3},
    ],
)
def test_a_message_that_is_not_a_signal_raises(body: Any) -> None:
    ctx = SimpleNamespace(user_data=SimpleNamespace(book=pt.PaperBook()))
    with pytest.raises(ValueError):
        pt.handler(ctx, _event(body))


def test_the_report_needs_marks() -> None:
    with pytest.raises(ValueError, match="no marks"):
        pt.summarize([{"type": "fill", "symbol": "X", "open_time": 1}])


def test_1_1_resumes_a_killed_book_from_its_published_marks(bars) -> None:
    """A book restored from the marks published so far (what a restarted replica reads
    from the pnl topic), fed the signals again from an earlier offset, ends as one that never
    stopped."""
    pt11 = pt
    published: list[dict[str, Any]] = []

    def ctx_of(book: Any) -> Any:
        return SimpleNamespace(
            user_data=SimpleNamespace(book=book),
            kafka=SimpleNamespace(publish=lambda value, key=None: published.append(value)),
        )

    msgs = [
        {"symbol": "BTCUSDT", "open_time": r.open_time, "close": r.close, "signal": int(r.signal)}
        for r in bars.itertuples()
    ]
    first = ctx_of(pt11.PaperBook(NOTIONAL, FEE_BP))
    for msg in msgs[:700]:
        published.append(pt11.handler(first, _event(msg)))
    book = pt11.PaperBook(NOTIONAL, FEE_BP)
    assert pt11.restore(book, published) == 1
    second = ctx_of(book)
    for msg in msgs[650:]:  # the last committed offset was before the crash point
        mark = pt11.handler(second, _event(msg))
        if mark is not None:
            published.append(mark)
    marks = [p for p in published if p["type"] == "mark"]
    assert [m["open_time"] for m in marks] == [m["open_time"] for m in msgs]
    want = vectorized(bars)
    assert marks[-1]["trades"] == want["trades"]
    assert marks[-1]["net_pnl"] == pytest.approx(want["gross"] - want["fees"], rel=1e-9, abs=1e-6)
