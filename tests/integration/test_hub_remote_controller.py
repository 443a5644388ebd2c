"""A real controller process as the remote hub: ``TICKRUN_HUB_URL`` → its ``/api/hub``; items
are mirrored into the local cache and still import after the controller is gone."""

from __future__ import annotations

from pathlib import Path

import pytest

import tickrun
from tests.integration.test_controller_harness import ControllerProc, controller
from tickrun.functions.errors import HubError
from tickrun.hub import Hub

pytestmark = pytest.mark.slow

__all__ = ["controller"]  # the fixture, re-exported so pytest finds it here


def test_controller_serves_the_hub_and_imports_work_offline(
    controller: ControllerProc, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    cache = tmp_path / "hub-cache"
    monkeypatch.setenv("TICKRUN_HUB_URL", controller.url)
    monkeypatch.setenv("TICKRUN_HUB_ALLOW_HTTP", "1")  # the test controller is plain http
    monkeypatch.setenv("TICKRUN_HUB_CACHE", str(cache))
    monkeypatch.delenv("TICKRUN_HUB_PATH", raising=False)
    remote_only = Hub.from_env(bundled=False)
    names = {row["name"] for row in remote_only.list_items()}
    assert {"auto_trainer", "backtest", "market_features", "model_server"} <= names
    fn = remote_only.import_function("hub://market_features:1.0")
    assert fn.folder.is_relative_to(cache)
    assert fn.resolved.source == f"{controller.url}/api/hub"
    assert fn.module().compute_features.__module__.startswith("tickrun_hub_item_market_features")
    # through the public API a remote hub never shadows a bundled item version
    assert tickrun.import_function("hub://backtest").resolved.source == "bundled"

    controller.stop()
    offline = Hub.from_env(bundled=False, timeout_s=1)
    again = offline.import_function("hub://market_features:1.0")
    assert again.folder == fn.folder and again.version == "1.0.0"
    with pytest.raises(HubError, match="not in the local cache"):
        offline.import_function("hub://auto_trainer")
