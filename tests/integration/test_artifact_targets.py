"""A real controller refuses run records whose artifacts point outside its artifact stores, and
``tickrun artifact download`` (a separate process talking to that controller) refuses a record
that reached the controller's DB some other way."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import urllib.error
import urllib.request
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from tests.integration.test_controller_harness import TOKEN, ControllerProc, cleanup
from tickrun.functions.runs import ArtifactRecord, RunBatch, RunRecord, SqlRunDB


@pytest.fixture
def ctl(tmp_path: Path) -> Iterator[ControllerProc]:
    env = dict(os.environ, TICKRUN_HOME=str(tmp_path / "home"))
    for var in ("TICKRUN_ARTIFACT_PATH", "TICKRUN_ARTIFACT_STORES", "TICKRUN_DB_URL"):
        env.pop(var, None)
    proc = ControllerProc(tmp_path / "state", env).start()
    try:
        yield proc
    finally:
        cleanup(proc)


def _batch(target: str, uid: str) -> bytes:
    batch = RunBatch(
        runs=[RunRecord(uid=uid, project="p")],
        artifacts=[ArtifactRecord(project="p", uid=uid, key="loot", target=target)],
    )
    text: str = batch.model_dump_json()
    return text.encode()


def _call(url: str, data: bytes | None = None) -> tuple[int, Any]:
    req = urllib.request.Request(
        url,
        data=data,
        method="POST" if data else "GET",
        headers={"Authorization": f"Bearer {TOKEN}"},
    )
    opener = urllib.request.build_opener(urllib.request.ProxyHandler({}))
    try:
        with opener.open(req, timeout=10) as resp:
            return resp.status, json.loads(resp.read())
    except urllib.error.HTTPError as exc:
        return exc.code, json.loads(exc.read())


def test_controller_refuses_targets_outside_its_stores(ctl: ControllerProc, tmp_path: Path) -> None:
    arts = tmp_path / "home" / "artifacts"
    for i, target in enumerate(
        (
            str(ctl.state_dir / "tickrun.db"),
            str(ctl.state_dir / "token"),
            "/etc/shadow",
            f"{arts}/../../state/tickrun.db",
            "s3://any-bucket/key",
        )
    ):
        status, body = _call(f"{ctl.url}/api/runs", _batch(target, f"bad{i}"))
        assert status == 400, (target, body)
        assert body["error"] == "ArtifactTargetError"
        assert "outside the configured artifact stores" in body["detail"] or "s3" in target
    status, body = _call(f"{ctl.url}/api/runs", _batch(f"{arts}/p/ok/0/loot.txt", "ok"))
    assert status == 200, body
    status, body = _call(f"{ctl.url}/api/runs?limit=99999999999999999999")
    assert status == 400 and body["error"] == "BadRequestError"
    status, body = _call(f"{ctl.url}/api/artifacts/p/ok/99999999999999999999/loot")
    assert status == 400
    status, body = _call(f"{ctl.url}/api/runs")
    assert status == 200 and [r["uid"] for r in body["runs"]] == ["ok"]


def test_download_through_the_controller_refuses_a_planted_record(
    ctl: ControllerProc, tmp_path: Path
) -> None:
    arts = tmp_path / "home" / "artifacts"
    good = arts / "p" / "fine" / "0" / "loot.txt"
    good.parent.mkdir(parents=True)
    good.write_text("an artifact")
    # Straight into the controller's DB, past the API (as a process with DB access could).
    db = SqlRunDB(f"sqlite:///{ctl.state_dir / 'tickrun.db'}")
    try:
        for uid, target in (("planted", str(ctl.state_dir / "tickrun.db")), ("fine", str(good))):
            db.apply(RunBatch.model_validate_json(_batch(target, uid)))
    finally:
        db.close()
    out = tmp_path / "out"
    out.mkdir()
    env = dict(
        os.environ,
        TICKRUN_HOME=str(tmp_path / "home"),
        TICKRUN_CONTROLLER_URL=ctl.url,
        TICKRUN_TOKEN=TOKEN,
    )
    for var in ("TICKRUN_ARTIFACT_PATH", "TICKRUN_ARTIFACT_STORES", "TICKRUN_DB_URL"):
        env.pop(var, None)

    def download(uri: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            [sys.executable, "-m", "tickrun", "artifact", "download", uri, "-o", str(out)],
            env=env,
            capture_output=True,
            text=True,
            timeout=60,
        )

    bad = download("store://p/planted/loot")
    assert bad.returncode != 0
    assert "outside the configured artifact stores" in bad.stderr
    assert "Traceback" not in bad.stderr
    assert list(out.iterdir()) == []
    ok = download("store://p/fine/loot")
    assert ok.returncode == 0, ok.stderr
    assert (out / "loot.txt").read_text() == "an artifact"
