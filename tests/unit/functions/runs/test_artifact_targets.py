"""Artifact records can only point into the configured artifact stores: the runs API refuses
other targets (over real loopback HTTP), and ``tickrun artifact download`` / ``DataItem`` refuse
a record that got into the DB some other way. Out-of-range query numbers are a 400."""

from __future__ import annotations

import asyncio
import json
import os
import urllib.error
import urllib.request
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest
from aiohttp import web
from aiohttp.test_utils import TestServer

from tickrun.functions.artifacts import ArtifactRoots, ArtifactTargetError
from tickrun.functions.runs import (
    ArtifactRecord,
    DataItem,
    RunBatch,
    RunRecord,
    SqlRunDB,
    TrackingSettings,
    load_model,
)
from tickrun.functions.runs.api import add_routes

from .test_run_cli import cli

SECRET = "not-for-your-eyes-3f9c"


@pytest.fixture
def secret(tmp_path: Path) -> Path:
    """A 0600 file outside every artifact store, like the controller's token."""
    path = tmp_path / "token"
    path.write_text(SECRET)
    path.chmod(0o600)
    return path


@pytest.fixture
def root(settings: TrackingSettings) -> Path:
    path = Path(settings.artifact_path)
    path.mkdir(parents=True, exist_ok=True)
    return path


def _batch(target: str, uid: str = "r1", key: str = "blob") -> dict[str, Any]:
    run = RunRecord(uid=uid, project="p")
    art = ArtifactRecord(project="p", uid=uid, key=key, target=target)
    body: dict[str, Any] = RunBatch(runs=[run], artifacts=[art]).model_dump(mode="json")
    return body


def _call(url: str, body: dict[str, Any] | None = None) -> tuple[int, Any]:
    data = None if body is None else json.dumps(body).encode()
    req = urllib.request.Request(url, data=data, method="GET" if body is None else "POST")
    opener = urllib.request.build_opener(urllib.request.ProxyHandler({}))
    try:
        with opener.open(req, timeout=10) as resp:
            return resp.status, json.loads(resp.read())
    except urllib.error.HTTPError as exc:
        return exc.code, json.loads(exc.read())


@pytest.fixture
async def api(home: Path, tmp_path: Path) -> AsyncIterator[tuple[str, SqlRunDB]]:
    db = SqlRunDB(f"sqlite:///{tmp_path / 'server.db'}")
    app = web.Application()
    # The stores come from the environment: $TICKRUN_HOME/artifacts plus the extra S3 root.
    os.environ["TICKRUN_ARTIFACT_STORES"] = "s3://market/tickrun, s3://whole-bucket"
    try:
        add_routes(app, db)
    finally:
        del os.environ["TICKRUN_ARTIFACT_STORES"]
    srv = TestServer(app, host="127.0.0.1")
    await srv.start_server()
    try:
        yield str(srv.make_url("")).rstrip("/"), db
    finally:
        await srv.close()
        db.close()


async def test_api_refuses_targets_outside_the_stores(
    api: tuple[str, SqlRunDB], root: Path, secret: Path, tmp_path: Path
) -> None:
    url, db = api
    link = root / "p" / "r1" / "0"
    link.mkdir(parents=True)
    (link / "innocent.txt").symlink_to(secret)
    (root / "p" / "escape").symlink_to(tmp_path)
    refused = [
        str(secret),
        "/etc/shadow",
        f"{root}/../token",  # `..` resolved before the check
        f"{root}/p/r1/0/innocent.txt",  # a symlink inside the store leading out of it
        f"{root}/p/escape/token",  # a symlinked folder leading out
        str(root),  # the root itself is no artifact
        "relative/path.csv",
        f"file://{secret}",
        "http://169.254.169.254/latest/meta-data",
        "s3://other-bucket/tickrun/p/r1/0/blob",
        "s3://market/elsewhere/blob",  # the bucket is configured, this prefix is not
        "s3://market/tickrun/../../etc/blob",
        "s3://market",
    ]
    for target in refused:
        status, body = await asyncio.to_thread(_call, f"{url}/api/runs", _batch(target))
        assert status == 400, (target, body)
        assert body["error"] == "ArtifactTargetError", body
        assert "p/r1/0/blob" in body["detail"] or "artifact target" in body["detail"]
    # Nothing of a refused batch was stored, not even its run.
    assert await asyncio.to_thread(db.list_artifacts) == []
    assert await asyncio.to_thread(db.list_runs) == []

    allowed = [
        f"{root}/p/r1/0/blob.csv",
        f"{root}/p/r1/0/../0/blob.csv",  # `..` that stays inside is fine
        "s3://market/tickrun/p/r1/0/blob.csv",
        "s3://whole-bucket/any/key.csv",
    ]
    for i, target in enumerate(allowed):
        status, body = await asyncio.to_thread(
            _call, f"{url}/api/runs", _batch(target, uid=f"ok{i}")
        )
        assert status == 200, (target, body)
    stored = await asyncio.to_thread(db.list_artifacts)
    assert sorted(a.target for a in stored) == sorted(allowed)


