"""The market data ships inside the package: no checkout beside it, nothing read from outside."""

from __future__ import annotations

import gzip
from pathlib import Path

import pytest

from tickrun.functions.errors import NotFoundError
from tickrun.hub import sampledata


def test_the_bundled_copy_is_found_without_any_setting(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv(sampledata.DATA_ENV, raising=False)
    hourly = sampledata.market_data()
    assert hourly.parent == sampledata.BUNDLED_DIR
    assert "shared" not in hourly.parts
    with gzip.open(hourly, "rt") as f:
        assert f.readline().startswith("timestamp,open,high,low,close")
    with gzip.open(sampledata.market_data(sampledata.MINUTE), "rt") as f:
        assert f.readline().startswith("open_time,open,high,low,close")
    assert (sampledata.BUNDLED_DIR / "README.md").is_file()


def test_the_env_var_overrides_the_folder(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    (tmp_path / sampledata.HOURLY).write_bytes(b"x")
    monkeypatch.setenv(sampledata.DATA_ENV, str(tmp_path))
    assert sampledata.market_data() == tmp_path / sampledata.HOURLY


def test_a_wrong_override_names_the_folder_and_the_fix(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    monkeypatch.setenv(sampledata.DATA_ENV, str(tmp_path / "nope"))
    with pytest.raises(NotFoundError, match=r"nope; unset TICKRUN_DATA_DIR"):
        sampledata.market_data()
