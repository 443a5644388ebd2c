"""What the local job runners (controller/jobs.py) refuse rather than silently ignore."""

from __future__ import annotations

from pathlib import Path

import pytest

from tickrun.controller.jobs import run_job
from tickrun.functions.errors import BadRequestError
from tickrun.functions.runs.plugins import JobRequest


def _request(**kw: object) -> JobRequest:
    base: dict[str, object] = {"runner": "subprocess", "target": "m:fn", "uid": "u" * 32}
    return JobRequest.model_validate({**base, **kw})


def test_kubernetes_only_fields_are_refused(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("TICKRUN_HOME", str(tmp_path))
    with pytest.raises(BadRequestError, match="no timeout"):
        run_job(_request(timeout_s=30))
    with pytest.raises(BadRequestError, match="builds no image"):
        run_job(_request(requirements=["pandas"]))
    with pytest.raises(BadRequestError, match="unknown job runner"):
        run_job(_request(runner="kubernetes"))
    assert not (tmp_path / "runs.db").exists()  # refused before anything was recorded
