"""`make demo`: tickrun's main job on the embedded default, end to end, on this machine.

1. The controller on the process platform (no container runtime, no Kubernetes): deploy the
   example Nuclio functions, invoke them through the gateway, scale, clean up.
2. The quant pipeline through versioned hub items: raw hourly BTCUSDT bars → causal features →
   an XGBoost model (tracked run, artifacts in the local store) → a backtest beside buy-and-hold →
   the model served over HTTP in MLflow's and Nuclio's formats, and invoked.
"""

from __future__ import annotations

import sys


def main() -> None:
    from tickrun.controller.demo import main as controller_demo
    from tickrun.functions.sampledata import market_data
    from tickrun.hub.demo import run_demo

    code = controller_demo()
    if code:
        sys.exit(code)
    print("\n" + "-" * 100 + "\n")
    run_demo(data=market_data())


if __name__ == "__main__":
    main()