async def test_out_of_range_query_numbers_are_400(api: tuple[str, SqlRunDB], root: Path) -> None:
    url, _ = api
    status, _ = await asyncio.to_thread(_call, f"{url}/api/runs", _batch(f"{root}/p/r1/0/a.csv"))
    assert status == 200
    huge = "99999999999999999999"
    for path in (
        f"/api/runs?limit={huge}",
        "/api/runs?limit=-1",  # SQLite reads a negative LIMIT as "no limit"
        "/api/runs?limit=0",
        "/api/runs?limit=1e3",
        f"/api/runs?limit={'9' * 5000}",
        f"/api/runs/r1?iteration={huge}",
        "/api/runs/r1?iteration=-3",
        f"/api/artifacts?iteration={huge}",
        f"/api/artifacts?limit={huge}",
        "/api/artifacts?limit=%00",
        f"/api/artifacts/p/r1/{huge}/a",
        "/api/artifacts/p/r1/-1/a",
        "/api/artifacts/p/r1/x/a",
    ):
        status, body = await asyncio.to_thread(_call, url + path)
        assert status == 400, (path, body)
        assert body["error"] == "BadRequestError" and "must be an integer" in body["detail"]
    # Big but valid limits are clamped, not refused.
    status, body = await asyncio.to_thread(_call, f"{url}/api/runs?limit=9223372036854775807")
    assert status == 200 and [r["uid"] for r in body["runs"]] == ["r1"]
    status, body = await asyncio.to_thread(_call, f"{url}/api/artifacts/p/r1/0/blob")
    assert status == 200 and body["artifact"]["key"] == "blob"


def _plant(db: SqlRunDB, target: str, uid: str = "planted", key: str = "loot") -> str:
    """A record written straight into the DB, past the API (a job with DB access could)."""
    db.apply(RunBatch.model_validate(_batch(target, uid=uid, key=key)))
    return f"store://p/{uid}/{key}"


def test_download_refuses_a_record_pointing_outside(
    settings: TrackingSettings,
    db: SqlRunDB,
    root: Path,
    secret: Path,
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
) -> None:
    out = tmp_path / "out"
    out.mkdir()
    folder = root / "p" / "x" / "0"
    folder.mkdir(parents=True)
    (folder / "link.txt").symlink_to(secret)
    for i, target in enumerate(
        (str(secret), f"{root}/../token", str(folder / "link.txt"), "/etc/passwd")
    ):
        uri = _plant(db, target, uid=f"planted{i}")
        assert cli("artifact", "download", uri, "-o", str(out)) != 0
        err = capsys.readouterr().err
        assert "outside the configured artifact stores" in err, err
        assert SECRET not in err
    assert list(out.iterdir()) == []  # nothing copied out

    # The same path through a real artifact is downloaded.
    good = folder / "good.txt"
    good.write_text("fine")
    uri = _plant(db, str(good), uid="fine")
    assert cli("artifact", "download", uri, "-o", str(out)) == 0
    assert (out / "good.txt").read_text() == "fine"


def test_dataitem_and_load_model_refuse_a_planted_target(
    settings: TrackingSettings, db: SqlRunDB, root: Path, secret: Path
) -> None:
    uri = _plant(db, str(secret))
    with pytest.raises(ArtifactTargetError, match="outside the configured artifact stores"):
        DataItem(uri, db=db).get()
    with pytest.raises(ArtifactTargetError):
        load_model(uri, db=db)
    # An extra store named by TICKRUN_ARTIFACT_STORES (or passed as roots) is allowed.
    item = DataItem(uri, db=db, roots=settings.artifact_roots(secret.parent))
    assert item.get(encoding="utf-8") == SECRET


def test_artifact_stores_setting(tmp_path: Path) -> None:
    s = TrackingSettings.from_env(
        {
            "TICKRUN_HOME": str(tmp_path),
            "TICKRUN_ARTIFACT_STORES": f"s3://b/p, {tmp_path / 'more'},,",
        }
    )
    assert s.artifact_stores == ("s3://b/p", str(tmp_path / "more"))
    roots = s.artifact_roots()
    assert roots == ArtifactRoots(
        local=((tmp_path / "artifacts").resolve(), (tmp_path / "more").resolve()),
        s3=(("b", "p"),),
    )
