"""The reconciler learns why a starting replica is not ready from its /readyz body: here a real
processor worker over loopback HTTP, in the state a drain puts it in."""

from __future__ import annotations

from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from tickrun.controller.builder import Builder
from tickrun.controller.platforms.base import Platform
from tickrun.controller.platforms.process import ProcessPlatform
from tickrun.controller.reconciler import Reconciler
from tickrun.controller.service import FunctionService
from tickrun.controller.settings import Settings
from tickrun.controller.store import ReplicaRow, Store
from tickrun.functions.processor.exitcodes import not_ready_reason
from tickrun.functions.processor.worker import Worker, WorkerConfig

FORMS = Path(__file__).resolve().parents[2] / "fixtures" / "functions" / "forms"


@pytest.fixture
async def reconciler(tmp_path: Path) -> AsyncIterator[Reconciler]:
    settings = Settings(state_dir=tmp_path / "state", cache_dir=tmp_path / "cache")
    store = Store(settings.database_url)
    store.open()
    platforms: dict[str, Platform] = {"process": ProcessPlatform("cid", settings=settings)}
    service = FunctionService(settings, store, Builder(settings), platforms)
    rec = Reconciler(settings, store, service, platforms, "cid")
    await rec.start()
    assert rec._task is not None
    rec._task.cancel()  # only the probe is under test
    try:
        yield rec
    finally:
        await rec.stop()
        store.close()


async def test_probe_keeps_the_replicas_own_reason(reconciler: Reconciler) -> None:
    spec = {"metadata": {"name": "forms"}, "spec": {"handler": "forms:text"}}
    worker = Worker(WorkerConfig(function_dir=str(FORMS), spec=spec, port=0))
    await worker.start()
    row = ReplicaRow(id="r1", function="forms", port=worker.port, state="starting")
    try:
        assert await reconciler._probe(row) is None  # ready
        worker._draining = True  # noqa: SLF001 - what stop() sets first, while still serving
        assert await reconciler._probe(row) == "draining"
        assert reconciler.unready["r1"] == "draining"
    finally:
        worker._draining = False  # noqa: SLF001
        await worker.stop()
    assert await reconciler._probe(row) == ""  # nothing answers: no reason to show


def test_not_ready_reason_takes_only_known_reasons() -> None:
    body = b'{"ready": false, "reason": "triggers-not-ready", "detail": "waiting for: ticks"}'
    assert not_ready_reason(body) == "triggers-not-ready: waiting for: ticks"
    assert not_ready_reason(b'{"reason": "draining"}') == "draining"
    assert not_ready_reason(b'{"reason": "rm -rf"}') == ""
    assert not_ready_reason(b"<html>busy</html>") == ""
    assert not_ready_reason(b'["draining"]') == ""
    long = b'{"reason": "starting", "detail": "' + b"x" * 1000 + b'"}'
    assert len(not_ready_reason(long)) < 400
