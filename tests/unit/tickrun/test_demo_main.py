"""`make demo` ends a failed step with one line a user can act on, never a traceback."""

from __future__ import annotations

from pathlib import Path

import pytest

import tickrun.controller.demo as controller_demo
import tickrun.hub.demo as hub_demo
from tickrun import demo
from tickrun.functions.errors import NotFoundError


def test_a_tickrun_error_is_one_line(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.setattr(controller_demo, "main", lambda: 0)

    def missing(**_: object) -> None:
        raise NotFoundError("BTCUSDT market data not found in /x; reinstall tickrun")

    monkeypatch.setattr(hub_demo, "run_demo", missing)
    assert demo.main() == 1
    err = capsys.readouterr().err
    assert err == (
        "tickrun demo: the hub pipeline failed: BTCUSDT market data not found in /x; "
        "reinstall tickrun\n"
    )


def test_an_unexpected_error_is_one_line_and_the_traceback_goes_to_a_file(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    def boom() -> int:
        raise OSError("No space left on device")

    monkeypatch.setattr(controller_demo, "main", boom)
    assert demo.main() == 1
    err = capsys.readouterr().err
    assert err.count("\n") == 1
    assert "Traceback" not in err
    assert err.startswith("tickrun demo: the controller demo failed: OSError: No space left")
    trace = Path(err.rsplit("details in ", 1)[1].rstrip(")\n"))
    try:
        assert "Traceback" in trace.read_text()
    finally:
        trace.unlink()


def test_a_failed_controller_demo_stops_before_the_pipeline(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    ran: list[bool] = []
    monkeypatch.setattr(controller_demo, "main", lambda: 1)
    monkeypatch.setattr(hub_demo, "run_demo", lambda **_: ran.append(True))
    assert demo.main() == 1
    assert ran == []
