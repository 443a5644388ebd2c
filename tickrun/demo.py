"""`make demo`: tickrun's main job on the embedded default, end to end, on this machine.

1. The controller on the process platform (no container runtime, no Kubernetes): deploy the
   example Nuclio functions, invoke them through the gateway, scale, clean up.
2. The quant pipeline through versioned hub items: raw hourly BTCUSDT bars → causal features →
   an XGBoost model (tracked run, artifacts in the local store) → a purged walk-forward backtest
   read against its costs and controls (gross vs net, 0/5/10 bp, a cost-aware strategy beside
   the naive one, buy-and-hold, random signals with the same trades, shuffled labels, AUC and
   log loss vs the base rate, plots, one sentence derived from the numbers) → the model served
   over HTTP in MLflow's and Nuclio's formats, and invoked.

A step that fails prints one line a user can act on; the traceback, if any, goes to a file.
"""

from __future__ import annotations

import sys
import tempfile
import traceback

from tickrun.functions.errors import TickrunError


def _fail(step: str, exc: BaseException) -> int:
    if isinstance(exc, TickrunError):
        print(f"tickrun demo: {step} failed: {exc.message}", file=sys.stderr)
        return 1
    # Unexpected: the user gets one line; whoever debugs it gets the traceback in a file.
    with tempfile.NamedTemporaryFile(
        "w", prefix="tickrun-demo-", suffix=".traceback", delete=False
    ) as out:
        traceback.print_exception(exc, file=out)
    print(
        f"tickrun demo: {step} failed: {type(exc).__name__}: {exc} (details in {out.name})",
        file=sys.stderr,
    )
    return 1


def main() -> int:
    from tickrun.controller.demo import main as controller_demo
    from tickrun.hub.demo import run_demo
    from tickrun.hub.sampledata import market_data

    try:
        code: int = controller_demo()
    except Exception as exc:
        return _fail("the controller demo", exc)
    if code:
        return code
    print("\n" + "-" * 100 + "\n")
    try:
        run_demo(data=market_data())
    except Exception as exc:
        return _fail("the hub pipeline", exc)
    return 0


if __name__ == "__main__":
    sys.exit(main())
