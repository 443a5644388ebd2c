from __future__ import annotations

import json
from pathlib import Path

import pytest

from tickrun.cli import main


def _run(argv: list[str], capsys: pytest.CaptureFixture[str]) -> tuple[int, str, str]:
    with pytest.raises(SystemExit) as exit_info:
        main(argv)
    out, err = capsys.readouterr()
    return int(exit_info.value.code or 0), out, err


def test_hub_list(capsys: pytest.CaptureFixture[str], private_hub: Path) -> None:
    code, out, _ = _run(["hub", "list", "--hub-path", str(private_hub)], capsys)
    assert code == 0
    lines = {line.split()[0]: line for line in out.splitlines()[1:] if line.strip()}
    assert "auto_trainer" in lines and "toy" in lines
    assert "2.0.0, 1.2.3, 1.2.0, 1.0.0" in lines["toy"]
    code, out, _ = _run(["hub", "list", "--json"], capsys)
    rows = {r["name"]: r for r in json.loads(out)}
    assert rows["market_features"]["versions"][:3] == ["1.2.0", "1.1.0", "1.0.0"]
    assert rows["market_features"]["latest"] == "1.2.0"
    assert set(rows["market_features"]["deprecated"]) == {"1.1.0"}


def test_hub_show(capsys: pytest.CaptureFixture[str]) -> None:
    code, out, _ = _run(["hub", "show", "auto_trainer"], capsys)
    assert code == 0
    assert "handler train (default)" in out and "model_class" in out
    assert "tickrun.import_function('hub://auto_trainer:1.3.0')" in out
    code, out, _ = _run(["hub", "show", "hub://market_features:1.0", "--json"], capsys)
    data = json.loads(out)
    assert data["version"] == "1.0.0" and "1.1.0" in data["versions"]


def test_hub_show_unknown_is_a_clean_error(capsys: pytest.CaptureFixture[str]) -> None:
    code, _, err = _run(["hub", "show", "auto_trainer:9"], capsys)
    assert code == 2
    assert err.startswith(
        "error: auto_trainer has no version matching 9; versions: 1.3.0, 1.2.0, 1.1.0"
    )


def test_hub_index_and_pull(capsys: pytest.CaptureFixture[str], private_hub: Path) -> None:
    code, out, _ = _run(["hub", "index", str(private_hub)], capsys)
    assert code == 0 and json.loads(Path(out.strip()).read_text())["items"]["toy"]
    code, out, _ = _run(["hub", "pull", "toy:1", "--hub-path", str(private_hub), "--json"], capsys)
    assert json.loads(out)["uri"] == "hub://toy:1.2.3"
